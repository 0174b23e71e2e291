//! The load generator: datasets and traces, arrival processes, a streaming OpenAI
//! client, latency metrics and reports.
//!
//! It measures any OpenAI-compatible endpoint and knows nothing of how that endpoint was
//! started; `cohort launch` calls it as a library in batch jobs.
