//! Readiness: polls an engine's health URL until it answers 200 or a deadline passes.
//!
//! A plain HTTP/1.1 GET over a fresh connection each time: health endpoints are local
//! or on the cluster network, and a connection pool would only keep a dead engine's
//! socket around.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Longest wait for one probe, connect to status line.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Why the last probe failed.
pub(crate) type ProbeFailure = String;

/// One GET: `Ok(())` on status 200, else what happened.
pub(crate) async fn probe(url: &str) -> Result<(), ProbeFailure> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("`{url}` is not an http:// URL"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect(authority)
            .await
            .map_err(|e| format!("connect to {authority}: {e}"))?;
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| format!("send to {authority}: {e}"))?;
        let mut head = [0u8; 64];
        let mut got = 0;
        while got < 12 {
            let n = stream
                .read(&mut head[got..])
                .await
                .map_err(|e| format!("read from {authority}: {e}"))?;
            if n == 0 {
                break;
            }
            got += n;
        }
        let line = String::from_utf8_lossy(&head[..got]);
        match line.split_whitespace().nth(1) {
            Some("200") => Ok(()),
            Some(code) => Err(format!("{url} answered {code}")),
            None => Err(format!("{url} closed without an HTTP status")),
        }
    };
    tokio::time::timeout(PROBE_TIMEOUT, attempt)
        .await
        .unwrap_or_else(|_| Err(format!("{url} did not answer in {PROBE_TIMEOUT:?}")))
}

/// Probes until 200 (then `Ok`) or until `deadline` has passed (then the last failure).
pub(crate) async fn wait_ready(url: &str, deadline: Duration) -> Result<(), ProbeFailure> {
    let backoff = crate::bootstrap::Backoff {
        initial: Duration::from_millis(20),
        max: Duration::from_millis(500),
        deadline,
    };
    #[derive(Debug, thiserror::Error)]
    #[error("{0}")]
    struct Failed(String);
    crate::bootstrap::retry(backoff, url, || async { probe(url).await.map_err(Failed) })
        .await
        .map_err(|e| e.last.0)
}
