//! What one request measured.

use serde::Serialize;

/// Why a request failed: a fixed set, used as the key of `errors_by_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorType {
    /// The connection could not be made or was refused.
    Connect,
    /// The request took longer than `--timeout`.
    Timeout,
    /// The server answered 4xx.
    HttpClientError,
    /// The server answered 5xx (or another non-2xx status).
    HttpServerError,
    /// The server sent an `{"error": ...}` event inside the stream.
    StreamError,
    /// The stream ended (or broke) before `data: [DONE]`.
    StreamCut,
    /// An event could not be parsed as a chunk.
    BadChunk,
    /// The stream finished without a single token.
    NoTokens,
}

impl ErrorType {
    /// Every type, in the order reports list them.
    pub const ALL: [ErrorType; 8] = [
        ErrorType::Connect,
        ErrorType::Timeout,
        ErrorType::HttpClientError,
        ErrorType::HttpServerError,
        ErrorType::StreamError,
        ErrorType::StreamCut,
        ErrorType::BadChunk,
        ErrorType::NoTokens,
    ];

    /// The label, as in the JSON reports.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorType::Connect => "connect",
            ErrorType::Timeout => "timeout",
            ErrorType::HttpClientError => "http_client_error",
            ErrorType::HttpServerError => "http_server_error",
            ErrorType::StreamError => "stream_error",
            ErrorType::StreamCut => "stream_cut",
            ErrorType::BadChunk => "bad_chunk",
            ErrorType::NoTokens => "no_tokens",
        }
    }
}

/// A failed request's error.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RequestError {
    /// The type.
    #[serde(rename = "type")]
    pub kind: ErrorType,
    /// The HTTP status, when the server answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// The server's error `type` (`BadRequestError`, ...) or the client's cause.
    pub message: String,
}

/// One request, as measured. Times are microseconds; `due_us` and `sent_us` count from
/// the start of the sweep point.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RequestRecord {
    /// Issue order within the point, warm-up included.
    pub index: u64,
    /// A warm-up request (left out of the results).
    pub warmup: bool,
    /// When the schedule wanted it sent (open loop and replay only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub due_us: Option<u64>,
    /// When it was sent.
    pub sent_us: u64,
    /// Time to the first token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttft_us: Option<u64>,
    /// Time to the end of the stream (or to the failure).
    pub e2el_us: u64,
    /// Every gap between two successive token chunks.
    pub itl_us: Vec<u64>,
    /// Prompt tokens (from usage, else the prompt as sent).
    pub input_tokens: u32,
    /// Output tokens (from usage, else the counted chunks).
    pub output_tokens: u32,
    /// Prompt tokens the server served from its prefix cache (usage's
    /// `prompt_tokens_details.cached_tokens`; 0 when not reported).
    pub cached_tokens: u32,
    /// Whether the token counts came from the server's usage.
    pub usage_reported: bool,
    /// Set when the request failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<RequestError>,
    /// Cut short by a stop of the run (neither completed nor failed).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub cancelled: bool,
}

impl RequestRecord {
    /// Lag of the send behind the schedule, if there was a schedule.
    pub fn lag_us(&self) -> Option<u64> {
        self.due_us.map(|d| self.sent_us.saturating_sub(d))
    }

    /// Time per output token after the first; `None` with fewer than two tokens.
    pub fn tpot_us(&self) -> Option<f64> {
        let ttft = self.ttft_us?;
        (self.output_tokens > 1)
            .then(|| self.e2el_us.saturating_sub(ttft) as f64 / f64::from(self.output_tokens - 1))
    }
}
