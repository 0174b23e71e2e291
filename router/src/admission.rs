//! The bounded admission queue: at most `max_inflight` requests run at once, at most
//! `queue_size` wait for a slot (in arrival order), and the rest get a 429 at once.
//! Memory stays bounded however hard clients push.

use crate::error::{ApiError, ErrorType};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The queue.
#[derive(Debug)]
pub(crate) struct Admission {
    slots: Arc<Semaphore>,
    waiting: AtomicUsize,
    queue_size: usize,
    timeout: Duration,
}

/// A running request's slot; freed on drop.
#[derive(Debug)]
pub(crate) struct Slot(#[allow(dead_code)] OwnedSemaphorePermit);

struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

impl Admission {
    /// `max_inflight` slots, `queue_size` waiting places, `timeout` longest wait.
    pub(crate) fn new(max_inflight: usize, queue_size: usize, timeout: Duration) -> Self {
        Admission {
            slots: Arc::new(Semaphore::new(max_inflight.max(1))),
            waiting: AtomicUsize::new(0),
            queue_size,
            timeout,
        }
    }

    /// Requests waiting now.
    pub(crate) fn waiting(&self) -> usize {
        self.waiting.load(Relaxed)
    }

    /// Stops admitting: waiting and later requests get a 503.
    pub(crate) fn close(&self) {
        self.slots.close();
    }

    /// A slot: at once, after a wait in the queue, or a 429 (queue full), 504 (waited
    /// too long) or 503 (closed).
    pub(crate) async fn admit(&self) -> Result<Slot, ApiError> {
        let closed = || ApiError::new(ErrorType::Unavailable, "the frontend is shutting down");
        match self.slots.clone().try_acquire_owned() {
            Ok(p) => return Ok(Slot(p)),
            Err(tokio::sync::TryAcquireError::Closed) => return Err(closed()),
            Err(tokio::sync::TryAcquireError::NoPermits) => {}
        }
        if self.waiting.fetch_add(1, Relaxed) >= self.queue_size {
            self.waiting.fetch_sub(1, Relaxed);
            return Err(ApiError::new(
                ErrorType::QueueFull,
                format!(
                    "the admission queue is full ({} waiting); retry later",
                    self.queue_size
                ),
            ));
        }
        let _w = Waiting(&self.waiting);
        match tokio::time::timeout(self.timeout, self.slots.clone().acquire_owned()).await {
            Ok(Ok(p)) => Ok(Slot(p)),
            Ok(Err(_)) => Err(closed()),
            Err(_) => Err(ApiError::new(
                ErrorType::Timeout,
                format!(
                    "no slot became free within {} s",
                    self.timeout.as_secs_f64()
                ),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn full_queue_gets_429_and_slots_free_on_drop() {
        let a = Arc::new(Admission::new(1, 1, Duration::from_secs(5)));
        let first = a.admit().await.unwrap();
        let a2 = a.clone();
        let waiter = tokio::spawn(async move { a2.admit().await.map(|_| ()) });
        while a.waiting() == 0 {
            tokio::task::yield_now().await;
        }
        let e = a.admit().await.unwrap_err();
        assert_eq!(e.kind, ErrorType::QueueFull);
        drop(first);
        waiter.await.unwrap().unwrap();
        assert_eq!(a.waiting(), 0);
        a.close();
        assert_eq!(a.admit().await.unwrap_err().kind, ErrorType::Unavailable);
    }

    #[tokio::test]
    async fn waiting_too_long_is_a_timeout() {
        let a = Admission::new(1, 4, Duration::from_millis(20));
        let _held = a.admit().await.unwrap();
        assert_eq!(a.admit().await.unwrap_err().kind, ErrorType::Timeout);
        assert_eq!(a.waiting(), 0);
    }
}
