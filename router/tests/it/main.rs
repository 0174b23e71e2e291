//! Integration tests of cohort-router: a [`Frontend`] in process, in front of stand-in
//! engines written with hyper (`stub.rs`) whose behaviour each test chooses — so
//! migration, retries, handshakes and error paths can be forced exactly.

mod frontend;
mod fuzz;
mod stub;
mod trtllm;
