//! The library's errors. Request failures are not errors of the run: they are counted per
//! type in the results ([`crate::record::ErrorType`]).

use std::path::PathBuf;

/// Why a benchmark run could not start or finish.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A command-line value is malformed.
    #[error("`{name}` given `{value}`: {reason}")]
    InvalidArgument {
        /// The option.
        name: &'static str,
        /// What was given.
        value: String,
        /// What would be right.
        reason: String,
    },
    /// Options that do not go together, or one that is missing.
    #[error("{0}")]
    Usage(String),
    /// A dataset or trace file could not be read.
    #[error("cannot read `{}`", path.display())]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A line of a dataset or trace file is malformed.
    #[error("`{}`:{line}: {reason}", path.display())]
    Dataset {
        /// The file.
        path: PathBuf,
        /// 1-based line (0 for a whole-file JSON document).
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// A results file could not be written.
    #[error("cannot write `{}`", path.display())]
    WriteFile {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The server could not tell which model to use.
    #[error("cannot list the models at `{url}` (give `--model`): {reason}")]
    Models {
        /// The `/v1/models` URL.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// `--model-dir`'s `tokenizer.json` could not be loaded.
    #[error("cannot load the tokenizer `{}`", path.display())]
    Tokenizer {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The async runtime could not be built.
    #[error("cannot start the async runtime")]
    Runtime(#[source] std::io::Error),
    /// The run was stopped by a signal or by its caller; finished points are written.
    #[error("interrupted: {finished} sweep point(s) finished and written to `{}`, the point in progress is marked partial", output.display())]
    Interrupted {
        /// Points written in full.
        finished: usize,
        /// The results directory.
        output: PathBuf,
    },
}
