//! Results on disk and on the console.
//!
//! In the output directory, each written atomically (a temporary file renamed into place)
//! so that a run cut at any moment leaves only complete files:
//! - `<point>.json`: one sweep point, with the keys of `vllm bench serve` results plus
//!   ours; rewritten every few seconds while the point runs with `"partial": true`;
//! - `<point>.requests.jsonl`: every request (appended as they finish);
//! - `sweep.csv`, `results.json`: all finished points, rewritten after each;
//! - `pareto.svg`, `latency.svg`: the plots, redrawn after each point.

mod plot;
mod table;

pub use table::{point_table, summary_table};

use crate::error::BenchError;
use crate::metrics::{Accumulator, Series, PERCENTILES};
use crate::record::{ErrorType, RequestRecord};
use crate::runner::{PointKind, PointRun, PointSink, PointSpec};
use crate::settings::{Arrival, Endpoint, Settings};
use serde_json::{json, Map, Value};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Writes `bytes` to `path` atomically: a temporary file in the same directory, synced,
/// then renamed over `path`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), BenchError> {
    let err = |source| BenchError::WriteFile {
        path: path.to_owned(),
        source,
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    let mut f = std::fs::File::create(&tmp).map_err(err)?;
    f.write_all(bytes).map_err(err)?;
    f.sync_all().map_err(err)?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(err)
}

/// Static facts about the run that every point's JSON repeats.
#[derive(Debug, Clone)]
pub(crate) struct RunInfo {
    pub(crate) model: String,
    pub(crate) endpoint: Endpoint,
    pub(crate) url: String,
    pub(crate) dataset: String,
    pub(crate) gpus: Option<u32>,
    pub(crate) warmup: u64,
    pub(crate) seed: u64,
    pub(crate) slo: Value,
}

impl RunInfo {
    pub(crate) fn new(s: &Settings, model: &str) -> RunInfo {
        let ms = |d: Option<std::time::Duration>| d.map(|d| d.as_secs_f64() * 1e3);
        RunInfo {
            model: model.to_owned(),
            endpoint: s.endpoint,
            url: s.target.uri(""),
            dataset: dataset_name(&s.dataset).to_owned(),
            gpus: s.gpus,
            warmup: s.warmup,
            seed: s.seed,
            slo: json!({"ttft_ms": ms(s.slo.ttft), "tpot_ms": ms(s.slo.tpot), "e2el_ms": ms(s.slo.e2el)}),
        }
    }
}

fn dataset_name(d: &crate::settings::DatasetSpec) -> &'static str {
    use crate::settings::DatasetSpec as D;
    match d {
        D::Random { .. } => "random",
        D::Prefix { .. } => "prefix",
        D::Mooncake { .. } => "mooncake",
        D::ShareGpt { .. } => "sharegpt",
        D::Jsonl { .. } => "jsonl",
    }
}

fn put_series(m: &mut Map<String, Value>, name: &str, s: &Series) {
    m.insert(format!("mean_{name}_ms"), json!(s.mean_ms()));
    m.insert(format!("median_{name}_ms"), json!(s.pct_ms(50.0)));
    m.insert(format!("std_{name}_ms"), json!(s.std_ms()));
    for p in PERCENTILES {
        m.insert(format!("p{}_{name}_ms", pct_word(p)), json!(s.pct_ms(p)));
    }
}

/// `99` for 99.0, `99.9` for 99.9: how `vllm bench serve` names percentile keys.
pub(crate) fn pct_word(p: f64) -> String {
    if p.fract() == 0.0 {
        format!("{}", p as u64)
    } else {
        format!("{p}")
    }
}

/// The JSON of one point: `vllm bench serve`'s keys, then ours.
pub(crate) fn point_json(
    info: &RunInfo,
    spec: &PointSpec,
    acc: &Accumulator,
    cpu_s: Option<f64>,
    partial: bool,
) -> Map<String, Value> {
    let mut m = Map::new();
    let (rate, burstiness, max_conc) = match &spec.kind {
        PointKind::Concurrency(c) => (json!("inf"), json!(1.0), json!(c)),
        PointKind::Rate {
            rate,
            arrival,
            max_concurrency,
        } => {
            let b = match arrival {
                Arrival::Gamma(k) => *k,
                _ => 1.0,
            };
            (json!(rate), json!(b), json!(max_concurrency))
        }
        PointKind::Replay {
            max_concurrency, ..
        } => (json!("trace"), json!(null), json!(max_concurrency)),
    };
    m.insert("date".into(), json!(utc_stamp()));
    m.insert(
        "backend".into(),
        json!(match info.endpoint {
            Endpoint::Completions => "openai",
            Endpoint::Chat => "openai-chat",
        }),
    );
    m.insert("model_id".into(), json!(info.model));
    m.insert("tokenizer_id".into(), Value::Null);
    m.insert("num_prompts".into(), json!(acc.completed + acc.failed));
    m.insert("request_rate".into(), rate);
    m.insert("burstiness".into(), burstiness);
    m.insert("max_concurrency".into(), max_conc);
    m.insert("duration".into(), json!(acc.duration_s()));
    m.insert("completed".into(), json!(acc.completed));
    m.insert("failed".into(), json!(acc.failed));
    m.insert("total_input_tokens".into(), json!(acc.input_tokens));
    m.insert("total_output_tokens".into(), json!(acc.output_tokens));
    m.insert("request_throughput".into(), json!(acc.request_throughput()));
    m.insert(
        "request_goodput".into(),
        if info
            .slo
            .as_object()
            .is_some_and(|o| o.values().any(|v| !v.is_null()))
        {
            json!(acc.request_goodput())
        } else {
            Value::Null
        },
    );
    m.insert("output_throughput".into(), json!(acc.output_throughput()));
    m.insert(
        "total_token_throughput".into(),
        json!(acc.total_token_throughput()),
    );
    put_series(&mut m, "ttft", &acc.ttft);
    put_series(&mut m, "tpot", &acc.tpot);
    put_series(&mut m, "itl", &acc.itl);
    put_series(&mut m, "e2el", &acc.e2el);
    // Ours.
    m.insert("label".into(), json!(spec.label));
    m.insert("partial".into(), json!(partial));
    match &spec.kind {
        PointKind::Concurrency(c) => {
            m.insert("load".into(), json!("closed"));
            m.insert("concurrency".into(), json!(c));
        }
        PointKind::Rate { arrival, .. } => {
            m.insert("load".into(), json!("open"));
            let a = match arrival {
                Arrival::Constant => "constant",
                Arrival::Poisson => "poisson",
                Arrival::Gamma(_) => "gamma",
            };
            m.insert("arrival".into(), json!(a));
        }
        PointKind::Replay { speed, .. } => {
            m.insert("load".into(), json!("replay"));
            m.insert("speed".into(), json!(speed));
        }
    }
    m.insert("url".into(), json!(info.url));
    m.insert("dataset".into(), json!(info.dataset));
    m.insert("seed".into(), json!(info.seed));
    m.insert("warmup_requests".into(), json!(info.warmup));
    m.insert("cancelled".into(), json!(acc.cancelled));
    let errors: Map<String, Value> = ErrorType::ALL
        .iter()
        .filter_map(|t| acc.errors.get(t).map(|n| (t.as_str().to_owned(), json!(n))))
        .collect();
    m.insert("errors_by_type".into(), Value::Object(errors));
    m.insert("total_cached_tokens".into(), json!(acc.cached_tokens));
    m.insert(
        "usage_reported".into(),
        json!(acc.completed > 0 && acc.usage_reported == acc.completed),
    );
    m.insert("slo".into(), info.slo.clone());
    m.insert("good_requests".into(), json!(acc.good));
    m.insert(
        "achieved_concurrency".into(),
        json!(acc.achieved_concurrency()),
    );
    m.insert(
        "output_throughput_per_user".into(),
        json!(acc.output_throughput_per_user()),
    );
    m.insert("gpus".into(), json!(info.gpus));
    m.insert(
        "output_throughput_per_gpu".into(),
        json!(info
            .gpus
            .map(|g| acc.output_throughput() / f64::from(g.max(1)))),
    );
    if acc.lag.count() > 0 {
        put_series(&mut m, "lag", &acc.lag);
        m.insert("max_lag_ms".into(), json!(acc.lag.max_ms()));
    }
    m.insert("harness_cpu_seconds".into(), json!(cpu_s));
    let reqs = acc.completed + acc.failed + acc.cancelled + acc.warmup;
    m.insert(
        "harness_cpu_per_request_us".into(),
        json!(cpu_s.filter(|_| reqs > 0).map(|c| c * 1e6 / reqs as f64)),
    );
    m
}

/// `YYYYMMDD-HHMMSS` in UTC, as `vllm bench serve` stamps its results.
fn utc_stamp() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil-from-days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(mo <= 2);
    format!(
        "{y:04}{mo:02}{d:02}-{:02}{:02}{:02}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Writes everything of a run into its output directory.
#[derive(Debug)]
pub(crate) struct Reporter {
    dir: PathBuf,
    info: RunInfo,
    request_log: bool,
    finished: Vec<Map<String, Value>>,
    pub(crate) print_tables: bool,
}

impl Reporter {
    pub(crate) fn new(
        dir: &Path,
        info: RunInfo,
        request_log: bool,
        print_tables: bool,
    ) -> Result<Reporter, BenchError> {
        std::fs::create_dir_all(dir).map_err(|source| BenchError::WriteFile {
            path: dir.to_owned(),
            source,
        })?;
        Ok(Reporter {
            dir: dir.to_owned(),
            info,
            request_log,
            finished: Vec::new(),
            print_tables,
        })
    }

    /// The points written in full so far.
    pub(crate) fn finished(&self) -> &[Map<String, Value>] {
        &self.finished
    }

    /// A sink for one running point.
    pub(crate) fn point_sink<'a>(&'a self, spec: &'a PointSpec) -> Result<Sink<'a>, BenchError> {
        let log = if self.request_log {
            let path = self.dir.join(format!("{}.requests.jsonl", spec.label));
            let f = std::fs::File::create(&path).map_err(|source| BenchError::WriteFile {
                path: path.clone(),
                source,
            })?;
            Some((path, std::io::BufWriter::with_capacity(1 << 16, f)))
        } else {
            None
        };
        Ok(Sink {
            reporter: self,
            spec,
            log,
        })
    }

    /// Writes a point that ended (in full, or partial when the run was stopped), then the
    /// sweep files and plots.
    pub(crate) fn finish_point(
        &mut self,
        spec: &PointSpec,
        run: &PointRun,
    ) -> Result<Map<String, Value>, BenchError> {
        let m = point_json(&self.info, spec, &run.acc, run.cpu_s, run.partial);
        let path = self.dir.join(format!("{}.json", spec.label));
        write_atomic(&path, &pretty(&Value::Object(m.clone())))?;
        if run.partial {
            return Ok(m);
        }
        self.finished.push(m.clone());
        self.write_sweep()?;
        Ok(m)
    }

    fn write_sweep(&self) -> Result<(), BenchError> {
        write_atomic(
            &self.dir.join("sweep.csv"),
            sweep_csv(&self.finished).as_bytes(),
        )?;
        let all = json!({ "points": self.finished });
        write_atomic(&self.dir.join("results.json"), &pretty(&all))?;
        let per_gpu = self.info.gpus.is_some();
        write_atomic(
            &self.dir.join("pareto.svg"),
            plot::pareto(&self.finished, per_gpu).as_bytes(),
        )?;
        write_atomic(
            &self.dir.join("latency.svg"),
            plot::latency(&self.finished).as_bytes(),
        )?;
        Ok(())
    }
}

fn pretty(v: &Value) -> Vec<u8> {
    let mut out = serde_json::to_vec_pretty(v).unwrap_or_default();
    out.push(b'\n');
    out
}

/// The columns of `sweep.csv`, all keys of the point JSON.
pub(crate) const CSV_COLUMNS: &[&str] = &[
    "label",
    "load",
    "concurrency",
    "request_rate",
    "partial",
    "completed",
    "failed",
    "duration",
    "request_throughput",
    "request_goodput",
    "output_throughput",
    "total_token_throughput",
    "output_throughput_per_user",
    "output_throughput_per_gpu",
    "achieved_concurrency",
    "mean_ttft_ms",
    "median_ttft_ms",
    "p90_ttft_ms",
    "p99_ttft_ms",
    "mean_tpot_ms",
    "median_tpot_ms",
    "p99_tpot_ms",
    "mean_itl_ms",
    "median_itl_ms",
    "p90_itl_ms",
    "p99_itl_ms",
    "mean_e2el_ms",
    "median_e2el_ms",
    "p99_e2el_ms",
    "p99_lag_ms",
    "max_lag_ms",
    "total_input_tokens",
    "total_output_tokens",
    "total_cached_tokens",
    "harness_cpu_per_request_us",
];

fn sweep_csv(points: &[Map<String, Value>]) -> String {
    let mut s = CSV_COLUMNS.join(",");
    s.push('\n');
    for p in points {
        let row: Vec<String> = CSV_COLUMNS
            .iter()
            .map(|c| match p.get(*c) {
                None | Some(Value::Null) => String::new(),
                Some(Value::String(t)) => csv_field(t),
                Some(v) => v.to_string(),
            })
            .collect();
        s.push_str(&row.join(","));
        s.push('\n');
    }
    s
}

fn csv_field(t: &str) -> String {
    if t.contains([',', '"', '\n']) {
        format!("\"{}\"", t.replace('"', "\"\""))
    } else {
        t.to_owned()
    }
}

/// The [`PointSink`] of one point: the request log and partial checkpoints.
#[derive(Debug)]
pub(crate) struct Sink<'a> {
    reporter: &'a Reporter,
    spec: &'a PointSpec,
    log: Option<(PathBuf, std::io::BufWriter<std::fs::File>)>,
}

impl Sink<'_> {
    /// Flushes the request log.
    pub(crate) fn close(mut self) -> Result<(), BenchError> {
        if let Some((path, w)) = &mut self.log {
            w.flush().map_err(|source| BenchError::WriteFile {
                path: path.clone(),
                source,
            })?;
        }
        Ok(())
    }
}

impl PointSink for Sink<'_> {
    fn record(&mut self, r: &RequestRecord) -> Result<(), BenchError> {
        if let Some((path, w)) = &mut self.log {
            let res = serde_json::to_writer(&mut *w, r)
                .map_err(std::io::Error::other)
                .and_then(|()| w.write_all(b"\n"));
            res.map_err(|source| BenchError::WriteFile {
                path: path.clone(),
                source,
            })?;
        }
        Ok(())
    }

    fn checkpoint(&mut self, acc: &Accumulator, cpu_s: Option<f64>) -> Result<(), BenchError> {
        if let Some((path, w)) = &mut self.log {
            w.flush().map_err(|source| BenchError::WriteFile {
                path: path.clone(),
                source,
            })?;
        }
        let m = point_json(&self.reporter.info, self.spec, acc, cpu_s, true);
        let path = self.reporter.dir.join(format!("{}.json", self.spec.label));
        write_atomic(&path, &pretty(&Value::Object(m)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_words_csv_and_stamp() {
        assert_eq!(pct_word(99.0), "99");
        assert_eq!(pct_word(99.9), "99.9");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        let s = utc_stamp();
        assert_eq!(s.len(), 15);
        assert!(s.starts_with("20"), "{s}");
    }

    #[test]
    fn atomic_write_replaces_whole_files() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(
            std::fs::read_dir(d.path()).unwrap().count(),
            1,
            "no temporary file left"
        );
    }
}
