//! Progress on stderr: an indicatif bar per sweep point on a terminal, a plain line every
//! few seconds otherwise (batch logs), or nothing.

use crate::settings::ProgressMode;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::Write;
use std::time::{Duration, Instant};

/// The state of a point, as progress shows it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Snapshot {
    /// Requests issued (warm-up included).
    pub issued: u64,
    /// Measured requests finished (completed or failed).
    pub done: u64,
    /// Measured requests failed.
    pub errors: u64,
    /// Since the point started.
    pub elapsed: Duration,
    /// Live median time to first token.
    pub p50_ttft_ms: Option<f64>,
    /// Live p99 schedule lag (open loop).
    pub p99_lag_ms: Option<f64>,
}

impl Snapshot {
    fn rate(&self) -> f64 {
        let s = self.elapsed.as_secs_f64();
        if s > 0.0 {
            self.done as f64 / s
        } else {
            0.0
        }
    }

    fn detail(&self) -> String {
        let mut s = format!("{:.1} req/s, {} errors", self.rate(), self.errors);
        if let Some(t) = self.p50_ttft_ms {
            s.push_str(&format!(", p50 TTFT {t:.1} ms"));
        }
        if let Some(l) = self.p99_lag_ms {
            s.push_str(&format!(", p99 lag {l:.2} ms"));
        }
        s
    }
}

/// The progress display of a run.
#[derive(Debug)]
pub struct Progress {
    mode: ProgressMode,
    bar: Option<ProgressBar>,
    label: String,
    total: Option<u64>,
    last_line: Option<Instant>,
}

impl Progress {
    /// A display in `mode`.
    pub fn new(mode: ProgressMode) -> Progress {
        Progress {
            mode,
            bar: None,
            label: String::new(),
            total: None,
            last_line: None,
        }
    }

    /// How often the runner should call [`Progress::update`].
    pub fn tick(&self) -> Duration {
        match self.mode {
            ProgressMode::Bars { .. } => Duration::from_millis(100),
            ProgressMode::Lines { .. } | ProgressMode::Off => Duration::from_millis(250),
        }
    }

    /// A point starts; `total` measured requests when known.
    pub fn start_point(&mut self, label: &str, total: Option<u64>) {
        self.label = label.to_owned();
        self.total = total;
        self.last_line = Some(Instant::now());
        if let ProgressMode::Bars { color } = self.mode {
            let bar = match total {
                Some(t) => ProgressBar::with_draw_target(Some(t), ProgressDrawTarget::stderr()),
                None => ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()),
            };
            let tpl = match (total.is_some(), color) {
                (true, true) => "{prefix:>12.bold.cyan} [{bar:30.cyan/blue}] {pos}/{len} {elapsed_precise} {msg}",
                (true, false) => "{prefix:>12} [{bar:30}] {pos}/{len} {elapsed_precise} {msg}",
                (false, true) => "{prefix:>12.bold.cyan} {spinner} {pos} {elapsed_precise} {msg}",
                (false, false) => "{prefix:>12} {spinner} {pos} {elapsed_precise} {msg}",
            };
            if let Ok(style) = ProgressStyle::with_template(tpl) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_prefix(label.to_owned());
            self.bar = Some(bar);
        }
    }

    /// A warning that does not stop the run: above the bar, or a line of its own.
    pub fn warn(&self, message: &str) {
        match (&self.bar, self.mode) {
            (Some(b), _) => b.println(format!("cohort bench: warning: {message}")),
            (None, ProgressMode::Off) => {}
            (None, _) => {
                let _ = writeln!(std::io::stderr().lock(), "cohort bench: warning: {message}");
            }
        }
    }

    /// The point's state now.
    pub fn update(&mut self, s: &Snapshot) {
        match self.mode {
            ProgressMode::Bars { .. } => {
                if let Some(b) = &self.bar {
                    b.set_position(s.done);
                    b.set_message(s.detail());
                }
            }
            ProgressMode::Lines { every } => {
                if self.last_line.is_none_or(|t| t.elapsed() >= every) {
                    self.last_line = Some(Instant::now());
                    self.line(s, "");
                }
            }
            ProgressMode::Off => {}
        }
    }

    /// The point ended.
    pub fn finish_point(&mut self, s: &Snapshot) {
        match self.mode {
            ProgressMode::Bars { .. } => {
                if let Some(b) = self.bar.take() {
                    b.set_position(s.done);
                    b.finish_with_message(s.detail());
                }
            }
            ProgressMode::Lines { .. } => self.line(s, " (done)"),
            ProgressMode::Off => {}
        }
    }

    fn line(&self, s: &Snapshot, suffix: &str) {
        let of = self.total.map(|t| format!("/{t}")).unwrap_or_default();
        let _ = writeln!(
            std::io::stderr().lock(),
            "cohort bench [{}] {}{of} requests in {:.1} s, {}{suffix}",
            self.label,
            s.done,
            s.elapsed.as_secs_f64(),
            s.detail()
        );
    }
}
