//! The one place where errors become HTTP responses: OpenAI's `{"error": {...}}` body,
//! a fixed `type` string per [`ErrorType`], and the same string as the metric label of
//! `cohort_router_errors_total`.

use crate::body::Body;
use crate::metrics::Metrics;
use crate::openai::{sse, ErrorBody, ErrorResponse};
use hyper::{header, Response, StatusCode};
use std::borrow::Cow;

/// What went wrong, as a fixed set: the HTTP status, the body's `type` and a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorType {
    /// 400: malformed JSON, a missing or mistyped field, a value out of range.
    BadRequest,
    /// 401: an API key is required and was missing or wrong.
    Unauthorized,
    /// 404: an unknown model or route.
    NotFound,
    /// 405: the route exists with another method.
    MethodNotAllowed,
    /// 413: the body is larger than `--max-body-bytes`.
    PayloadTooLarge,
    /// 429: the admission queue is full.
    QueueFull,
    /// 500: a bug.
    Internal,
    /// 502: every worker tried failed (after retries and migrations).
    BadGateway,
    /// 503: no worker can serve (none registered, none healthy, or shutting down).
    Unavailable,
    /// 504: the request waited in the admission queue longer than `--queue-timeout-s`.
    Timeout,
}

impl ErrorType {
    /// Every type, for metric exposition.
    pub const ALL: [ErrorType; 10] = [
        ErrorType::BadRequest,
        ErrorType::Unauthorized,
        ErrorType::NotFound,
        ErrorType::MethodNotAllowed,
        ErrorType::PayloadTooLarge,
        ErrorType::QueueFull,
        ErrorType::Internal,
        ErrorType::BadGateway,
        ErrorType::Unavailable,
        ErrorType::Timeout,
    ];

    /// The HTTP status.
    pub fn status(self) -> StatusCode {
        match self {
            ErrorType::BadRequest => StatusCode::BAD_REQUEST,
            ErrorType::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorType::NotFound => StatusCode::NOT_FOUND,
            ErrorType::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorType::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorType::QueueFull => StatusCode::TOO_MANY_REQUESTS,
            ErrorType::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorType::BadGateway => StatusCode::BAD_GATEWAY,
            ErrorType::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorType::Timeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// The body's `type`, in vLLM's style (`BadRequestError`, …); also the metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorType::BadRequest => "BadRequestError",
            ErrorType::Unauthorized => "AuthenticationError",
            ErrorType::NotFound => "NotFoundError",
            ErrorType::MethodNotAllowed => "MethodNotAllowed",
            ErrorType::PayloadTooLarge => "RequestTooLargeError",
            ErrorType::QueueFull => "RateLimitError",
            ErrorType::Internal => "InternalServerError",
            ErrorType::BadGateway => "BadGatewayError",
            ErrorType::Unavailable => "ServiceUnavailableError",
            ErrorType::Timeout => "TimeoutError",
        }
    }
}

/// An error to answer a request with.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    /// Which kind.
    pub kind: ErrorType,
    /// A sentence for a person; never contains an API key.
    pub message: String,
    /// The request field at fault, when one is.
    pub param: Option<String>,
}

impl ApiError {
    /// An error of `kind`.
    pub fn new(kind: ErrorType, message: impl Into<String>) -> Self {
        ApiError {
            kind,
            message: message.into(),
            param: None,
        }
    }

    /// A 400.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorType::BadRequest, message)
    }

    /// Names the request field at fault.
    pub fn param(mut self, param: impl Into<String>) -> Self {
        self.param = Some(param.into());
        self
    }

    fn body(&self) -> ErrorResponse<'_> {
        ErrorResponse {
            error: ErrorBody {
                message: Cow::Borrowed(&self.message),
                kind: Cow::Borrowed(self.kind.as_str()),
                param: self.param.as_deref().map(Cow::Borrowed),
                code: self.kind.status().as_u16(),
            },
        }
    }

    /// The whole response; counts the error.
    pub fn into_response(self, metrics: &Metrics) -> Response<Body> {
        metrics.error(self.kind);
        let body = serde_json::to_vec(&self.body()).unwrap_or_default();
        let mut r = Response::new(Body::full(body));
        *r.status_mut() = self.kind.status();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/json"),
        );
        if self.kind == ErrorType::Unauthorized {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        if self.kind == ErrorType::QueueFull {
            r.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        }
        r
    }

    /// The error as an event inside a stream that has already started (vLLM's
    /// `data: {"error": {...}}`); counts the error.
    pub fn write_sse(&self, out: &mut Vec<u8>, metrics: &Metrics) {
        metrics.error(self.kind);
        let _ = sse::write_event(out, &self.body());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_types_are_distinct() {
        let mut statuses: Vec<u16> = ErrorType::ALL.iter().map(|k| k.status().as_u16()).collect();
        statuses.sort_unstable();
        statuses.dedup();
        assert_eq!(statuses.len(), ErrorType::ALL.len());
        let mut types: Vec<&str> = ErrorType::ALL.iter().map(|k| k.as_str()).collect();
        types.sort_unstable();
        types.dedup();
        assert_eq!(types.len(), ErrorType::ALL.len());
    }

    #[test]
    fn body_is_openai_shaped() {
        let e = ApiError::bad_request("`max_tokens`: invalid type").param("max_tokens");
        let v: serde_json::Value = serde_json::to_value(e.body()).unwrap();
        assert_eq!(v["error"]["type"], "BadRequestError");
        assert_eq!(v["error"]["param"], "max_tokens");
        assert_eq!(v["error"]["code"], 400);
    }
}
