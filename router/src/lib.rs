//! The frontend on rank 0: the OpenAI HTTP API and its wire types (the one definition
//! every crate uses), tokenisation and chat templates, the worker registry, routing
//! policies, prefill→decode orchestration, retries and migration, Prometheus metrics.
//!
//! It sees workers as URLs with a role, a load and a KV index; it knows nothing of Slurm
//! or of how engine processes are started.

pub mod openai;
