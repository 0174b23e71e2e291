//! The one place where request errors become HTTP responses: OpenAI's
//! `{"error": {...}}` body with vLLM's `type` strings, counted by type in the metrics.

use super::body::Body;
use super::metrics::HttpStats;
use cohort_router::openai::{ErrorKind, ErrorResponse};
use hyper::{header, Response, StatusCode};

/// A request that cannot be served, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ApiError {
    pub kind: ErrorKind,
    pub message: String,
    pub param: Option<String>,
}

impl ApiError {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ApiError {
            kind,
            message: message.into(),
            param: None,
        }
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::BadRequest, message)
    }

    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }

    /// Names the request field at fault.
    pub(crate) fn param(mut self, p: &str) -> Self {
        self.param = Some(p.to_owned());
        self
    }

    /// The body, as bytes.
    pub(crate) fn body(&self) -> Vec<u8> {
        let mut e = ErrorResponse::new(self.kind, self.message.clone());
        if let Some(p) = &self.param {
            e = e.with_param(p.clone());
        }
        serde_json::to_vec(&e).unwrap_or_default()
    }

    /// The HTTP response, counted in `stats`.
    pub(crate) fn into_response(self, stats: &HttpStats) -> Response<Body> {
        stats.error(self.kind);
        let status = StatusCode::from_u16(self.kind.status()).unwrap_or(StatusCode::BAD_REQUEST);
        let mut r = Response::new(Body::full(self.body()));
        *r.status_mut() = status;
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/json"),
        );
        r
    }
}
