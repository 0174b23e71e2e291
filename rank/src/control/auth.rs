//! The job token on every call: attached by the agent, checked by the coordinator in
//! constant time before any handler runs.

use tonic::metadata::MetadataValue;
use tonic::service::Interceptor;
use tonic::{Request, Status};

use crate::bootstrap::JobToken;

/// The metadata entry that carries the token.
pub const TOKEN_METADATA: &str = "x-cohort-token";

/// Server side: refuses calls without the job token.
#[derive(Debug, Clone)]
pub struct CheckToken(pub JobToken);

impl Interceptor for CheckToken {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        match request.metadata().get(TOKEN_METADATA) {
            Some(given) if self.0.matches(given.as_bytes()) => Ok(request),
            Some(_) => Err(Status::unauthenticated(format!(
                "the `{TOKEN_METADATA}` job token does not match this job's; \
                 is the caller from another job, or was the token file rewritten?"
            ))),
            None => Err(Status::unauthenticated(format!(
                "no job token: every control-plane call must carry `{TOKEN_METADATA}` \
                 (the agent reads it from `COHORT_JOB_TOKEN_FILE` or `COHORT_JOB_TOKEN`)"
            ))),
        }
    }
}

/// Client side: attaches the job token to every call.
#[derive(Debug, Clone)]
pub struct AttachToken(MetadataValue<tonic::metadata::Ascii>);

impl AttachToken {
    pub fn new(token: &JobToken) -> Self {
        // `JobToken` holds printable ASCII only, which is valid metadata.
        let value = MetadataValue::try_from(token.expose())
            .unwrap_or_else(|_| MetadataValue::from_static("invalid"));
        Self(value)
    }
}

impl Interceptor for AttachToken {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        request
            .metadata_mut()
            .insert(TOKEN_METADATA, self.0.clone());
        Ok(request)
    }
}
