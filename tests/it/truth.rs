//! What a node says about itself is true at the edges (issue 10): a warm
//! restart reports what it applied on every surface, read-your-writes
//! tokens are checked against the stream's incarnation, a stream recreated
//! while a node runs is cold-booted before anything of it is applied, and a
//! panicking refresher leaves a node that says it is not ready.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use invalog::node::NodeState;
use invalog::presence::{self, Presence, PresenceSettings};
use invalog::token::TokenCheck;
use invalog::{NodeError, RefreshResult, Refresher};

use crate::agent_http::kit::{start_node, Api, Gate};
use crate::support::{eventually, within, Call, Fixture, Recorder};

const LIMIT: Duration = Duration::from_secs(15);

/// A caught-up node restarted with nothing to replay says it applied what
/// it stored — on `/status`, `/readyz`, `/metrics`, `/applied` and presence
/// — and a lag fence does not take it out of rotation (it used to report
/// applied 0 and the whole stream as lag).
#[tokio::test]
async fn a_warm_restart_reports_what_it_applied_on_every_surface() {
    let f = Fixture::new().await;
    let p = f.publisher();
    let mut last = 0;
    for i in 0..32 {
        last = p
            .refresh_ids("content", &[i])
            .await
            .unwrap()
            .sequence()
            .unwrap();
    }
    let fence = |s: &mut invalog::NodeSettings| s.fence.max_lag_messages = Some(10);
    for (round, crash) in [(1, false), (2, true)] {
        let content = Arc::new(Recorder::default());
        let node = start_node(&f, "web-1", content.clone(), fence).await;
        within(LIMIT, node.wait_applied(last)).await.unwrap();
        eventually(LIMIT, "the applied sequence is stored", || {
            node.position().stored == last
        })
        .await;
        if crash {
            drop(node);
        } else {
            node.shutdown().await.unwrap();
        }

        let content = Arc::new(Recorder::default());
        let node = start_node(&f, "web-1", content.clone(), fence).await;
        within(LIMIT, node.ready()).await.unwrap();
        let position = node.position();
        assert_eq!(
            (
                position.applied,
                position.stored,
                position.stream_last,
                position.lag()
            ),
            (last, last, last, 0),
            "round {round}: {position:?}"
        );
        assert!(node.is_ready(), "round {round}: {:?}", node.readiness());
        assert!(content.calls().is_empty(), "nothing to replay");

        let api = Api::serve(&f, &node).await;
        let (status, ready) = api.json("/readyz").await;
        assert_eq!(status, 200, "round {round}: {ready}");
        assert_eq!(
            (
                ready["applied_sequence"].as_u64(),
                ready["lag_messages"].as_u64()
            ),
            (Some(last), Some(0))
        );
        let (_, body) = api.json("/status").await;
        let sequences = &body["sequences"];
        assert_eq!(
            (
                sequences["applied"].as_u64(),
                sequences["stored"].as_u64(),
                sequences["stream_last"].as_u64()
            ),
            (Some(last), Some(last), Some(last)),
            "{body}"
        );
        assert_eq!(body["lag"]["messages"].as_u64(), Some(0), "{body}");
        let token = body["token"].as_str().unwrap().to_owned();
        let (status, applied) = api
            .json(&format!("/applied?token={token}&timeout=1s"))
            .await;
        assert_eq!(status, 200, "{applied}");
        let m = api.metrics().await;
        assert_eq!(m["invalog_applied_sequence"], last as f64);
        assert_eq!(m["invalog_stored_sequence"], last as f64);
        assert_eq!(m["invalog_lag_messages"], 0.0);
        assert_eq!(m["invalog_ready"], 1.0);

        let settings = PresenceSettings {
            bucket: format!("presence_truth_{round}"),
            ..PresenceSettings::default()
        };
        let reporter = Presence::start(
            f.js.clone(),
            settings.clone(),
            &f.log.stream,
            node.clone(),
            vec![],
        )
        .await
        .unwrap();
        let reports = presence::read_all(&f.js, &settings.bucket, &f.log.stream)
            .await
            .unwrap();
        let report = reports.iter().find(|r| r.node == "web-1").unwrap();
        assert_eq!(
            (report.applied, report.stored, report.lag, report.ready),
            (last, last, 0, true),
            "{report:?}"
        );
        reporter.stop().await.unwrap();
        node.shutdown().await.unwrap();
    }
}

/// A token names the stream incarnation: one from a stream deleted and
/// created again is answered "another incarnation" (410), never "applied";
/// one of the new stream waits until the node's cold boot is done.
#[tokio::test]
async fn tokens_are_checked_against_the_stream_incarnation() {
    let f = Fixture::new().await;
    let p = f.publisher();
    let mut old = None;
    for i in 0..6 {
        old = p.refresh_ids("content", &[i]).await.unwrap().token();
    }
    let old = old.expect("a receipt carries a token");
    assert_eq!(old.sequence, 6);
    let node = start_node(&f, "web-1", Arc::new(Recorder::default()), |_| {}).await;
    within(LIMIT, node.wait_token(&old)).await.unwrap();
    node.shutdown().await.unwrap();

    f.recreate_stream().await;
    let new = p
        .refresh_ids("content", &[100])
        .await
        .unwrap()
        .token()
        .unwrap();
    assert_eq!(new.sequence, 1, "sequences restart at 1");
    assert_ne!(
        new.incarnation, old.incarnation,
        "the receipt names the new stream"
    );

    // A slow cold boot: the gate holds the refresh-all.
    let gate = Gate::closed();
    let node = start_node(&f, "web-1", gate.clone(), |_| {}).await;
    let api = Api::serve(&f, &node).await;
    eventually(LIMIT, "cold booting", || {
        matches!(node.state(), NodeState::ColdBooting { .. })
    })
    .await;
    let position = node.position();
    assert_eq!(position.incarnation, new.incarnation, "{position:?}");
    assert_eq!(
        (position.applied, position.stored),
        (0, 0),
        "nothing applied in the new stream yet"
    );
    assert_eq!(position.check(&new), TokenCheck::Pending);
    let (status, body) = api
        .json(&format!("/applied?token={new}&timeout=200ms"))
        .await;
    assert_eq!(status, 504, "not applied during the cold boot: {body}");
    let (status, body) = api.json(&format!("/applied?token={old}&timeout=1s")).await;
    assert_eq!(status, 410, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("older incarnation"),
        "{body}"
    );
    assert!(matches!(
        node.wait_token(&old).await,
        Err(NodeError::OtherIncarnation { .. })
    ));

    gate.open();
    within(LIMIT, node.ready()).await.unwrap();
    let (status, body) = api.json(&format!("/applied?token={new}&timeout=5s")).await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = api.json(&format!("/applied?token={old}&timeout=1s")).await;
    assert_eq!(status, 410, "still another incarnation after the cold boot");
    node.shutdown().await.unwrap();
}

/// Records calls; holds the batch that refreshes `held` until released.
struct Holding {
    held: i64,
    release: tokio::sync::watch::Sender<bool>,
    calls: Recorder,
}

#[async_trait]
impl Refresher for Holding {
    async fn refresh_all(&self) -> RefreshResult {
        self.calls.refresh_all().await
    }
    async fn refresh_ids(&self, ids: &[i64]) -> RefreshResult {
        if ids.contains(&self.held) {
            let _ = self.release.subscribe().wait_for(|go| *go).await;
        }
        self.calls.refresh_ids(ids).await
    }
}

/// A stream deleted and created again under a running node — here while
/// the node is busy applying, so that the new stream already holds more
/// messages than the old one when the node reads on: nothing of the new
/// stream is applied before the cold boot's refresh-all (a consumer that
/// async-nats recreates by itself, or a direct read after the consumer
/// failed, used to deliver them as if they continued the old stream).
#[tokio::test]
async fn nothing_of_a_recreated_stream_is_applied_before_its_cold_boot() {
    let f = Fixture::new().await;
    let p = f.publisher();
    let holding = Arc::new(Holding {
        held: 9,
        release: tokio::sync::watch::Sender::new(false),
        calls: Recorder::default(),
    });
    let node = start_node(&f, "a", holding.clone(), |_| {}).await;
    for i in 0..10 {
        p.refresh_ids("content", &[i]).await.unwrap();
    }
    eventually(LIMIT, "the node is applying sequence 10", || {
        holding.calls.calls().len() == 9
    })
    .await;

    f.recreate_stream().await;
    let mut new = None;
    for i in 0..20 {
        new = p.refresh_ids("content", &[100 + i]).await.unwrap().token();
    }
    let new = new.unwrap();
    holding.release.send_replace(true);
    // Applied by the cold boot's refresh-all, or after it.
    within(LIMIT, node.wait_token(&new)).await.unwrap();
    let calls = holding.calls.calls()[10..].to_vec();
    let first_new = calls
        .iter()
        .position(|c| matches!(c, Call::Ids(ids) if ids[0] >= 100));
    let first_all = calls.iter().position(|c| *c == Call::All);
    assert!(
        first_all.is_some_and(|all| first_new.is_none_or(|new| all < new)),
        "a refresh-all must come before any message of the new stream: {calls:?}"
    );
    assert_eq!(node.stats().cold_boots, 1);
    assert_eq!(
        node.position().incarnation,
        new.incarnation,
        "the node reports the new stream"
    );
    node.shutdown().await.unwrap();
}

/// Panics on every call it gets while `panicking` is set.
#[derive(Default)]
struct Panicky {
    panicking: AtomicBool,
    calls: Recorder,
}

#[async_trait]
impl Refresher for Panicky {
    async fn refresh_all(&self) -> RefreshResult {
        if self.panicking.load(Ordering::SeqCst) {
            panic!("refresh_all exploded");
        }
        self.calls.refresh_all().await
    }
    async fn refresh_ids(&self, ids: &[i64]) -> RefreshResult {
        if ids.contains(&13) {
            panic!("id 13 exploded");
        }
        self.calls.refresh_ids(ids).await
    }
}

/// A refresher that panics is a failing refresher: retried, escalated to
/// its refresh-all, and if that panics too the node is stalled (not
/// ready), not a dead task behind a handle that still says ready.
#[tokio::test]
async fn a_panicking_refresher_is_a_failing_refresher() {
    let f = Fixture::new().await;
    let p = f.publisher();
    let panicky = Arc::new(Panicky::default());
    let node = start_node(&f, "web-1", panicky.clone(), |_| {}).await;
    within(LIMIT, node.ready()).await.unwrap();

    // Panics on apply only: escalated to a refresh-all, and the node goes on.
    p.refresh_ids("content", &[13]).await.unwrap();
    let next = p
        .refresh_ids("content", &[14])
        .await
        .unwrap()
        .sequence()
        .unwrap();
    within(LIMIT, node.wait_applied(next)).await.unwrap();
    assert_eq!(panicky.calls.calls(), vec![Call::All, Call::Ids(vec![14])]);
    assert_eq!(node.stats().escalations, 1);
    assert!(node.is_ready());

    // Panics on refresh-all too: stalled, not ready, the panic named.
    panicky.panicking.store(true, Ordering::SeqCst);
    let stuck = p
        .refresh_ids("content", &[13])
        .await
        .unwrap()
        .sequence()
        .unwrap();
    let mut position = node.watch_position();
    let stalled = within(
        LIMIT,
        position.wait_for(|p| matches!(p.state, NodeState::Stalled { .. })),
    )
    .await
    .unwrap()
    .state
    .clone();
    assert!(
        stalled.to_string().contains("refresh_all exploded"),
        "{stalled}"
    );
    assert!(!node.is_ready());
    // Cured: the node goes on from where it stood.
    panicky.panicking.store(false, Ordering::SeqCst);
    within(LIMIT, node.wait_applied(stuck)).await.unwrap();
    within(LIMIT, node.ready()).await.unwrap();
}
