//! Rank 0's ending, the same for every outcome: stop every rank's engines, wait for the
//! ranks to leave, stop the frontend and the control plane, reap local ranks, summarise.

use std::collections::BTreeSet;
use std::time::Duration;

use cohort_rank::control::proto::agent_message::Kind;
use cohort_rank::control::proto::{coordinator_message, CoordinatorMessage, Stop};
use cohort_rank::control::CoordinatorEvent;
use serde_json::json;

use super::{Lead, Published};
use crate::launch::results::{self, Summary};
use crate::launch::{Ending, Failure};

impl Lead<'_> {
    /// Sends `Stop` to every rank and waits (bounded by the grace and 5 s) until each
    /// has left. A rank that opens its session after the first broadcast (the job
    /// failed while it was still receiving the plan) gets the stop from a later one.
    pub(super) async fn stop_ranks(&mut self, grace: Duration) {
        let Some(coordinator) = self.coordinator.take() else {
            return;
        };
        let stop = CoordinatorMessage {
            kind: Some(coordinator_message::Kind::Stop(Stop {
                instances: Vec::new(),
                grace_ms: grace.as_millis() as u32,
            })),
        };
        // Without a published plan, no rank opens a session: they leave on the abort.
        let mut remaining: BTreeSet<u32> = if self.plan.is_some() {
            self.joined.difference(&self.lost).copied().collect()
        } else {
            BTreeSet::new()
        };
        let bound = tokio::time::Instant::now() + grace + Duration::from_secs(5);
        let mut again = tokio::time::interval(Duration::from_millis(100));
        while !remaining.is_empty() {
            tokio::select! {
                _ = again.tick() => {
                    coordinator.broadcast(&stop);
                }
                ev = self.events.recv() => match ev {
                    Some(CoordinatorEvent::RankLost { rank, .. }) => { remaining.remove(&rank); }
                    Some(CoordinatorEvent::Agent { event: Kind::InstanceExited(x), .. }) => {
                        self.res.event("exited", json!({"instance": x.instance, "code": x.code, "signal": x.signal}));
                    }
                    Some(_) => {}
                    None => break,
                },
                () = tokio::time::sleep_until(bound) => {
                    let left: Vec<String> = remaining.iter().map(u32::to_string).collect();
                    self.incident(format!("ranks {} did not confirm their engines stopped in time", left.join(", ")), String::new());
                    break;
                }
                name = self.signals.next() => {
                    self.launch.say(format_args!("{name}: not waiting any longer"));
                    break;
                }
            }
        }
        self.coordinator = Some(coordinator);
    }

    /// The same ending for every outcome: stop every rank's engines, wait for the ranks
    /// to leave, stop the frontend and the control plane, reap local ranks, summarise.
    pub(super) async fn finish(&mut self, outcome: Result<Ending, Failure>) -> Ending {
        let (ending, message) = match outcome {
            Ok(e) => (e, None),
            Err(f) => (f.ending, Some(format!("{:#}", f.error))),
        };
        if let Some(m) = &message {
            self.launch.say(format_args!("error: {m}"));
        }
        let immediate = self.signals.received() >= 2;
        let grace = if immediate {
            Duration::ZERO
        } else {
            self.launch.stop_grace
        };
        if !self.published {
            let abort = Published {
                plan: None,
                abort: Some(message.clone().unwrap_or_else(|| ending.name().to_owned())),
            };
            if let Some(c) = &self.coordinator {
                c.publish_plan(serde_json::to_vec(&abort).unwrap_or_default());
            }
        }
        self.res
            .event("stopping", json!({"grace_s": grace.as_secs_f64()}));
        self.stop_ranks(grace).await;
        let migrations = self
            .frontend
            .as_ref()
            .map(|(fe, _)| fe.handle().metrics().migration_journal())
            .unwrap_or_default();
        let frontend = self.frontend_url();
        if let Some((fe, _)) = self.frontend.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), fe.shutdown()).await;
        }
        // Closing every session tells a rank that missed the stop that rank 0 is gone:
        // it stops its engines and exits on its own.
        if let Some(c) = self.coordinator.take() {
            let _ = tokio::time::timeout(Duration::from_secs(2), c.shutdown()).await;
        }
        let killed = self.locals.reap(Duration::from_secs(3)).await;
        if !killed.is_empty() {
            self.incident(
                format!(
                    "local ranks {killed:?} had not exited after the stop; they were sent TERM"
                ),
                String::new(),
            );
        }
        let points = results::read_points(&self.res.dir.join("bench"));
        let partial = self.partial
            || points
                .iter()
                .any(|p| p.get("partial").and_then(serde_json::Value::as_bool) == Some(true));
        let plan = self.plan.as_ref();
        let summary = Summary {
            recipe: self.launch.recipe.name.clone(),
            job: self.job.clone(),
            ending: ending.name().to_owned(),
            exit_status: ending.code(),
            partial,
            started: results::utc(self.started),
            duration_s: results::secs(self.clock.elapsed()),
            ranks: self.launch.boot.size,
            bootstrap: self.launch.boot.method.to_string(),
            engine: plan.map_or_else(
                || format!("{:?}", self.launch.engine),
                |p| p.engine.describe(),
            ),
            instances: plan.map_or(0, |p| p.instances.len()),
            gpus: plan.map_or(0, |p| p.instances.iter().map(|a| a.gpu_count()).sum()),
            ready_s: self.ready_s,
            frontend,
            incidents: self.incidents.clone(),
            migrations,
            points,
            message,
        };
        self.res.event(
            "end",
            json!({"ending": ending.name(), "exit_status": ending.code(), "partial": partial}),
        );
        if let Err(e) = summary.write(&self.res) {
            self.launch.say(format_args!("error: {e:#}"));
        }
        self.launch.say(format_args!(
            "results: {} ({}{})",
            self.res.dir.join("summary.md").display(),
            ending.name(),
            if partial { ", partial" } else { "" }
        ));
        ending
    }
}
