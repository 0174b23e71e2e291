//! The control plane over real gRPC on 127.0.0.1: join and plan, events and commands,
//! the token check, loss detection.

use std::time::Duration;

use cohort_rank::bootstrap::{Backoff, JobToken};
use cohort_rank::control::proto::agent_message::Kind;
use cohort_rank::control::proto::coordinator_client::CoordinatorClient;
use cohort_rank::control::proto::CoordinatorMessage;
use cohort_rank::control::proto::{coordinator_message, InstanceExited, JoinRequest, Stop};
use cohort_rank::control::{Agent, Coordinator, CoordinatorConfig, CoordinatorEvent, LostReason};
use tokio::sync::mpsc::UnboundedReceiver;

const CAP: Duration = Duration::from_secs(20);

fn token() -> JobToken {
    JobToken::new("test-token-0123456789abcdef", "test").unwrap()
}

async fn coordinator(size: u32) -> (Coordinator, UnboundedReceiver<CoordinatorEvent>) {
    let mut config = CoordinatorConfig::new(size, token());
    config.heartbeat_interval = Duration::from_millis(50);
    config.heartbeat_timeout = Duration::from_millis(400);
    Coordinator::serve("127.0.0.1:0".parse().unwrap(), config)
        .await
        .unwrap()
}

fn url(c: &Coordinator) -> String {
    format!("http://{}", c.local_addr())
}

fn join_request(rank: u32, size: u32) -> JoinRequest {
    JoinRequest {
        rank,
        size,
        hostname: format!("local-{rank}"),
        topology_json: format!("{{\"rank\":{rank}}}"),
        version: env!("CARGO_PKG_VERSION").to_owned(),
    }
}

async fn next(
    rx: &mut UnboundedReceiver<CoordinatorEvent>,
    keep: impl Fn(&CoordinatorEvent) -> bool,
) -> CoordinatorEvent {
    let wait = async {
        loop {
            let e = rx.recv().await.expect("coordinator ended");
            if keep(&e) {
                return e;
            }
        }
    };
    tokio::time::timeout(CAP, wait)
        .await
        .expect("no such event")
}

async fn agent(c: &Coordinator, rank: u32) -> Agent {
    Agent::connect(&url(c), &token(), rank, Backoff::default())
        .await
        .unwrap()
}

#[tokio::test]
async fn joins_wait_for_every_rank_then_all_get_the_plan() {
    let (c, mut events) = coordinator(3).await;
    let mut joins = Vec::new();
    for rank in 0..3 {
        let mut a = agent(&c, rank).await;
        joins.push(tokio::spawn(
            async move { a.join(join_request(rank, 3)).await },
        ));
    }
    let CoordinatorEvent::AllJoined(ranks) =
        next(&mut events, |e| matches!(e, CoordinatorEvent::AllJoined(_))).await
    else {
        unreachable!()
    };
    assert_eq!(
        ranks.iter().map(|r| r.rank).collect::<Vec<_>>(),
        vec![0, 1, 2]
    );
    assert_eq!(ranks[2].topology_json, "{\"rank\":2}");
    assert!(
        joins.iter().all(|j| !j.is_finished()),
        "a join returned before the plan"
    );
    c.publish_plan(b"{\"instances\":[]}".to_vec());
    for j in joins {
        let reply = j.await.unwrap().unwrap();
        assert_eq!(reply.plan_json, b"{\"instances\":[]}");
        assert_eq!(reply.heartbeat_interval_ms, 50);
    }
}

#[tokio::test]
async fn calls_without_the_right_token_are_refused() {
    let (c, _events) = coordinator(1).await;
    // No token at all: a plain generated client.
    let mut bare = CoordinatorClient::connect(url(&c)).await.unwrap();
    let status = bare.join(join_request(0, 1)).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    assert!(
        status.message().contains("no job token"),
        "{}",
        status.message()
    );
    // A token of another job, through the real agent.
    let other = JobToken::new("another-jobs-token-0123456789", "test").unwrap();
    let mut a = Agent::connect(&url(&c), &other, 0, Backoff::default())
        .await
        .unwrap();
    let err = a.join(join_request(0, 1)).await.unwrap_err();
    assert!(err.to_string().contains("does not match"), "{err}");
    let err = a.session(Duration::from_millis(50)).await.unwrap_err();
    assert!(err.to_string().contains("does not match"), "{err}");
}

#[tokio::test]
async fn a_rank_of_another_size_or_version_is_refused() {
    let (c, _events) = coordinator(2).await;
    let mut a = agent(&c, 0).await;
    let err = a.join(join_request(0, 4)).await.unwrap_err().to_string();
    assert!(err.contains("job of 2 ranks"), "{err}");
    let mut req = join_request(1, 2);
    req.version = "0.0.0-other".into();
    let err = a.join(req).await.unwrap_err().to_string();
    assert!(err.contains("same binary"), "{err}");
}

#[tokio::test]
async fn events_go_up_and_commands_come_down() {
    let (c, mut events) = coordinator(1).await;
    c.publish_plan(b"{}".to_vec());
    let mut a = agent(&c, 0).await;
    a.join(join_request(0, 1)).await.unwrap();
    let mut session = a.session(Duration::from_millis(50)).await.unwrap();
    let exited = Kind::InstanceExited(InstanceExited {
        instance: "decode-0".into(),
        code: Some(3),
        signal: None,
        was_ready: false,
        log_tail: "fatal: CUDA out of memory".into(),
    });
    session.send(exited.clone()).unwrap();
    let got = next(&mut events, |e| matches!(e, CoordinatorEvent::Agent { .. })).await;
    assert_eq!(
        got,
        CoordinatorEvent::Agent {
            rank: 0,
            event: exited
        }
    );

    let stop = CoordinatorMessage {
        kind: Some(coordinator_message::Kind::Stop(Stop {
            instances: vec![],
            grace_ms: 5000,
        })),
    };
    assert_eq!(c.broadcast(&stop), vec![0]);
    let command = tokio::time::timeout(CAP, session.next_command())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(command, Some(stop));
}

#[tokio::test]
async fn a_rank_whose_heartbeats_stop_is_detected() {
    let (c, mut events) = coordinator(2).await;
    c.publish_plan(b"{}".to_vec());
    let mut sessions = Vec::new();
    for rank in 0..2 {
        let mut a = agent(&c, rank).await;
        a.join(join_request(rank, 2)).await.unwrap();
        sessions.push(a.session(Duration::from_millis(50)).await.unwrap());
    }
    // Rank 1 hangs: its stream stays open but says nothing.
    sessions[1].stop_heartbeats();
    let lost = next(&mut events, |e| {
        matches!(e, CoordinatorEvent::RankLost { .. })
    })
    .await;
    let CoordinatorEvent::RankLost { rank, reason } = lost else {
        unreachable!()
    };
    assert_eq!(rank, 1, "rank 0 kept beating and must not be lost");
    assert!(
        matches!(reason, LostReason::Silent(d) if d > Duration::from_millis(400)),
        "{reason:?}"
    );
    // Its session is closed: commands no longer reach it, while rank 0 still gets them.
    let stop = CoordinatorMessage {
        kind: Some(coordinator_message::Kind::Stop(Stop::default())),
    };
    assert_eq!(c.broadcast(&stop), vec![0]);
}

#[tokio::test]
async fn a_rank_that_disconnects_is_reported_lost() {
    let (c, mut events) = coordinator(1).await;
    c.publish_plan(b"{}".to_vec());
    let mut a = agent(&c, 0).await;
    a.join(join_request(0, 1)).await.unwrap();
    let session = a.session(Duration::from_millis(50)).await.unwrap();
    drop(session);
    drop(a);
    let lost = next(&mut events, |e| {
        matches!(e, CoordinatorEvent::RankLost { .. })
    })
    .await;
    assert!(
        matches!(
            lost,
            CoordinatorEvent::RankLost {
                rank: 0,
                reason: LostReason::Disconnected(_)
            }
        ),
        "{lost:?}"
    );
}

#[tokio::test]
async fn an_agent_started_before_rank0_connects_once_it_listens() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let connecting =
        tokio::spawn(async move { Agent::connect(&url, &token(), 0, Backoff::default()).await });
    // Rank 0 comes up only after the agent has started trying.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let config = CoordinatorConfig::new(1, token());
    let (c, _events) = Coordinator::serve(format!("127.0.0.1:{port}").parse().unwrap(), config)
        .await
        .unwrap();
    c.publish_plan(b"{\"ok\":true}".to_vec());
    let mut a = tokio::time::timeout(CAP, connecting)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let reply = a.join(join_request(0, 1)).await.unwrap();
    assert_eq!(reply.plan_json, b"{\"ok\":true}");
}

#[tokio::test]
async fn an_unreachable_rank0_fails_naming_it() {
    let backoff = Backoff {
        initial: Duration::from_millis(10),
        max: Duration::from_millis(20),
        deadline: Duration::from_millis(100),
    };
    let err = Agent::connect("http://127.0.0.1:1", &token(), 3, backoff)
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("rank 0 at http://127.0.0.1:1") && text.contains("attempts"),
        "{text}"
    );
}
