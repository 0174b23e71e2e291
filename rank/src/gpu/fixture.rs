//! GPU readings from JSON: hand-written fixtures for tests, or what [`super::NvmlSource`]
//! read on a real node and was saved (`serde_json::to_string_pretty(&readings)`), so
//! that a capture can be committed and replayed where there is no GPU.

use std::path::Path;

use super::reading::{GpuSource, GpuSourceError, Readings, READINGS_VERSION};

/// Readings held in memory, parsed from a fixture.
#[derive(Debug, Clone)]
pub struct FixtureSource {
    readings: Readings,
}

impl FixtureSource {
    /// Parses a fixture; `file` names it in errors.
    pub fn from_json(file: &str, text: &str) -> Result<Self, GpuSourceError> {
        // The version first, so that a newer file says so instead of failing on a field
        // this build does not know.
        #[derive(serde::Deserialize)]
        struct Version {
            version: u32,
        }
        let json = |source| GpuSourceError::Json {
            file: file.to_owned(),
            source,
        };
        let v: Version = serde_json::from_str(text).map_err(json)?;
        if v.version != READINGS_VERSION {
            return Err(GpuSourceError::Version {
                file: file.to_owned(),
                found: v.version,
            });
        }
        let readings = serde_json::from_str(text).map_err(json)?;
        Ok(Self { readings })
    }

    /// Reads and parses a fixture file.
    pub fn from_file(path: &Path) -> Result<Self, GpuSourceError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| GpuSourceError::Io {
            file: file.clone(),
            source,
        })?;
        Self::from_json(&file, &text)
    }

    /// Readings given directly (tests that alter a fixture).
    pub fn new(readings: Readings) -> Self {
        Self { readings }
    }
}

impl GpuSource for FixtureSource {
    fn read(&self) -> Result<Readings, GpuSourceError> {
        Ok(self.readings.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_and_unknown_fields_are_refused_with_the_file_named() {
        let ok = r#"{"version": 1, "source": "t", "gpus": [{"index": 0, "uuid": "GPU-a"}]}"#;
        let r = FixtureSource::from_json("ok.json", ok)
            .unwrap()
            .read()
            .unwrap();
        assert_eq!(r.gpus[0].uuid, "GPU-a");
        assert_eq!(r.gpus[0].ecc_uncorrected_volatile, None);

        let newer = r#"{"version": 2, "source": "t", "gpus": [], "later": true}"#;
        let e = FixtureSource::from_json("new.json", newer).unwrap_err();
        assert!(
            e.to_string().contains("`new.json`") && e.to_string().contains("version 2"),
            "{e}"
        );

        let typo = r#"{"version": 1, "source": "t", "gpus": [{"index": 0, "ecc_volatile": 1}]}"#;
        let e = FixtureSource::from_json("typo.json", typo).unwrap_err();
        assert!(matches!(e, GpuSourceError::Json { .. }), "{e}");
        let missing = FixtureSource::from_file(Path::new("/nonexistent/x.json")).unwrap_err();
        assert!(
            missing.to_string().contains("/nonexistent/x.json"),
            "{missing}"
        );
    }
}
