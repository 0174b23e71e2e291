//! Log lines on stderr, `cohort serve: ` first, filtered by `--log-level`. API keys and
//! request bodies are never logged.

use crate::settings::LogLevel;
use std::fmt::Arguments;

/// The frontend's logger.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Log {
    pub level: LogLevel,
}

impl Log {
    pub(crate) fn enabled(&self, level: LogLevel) -> bool {
        level <= self.level
    }

    #[allow(clippy::print_stderr)]
    pub(crate) fn write(&self, level: LogLevel, args: Arguments<'_>) {
        if self.enabled(level) {
            eprintln!("cohort serve: {args}");
        }
    }
}
