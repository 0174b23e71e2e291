//! The error body: OpenAI's `{"error": {...}}` shape with vLLM's `type` strings.

use serde::{Deserialize, Serialize};
use std::borrow::Cow;

/// What went wrong, as a fixed set: the `type` string of the body and a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// 400: malformed JSON, a wrong type, a value out of range, a context too long.
    BadRequest,
    /// 404: an unknown model or route, or KV blocks that are not (or no longer) held.
    NotFound,
    /// 405: the route exists with another method.
    MethodNotAllowed,
    /// 500: a bug or an internal failure.
    Internal,
    /// 503: the engine is shutting down or overloaded.
    Unavailable,
}

impl ErrorKind {
    /// Every kind, for metric exposition.
    pub const ALL: [ErrorKind; 5] = [
        ErrorKind::BadRequest,
        ErrorKind::NotFound,
        ErrorKind::MethodNotAllowed,
        ErrorKind::Internal,
        ErrorKind::Unavailable,
    ];

    /// The HTTP status code.
    pub fn status(self) -> u16 {
        match self {
            ErrorKind::BadRequest => 400,
            ErrorKind::NotFound => 404,
            ErrorKind::MethodNotAllowed => 405,
            ErrorKind::Internal => 500,
            ErrorKind::Unavailable => 503,
        }
    }

    /// The `type` string, as vLLM writes it (`BadRequestError`, …).
    pub fn type_str(self) -> &'static str {
        match self {
            ErrorKind::BadRequest => "BadRequestError",
            ErrorKind::NotFound => "NotFoundError",
            ErrorKind::MethodNotAllowed => "MethodNotAllowed",
            ErrorKind::Internal => "InternalServerError",
            ErrorKind::Unavailable => "ServiceUnavailableError",
        }
    }
}

/// `{"error": {...}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorResponse<'a> {
    /// The error itself.
    pub error: ErrorBody<'a>,
}

/// The inside of an error response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody<'a> {
    /// A sentence for a person.
    pub message: Cow<'a, str>,
    /// `BadRequestError`, `NotFoundError`, … (see [`ErrorKind::type_str`]).
    #[serde(rename = "type")]
    pub kind: Cow<'a, str>,
    /// The offending request field, when one is to blame.
    #[serde(default)]
    pub param: Option<Cow<'a, str>>,
    /// The HTTP status code, as vLLM repeats it here.
    pub code: u16,
}

impl ErrorResponse<'static> {
    /// An error body of `kind` with `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ErrorResponse {
            error: ErrorBody {
                message: Cow::Owned(message.into()),
                kind: Cow::Borrowed(kind.type_str()),
                param: None,
                code: kind.status(),
            },
        }
    }

    /// The same, naming the request field at fault.
    pub fn with_param(mut self, param: impl Into<String>) -> Self {
        self.error.param = Some(Cow::Owned(param.into()));
        self
    }
}
