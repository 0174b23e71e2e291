//! The rendezvous with rank 0: its port, and connecting with bounded exponential backoff.

use std::future::Future;
use std::time::Duration;

/// First port of the derived range. Below Linux's ephemeral range (32768–60999), so an
/// outgoing connection never holds it, and above the engines' usual 8000s.
pub const PORT_BASE: u16 = 20000;
/// Ports per job in the derived range: one per step id modulo this.
pub const PORTS_PER_JOB: u16 = 16;
/// Jobs before the derived range wraps.
pub const JOBS_IN_RANGE: u16 = 625;

/// Rank 0's port for a Slurm job step, derived so that every rank computes the same one
/// without talking to the others:
///
/// `port = 20000 + (job_id mod 625) × 16 + (step_id mod 16)`, in `20000..=29999`.
///
/// Steps of one job (up to 16) and jobs with consecutive ids (up to 625 apart) never get
/// the same port, which is what matters on nodes shared by jobs. Override it with
/// `--rendezvous-port` or `COHORT_RENDEZVOUS_PORT` when the range is firewalled.
pub fn derived_port(job_id: u64, step_id: u64) -> u16 {
    let block = (job_id % u64::from(JOBS_IN_RANGE)) as u16;
    let slot = (step_id % u64::from(PORTS_PER_JOB)) as u16;
    PORT_BASE + block * PORTS_PER_JOB + slot
}

/// Bounded exponential backoff: waits `initial`, `2×initial`, … capped at `max`, and gives
/// up once `deadline` has passed since the first attempt.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// First wait. Default 50 ms.
    pub initial: Duration,
    /// Longest wait between attempts. Default 2 s.
    pub max: Duration,
    /// Total time before giving up. Default 120 s: rank 0 discovers its node and binds
    /// before it listens, and `srun` may start tasks seconds apart on a busy cluster.
    pub deadline: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(50),
            max: Duration::from_secs(2),
            deadline: Duration::from_secs(120),
        }
    }
}

impl Backoff {
    /// The waits between attempts, unbounded (the deadline bounds their use).
    pub fn delays(&self) -> impl Iterator<Item = Duration> + '_ {
        std::iter::successors(Some(self.initial.min(self.max)), move |d| {
            Some(d.saturating_mul(2).min(self.max))
        })
    }
}

/// Every attempt failed until the deadline.
#[derive(Debug, thiserror::Error)]
#[error("cannot reach {what} after {attempts} attempts in {waited:?} (deadline {deadline:?}); is rank 0 running and is the port open?")]
pub struct RetryError<E: std::error::Error + 'static> {
    pub what: String,
    pub attempts: u32,
    pub waited: Duration,
    pub deadline: Duration,
    #[source]
    pub last: E,
}

/// Runs `attempt` until it succeeds or the backoff's deadline passes; `what` names the
/// target in the error (`rank 0 at node1:20017`).
pub async fn retry<T, E, F, Fut>(
    backoff: Backoff,
    what: &str,
    mut attempt: F,
) -> Result<T, RetryError<E>>
where
    E: std::error::Error + 'static,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let start = tokio::time::Instant::now();
    let mut delays = backoff.delays();
    let mut attempts = 0;
    loop {
        attempts += 1;
        let last = match attempt().await {
            Ok(value) => return Ok(value),
            Err(e) => e,
        };
        let waited = start.elapsed();
        let delay = delays.next().unwrap_or(backoff.max);
        if waited + delay > backoff.deadline {
            return Err(RetryError {
                what: what.to_owned(),
                attempts,
                waited,
                deadline: backoff.deadline,
                last,
            });
        }
        tokio::time::sleep(delay).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_ports_stay_in_range_and_separate_steps_and_neighbour_jobs() {
        assert_eq!(derived_port(0, 0), 20000);
        assert_eq!(derived_port(624, 15), 29999);
        assert_eq!(derived_port(625, 0), 20000, "wraps after 625 jobs");
        let mut seen = std::collections::BTreeSet::new();
        for job in 1000..1625 {
            for step in 0..16 {
                let port = derived_port(job, step);
                assert!((20000..30000).contains(&port));
                assert!(seen.insert(port), "job {job} step {step} collides");
            }
        }
    }

    #[test]
    fn delays_double_up_to_the_cap() {
        let b = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(500),
            deadline: Duration::from_secs(10),
        };
        let d: Vec<u128> = b.delays().take(5).map(|d| d.as_millis()).collect();
        assert_eq!(d, vec![100, 200, 400, 500, 500]);
    }

    #[derive(Debug, thiserror::Error)]
    #[error("refused")]
    struct Refused;

    #[tokio::test(start_paused = true)]
    async fn retries_until_success() {
        let mut calls = 0;
        let got = retry(Backoff::default(), "rank 0", || {
            calls += 1;
            let n = calls;
            async move {
                if n < 4 {
                    Err(Refused)
                } else {
                    Ok(n)
                }
            }
        })
        .await
        .unwrap();
        assert_eq!(got, 4);
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_at_the_deadline_naming_the_target() {
        let b = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
            deadline: Duration::from_secs(5),
        };
        let err = retry(b, "rank 0 at node1:20017", || async {
            Err::<(), _>(Refused)
        })
        .await
        .unwrap_err();
        // 100+200+400+800+1000+1000+1000 = 4.5 s of waits: 8 attempts, the 9th would pass 5 s.
        assert_eq!(err.attempts, 8);
        assert!(err.waited <= b.deadline);
        assert!(err.to_string().contains("rank 0 at node1:20017"));
    }
}
