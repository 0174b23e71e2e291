//! A job's results directory, `<results>/<job id>/`:
//!
//! | file | what |
//! |---|---|
//! | `summary.md` | what a person reads first: the ending, timings, the benchmark table, what went wrong |
//! | `summary.json` | the same, for scripts |
//! | `events.jsonl` | the job's timeline, one event per line, appended as it happens |
//! | `recipe.toml`, `topology.json`, `plan.json`, `plan.svg` | what ran where |
//! | `instances.json` | every instance as started: rank, node, address, port, arguments |
//! | `logs/<node>/<instance>.log` | every engine's output |
//! | `bench/` | the benchmark's results: JSON per point, `sweep.csv`, per-request logs, plots |
//!
//! Files are written whole and renamed into place, so a job cut at any moment leaves
//! readable files; `summary.*` say `partial` when the benchmark was cut.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use serde::Serialize;
use serde_json::{Map, Value};

/// The results directory of a running job.
#[derive(Debug)]
pub(crate) struct Results {
    pub(crate) dir: PathBuf,
    events: std::fs::File,
    started: std::time::Instant,
}

/// Disk space below which preflight refuses to start: engine logs and per-request
/// benchmark logs of a long job fill less, and a full disk mid-job loses results.
const MIN_FREE_BYTES: u64 = 256 << 20;

impl Results {
    /// Creates the directory and checks it is writable and has room (preflight).
    pub(crate) fn create(dir: PathBuf) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create the results directory `{}`", dir.display()))?;
        let events = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("events.jsonl"))
            .with_context(|| {
                format!("the results directory `{}` is not writable", dir.display())
            })?;
        // The field types vary by platform (`fsblkcnt_t`, `c_ulong`).
        #[allow(clippy::unnecessary_cast)]
        let free = nix::sys::statvfs::statvfs(&dir)
            .map(|s| s.blocks_available() as u64 * s.fragment_size() as u64)
            .with_context(|| format!("cannot read the free space of `{}`", dir.display()))?;
        if free < MIN_FREE_BYTES {
            anyhow::bail!(
                "the results directory `{}` has {} MiB free; cohort needs at least {} MiB for \
                 logs and results",
                dir.display(),
                free >> 20,
                MIN_FREE_BYTES >> 20
            );
        }
        Ok(Self {
            dir,
            events,
            started: std::time::Instant::now(),
        })
    }

    /// Appends an event to `events.jsonl` (`t` = seconds since the start).
    pub(crate) fn event(&mut self, kind: &str, fields: Value) {
        let mut m = Map::new();
        m.insert(
            "t".into(),
            round3(self.started.elapsed().as_secs_f64()).into(),
        );
        m.insert("at".into(), utc(SystemTime::now()).into());
        m.insert("event".into(), kind.into());
        if let Value::Object(f) = fields {
            m.extend(f);
        }
        let _ = writeln!(self.events, "{}", Value::Object(m));
    }

    /// Writes `name` whole (temporary file, then rename).
    pub(crate) fn write(&self, name: &str, bytes: &[u8]) -> anyhow::Result<()> {
        write_atomic(&self.dir.join(name), bytes)
    }
}

/// Writes `path` through a temporary file in the same directory and a rename.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).with_context(|| format!("cannot write `{}`", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write `{}`", path.display()))
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// `2026-11-28T07:15:02Z`.
pub(crate) fn utc(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (y, m, d) = civil(secs / 86_400);
    let s = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        s / 3600,
        s % 3600 / 60,
        s % 60
    )
}

/// The id of a job without Slurm: `local-20261128-071502`.
pub(crate) fn local_job_id(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (y, m, d) = civil(secs / 86_400);
    let s = secs % 86_400;
    format!(
        "local-{y:04}{m:02}{d:02}-{:02}{:02}{:02}",
        s / 3600,
        s % 3600 / 60,
        s % 60
    )
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian (H. Hinnant's
/// `civil_from_days`).
fn civil(days: u64) -> (i64, u32, u32) {
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Something that went wrong during the job, for the summary.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Incident {
    /// Seconds since the start.
    pub(crate) t: f64,
    pub(crate) what: String,
    /// An engine's last log lines, when there are some.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub(crate) log_tail: String,
}

/// What `summary.md` and `summary.json` say.
#[derive(Debug, Serialize)]
pub(crate) struct Summary {
    pub(crate) recipe: String,
    pub(crate) job: String,
    pub(crate) ending: String,
    pub(crate) exit_status: u8,
    pub(crate) partial: bool,
    pub(crate) started: String,
    pub(crate) duration_s: f64,
    pub(crate) ranks: u32,
    pub(crate) bootstrap: String,
    pub(crate) engine: String,
    pub(crate) instances: usize,
    pub(crate) gpus: usize,
    /// From the first rank joining to every instance ready.
    pub(crate) ready_s: Option<f64>,
    pub(crate) frontend: Option<String>,
    pub(crate) incidents: Vec<Incident>,
    pub(crate) migrations: Vec<cohort_router::metrics::MigrationRecord>,
    /// The benchmark's points (finished, then a partial one).
    pub(crate) points: Vec<Map<String, Value>>,
    #[serde(skip)]
    pub(crate) message: Option<String>,
}

impl Summary {
    /// Writes `summary.md` and `summary.json`.
    pub(crate) fn write(&self, results: &Results) -> anyhow::Result<()> {
        let json = serde_json::to_vec_pretty(self).context("summary")?;
        results.write("summary.json", &json)?;
        results.write("summary.md", self.markdown().as_bytes())
    }

    fn markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "# {} — job {}: {}\n", self.recipe, self.job, self.ending);
        if let Some(m) = &self.message {
            let _ = writeln!(s, "**{m}**\n");
        }
        if self.partial {
            let _ = writeln!(
                s,
                "**PARTIAL**: the benchmark was stopped before its end; the point in progress \
                 holds what had finished by then.\n"
            );
        }
        let _ = writeln!(s, "| | |\n|---|---|");
        let row = |s: &mut String, k: &str, v: String| {
            let _ = writeln!(s, "| {k} | {v} |");
        };
        row(&mut s, "exit status", self.exit_status.to_string());
        row(&mut s, "started", self.started.clone());
        row(&mut s, "duration", format!("{:.1} s", self.duration_s));
        row(
            &mut s,
            "ranks",
            format!("{} ({} bootstrap)", self.ranks, self.bootstrap),
        );
        row(&mut s, "engine", self.engine.clone());
        row(
            &mut s,
            "instances",
            format!("{} on {} GPUs", self.instances, self.gpus),
        );
        row(
            &mut s,
            "ready after",
            self.ready_s
                .map_or_else(|| "never".to_owned(), |r| format!("{r:.2} s")),
        );
        if let Some(f) = &self.frontend {
            row(&mut s, "frontend", f.clone());
        }
        if !self.points.is_empty() {
            let _ = writeln!(s, "\n## Benchmark\n");
            let _ = writeln!(
                s,
                "```\n{}```",
                cohort_bench::report::summary_table(&self.points)
            );
            let _ = writeln!(
                s,
                "\nPer point: `bench/<point>.json` (vLLM's keys), every request in \
                 `bench/<point>.requests.jsonl`, the sweep in `bench/sweep.csv`, plots \
                 `bench/pareto.svg` and `bench/latency.svg`."
            );
        }
        let _ = writeln!(s, "\n## What happened\n");
        if self.incidents.is_empty() && self.migrations.is_empty() {
            let _ = writeln!(s, "Nothing went wrong.");
        }
        for i in &self.incidents {
            let _ = writeln!(s, "- at {:.2} s: {}", i.t, i.what);
            if !i.log_tail.is_empty() {
                let _ = writeln!(s, "\n  ```\n{}\n  ```", indent(&i.log_tail));
            }
        }
        if !self.migrations.is_empty() {
            let _ = writeln!(
                s,
                "\n{} stream(s) moved to another worker when theirs broke:\n",
                self.migrations.len()
            );
            let _ = writeln!(
                s,
                "| request | from | after tokens | outcome |\n|---|---|---|---|"
            );
            for m in &self.migrations {
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} |",
                    m.request, m.from, m.tokens, m.outcome
                );
            }
        }
        let _ = writeln!(
            s,
            "\n## Files\n\n`plan.json`, `plan.svg` (where each instance ran), `instances.json` \
             (addresses and ports as started), `topology.json`, \
             `recipe.toml`, `events.jsonl` (the timeline), `logs/<node>/<instance>.log`, \
             `bench/`."
        );
        s
    }
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("  {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The benchmark's points as written in `dir`: the finished ones (`results.json`), then
/// any point file marked partial.
pub(crate) fn read_points(dir: &Path) -> Vec<Map<String, Value>> {
    let read = |p: &Path| -> Option<Value> { serde_json::from_slice(&std::fs::read(p).ok()?).ok() };
    let mut points: Vec<Map<String, Value>> = read(&dir.join("results.json"))
        .and_then(|v| v.get("points").and_then(Value::as_array).cloned())
        .unwrap_or_default()
        .into_iter()
        .filter_map(|p| p.as_object().cloned())
        .collect();
    let mut partial: Vec<Map<String, Value>> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.extension().is_some_and(|e| e == "json")
                && p.file_name().is_some_and(|n| n != "results.json")
        })
        .filter_map(|p| read(&p)?.as_object().cloned())
        .filter(|m| m.get("partial").and_then(Value::as_bool) == Some(true))
        .collect();
    partial.sort_by(|a, b| {
        a.get("label")
            .map(Value::to_string)
            .cmp(&b.get("label").map(Value::to_string))
    });
    points.extend(partial);
    points
}

/// Seconds, for summaries.
pub(crate) fn secs(d: Duration) -> f64 {
    round3(d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_gregorian() {
        assert_eq!(civil(0), (1970, 1, 1));
        assert_eq!(civil(11_016), (2000, 2, 29));
        // 2026-11-28
        assert_eq!(civil(20_785), (2026, 11, 28));
        let t = UNIX_EPOCH + Duration::from_secs(20_785 * 86_400 + 7 * 3600 + 15 * 60 + 2);
        assert_eq!(utc(t), "2026-11-28T07:15:02Z");
        assert_eq!(local_job_id(t), "local-20261128-071502");
    }
}
