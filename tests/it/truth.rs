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

use crate::agent_http::kit::{start_node, start_node_with_store, Api, Gate};
use crate::agent_support::publish_each;
use crate::support::{eventually, within, Call, Fixture, Recorder};

const LIMIT: Duration = Duration::from_secs(15);

/// A caught-up node restarted with nothing to replay says it applied what
/// it stored — on `/status`, `/readyz`, `/metrics`, `/applied` and presence
/// — and a lag fence does not take it out of rotation (it used to report
/// applied 0 and the whole stream as lag).
#[tokio::test]
async fn a_warm_restart_reports_what_it_applied_on_every_surface() {
    let f = Fixture::new().await;
    let last = publish_each(&f, 32).await;
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
        let reporter = report(&f, &settings, &node).await;
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
    /// Set once the held batch is being applied.
    holding: AtomicBool,
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
            self.holding.store(true, Ordering::SeqCst);
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
        holding: AtomicBool::new(false),
        release: tokio::sync::watch::Sender::new(false),
        calls: Recorder::default(),
    });
    let node = start_node(&f, "a", holding.clone(), |_| {}).await;
    for i in 0..10 {
        p.refresh_ids("content", &[i]).await.unwrap();
    }
    // Not just "9 calls recorded": the node must be inside sequence 10, or
    // it may meet the recreated stream before reading it (then message 10
    // is gone with the old stream, and the test proves nothing).
    eventually(LIMIT, "the node is applying sequence 10", || {
        holding.holding.load(Ordering::SeqCst)
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

/// Starts presence reports of `node` to `settings.bucket`.
async fn report(f: &Fixture, settings: &PresenceSettings, node: &Arc<invalog::Node>) -> Presence {
    Presence::start(
        f.js.clone(),
        settings.clone(),
        &f.log.stream,
        node.clone(),
        vec![],
    )
    .await
    .unwrap()
}

/// A node on the current stream and a checkpoint of its own.
async fn copy_of(f: &Fixture, name: &str, file: &str) -> Arc<invalog::Node> {
    let store = invalog::FileStore::new(f.dir.path().join(file));
    let node = start_node_with_store(f, name, Arc::new(Recorder::default()), |_| {}, store).await;
    within(LIMIT, node.ready()).await.unwrap();
    node
}

/// Two processes configured with one node id (each with its own checkpoint
/// file): both see the other's presence reports and say so on `/status`
/// and `/metrics`; the fleet view marks the node unhealthy and
/// `invalog status` exits 5 with DUPLICATE. `/readyz` stays 200: each
/// process's own caches are current.
#[tokio::test]
async fn one_node_id_in_two_processes_is_reported_everywhere() {
    let f = Fixture::new().await;
    let settings = PresenceSettings {
        bucket: crate::fleet::BUCKET.into(),
        interval: Duration::from_millis(50),
        replicas: 1,
    };
    let mut reporters = Vec::new();
    let mut nodes = Vec::new();
    for copy in ["one.json", "two.json"] {
        let node = copy_of(&f, "web-1", copy).await;
        reporters.push(report(&f, &settings, &node).await);
        nodes.push(node);
    }
    eventually(LIMIT, "both processes see the other", || {
        nodes.iter().all(|n| n.duplicate().is_some())
    })
    .await;
    let evidence = nodes[0].duplicate().unwrap();
    assert!(evidence.contains("another process"), "{evidence}");

    let api = Api::serve(&f, &nodes[0]).await;
    let (_, body) = api.json("/status").await;
    assert!(body["duplicate_node_id"].is_string(), "{body}");
    assert_eq!(api.metrics().await["invalog_duplicate_node_id"], 1.0);
    let (status, _) = api.json("/readyz").await;
    assert_eq!(status, 200, "readiness is about this process's caches");

    let fleet = invalog::fleet::fleet_status(&f.js, &f.log, &settings.bucket, LIMIT)
        .await
        .unwrap();
    let row = fleet
        .nodes
        .iter()
        .find(|n| n.report.node == "web-1")
        .unwrap();
    assert!(row.report.duplicate.is_some() && !row.healthy(), "{row:?}");
    let config = crate::fleet::status_config(f.dir.path(), &[f.server.url()], "");
    let (code, out, err) = crate::fleet::invalog_status(&config, &[]).await;
    assert_eq!(code, 5, "{out}{err}");
    assert!(
        out.contains("DUPLICATE") && out.contains("duplicate node id"),
        "{out}"
    );
    for reporter in reporters {
        reporter.stop().await.unwrap();
    }
}

/// With KV checkpoints, a second process with the same id never writes
/// over the first one's stored sequence: its compare-and-set fails, and it
/// reports the duplicate instead of retrying silently.
#[tokio::test]
async fn a_second_process_does_not_fight_over_the_kv_checkpoint() {
    let f = Fixture::new().await;
    let mut copies = Vec::new();
    for _ in 0..2 {
        let store = invalog::KvStore::open(&f.js, "truth_checkpoints", 1, "web-1".parse().unwrap());
        let node = start_node_with_store(
            &f,
            "web-1",
            Arc::new(Recorder::default()),
            |_| {},
            store.await.unwrap(),
        )
        .await;
        within(LIMIT, node.ready()).await.unwrap();
        copies.push(node);
    }
    let (first, second) = (&copies[0], &copies[1]);
    let last = publish_each(&f, 5).await;
    eventually(LIMIT, "one of them reports the duplicate", || {
        first.duplicate().is_some() || second.duplicate().is_some()
    })
    .await;
    let (winner, loser) = if second.duplicate().is_some() {
        (first, second)
    } else {
        (second, first)
    };
    eventually(LIMIT, "the winner stores what it applied", || {
        winner.position().stored == last
    })
    .await;
    assert!(loser.stats().checkpoint_errors > 0);
    assert!(loser
        .duplicate()
        .unwrap()
        .contains("configured on two nodes"));
    let kv = f.js.get_key_value("truth_checkpoints").await.unwrap();
    let stored =
        invalog::checkpoint::decode_checkpoint(&kv.get("web-1").await.unwrap().unwrap()).unwrap();
    assert_eq!(stored.sequence, last);
}

/// A KV checkpoint write that reached the server but whose answer was lost
/// (the server froze past the request timeout) is recognised as the
/// store's own: later writes go on instead of failing as a conflict with
/// "another process" forever.
#[tokio::test]
async fn a_kv_checkpoint_write_whose_answer_was_lost_does_not_block_later_ones() {
    use invalog::{Checkpoint, CheckpointStore, KvStore};
    let mut f = Fixture::new().await;
    let client = async_nats::connect(f.server.url()).await.unwrap();
    let mut js = async_nats::jetstream::new(client);
    js.set_timeout(Duration::from_millis(300));
    let store = KvStore::open(&js, "truth_lost_ack", 1, "web-1".parse().unwrap())
        .await
        .unwrap();
    assert_eq!(store.load().await.unwrap(), None);
    let created = std::time::SystemTime::now();
    let at = |sequence| Checkpoint {
        stream: "INVALOG".into(),
        stream_created: created,
        sequence,
    };
    store.save(&at(1)).await.unwrap();

    f.server.freeze().unwrap();
    let lost = store.save(&at(2)).await;
    f.server.thaw().unwrap();
    assert!(lost.is_err(), "the answer cannot come while frozen");
    let kv = f.js.get_key_value("truth_lost_ack").await.unwrap();
    let mut landed = 0;
    for _ in 0..100 {
        let bytes = kv.get("web-1").await.unwrap().unwrap();
        landed = invalog::checkpoint::decode_checkpoint(&bytes)
            .unwrap()
            .sequence;
        if landed == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(landed, 2, "the write reached the server after the thaw");

    store
        .save(&at(3))
        .await
        .expect("not a conflict: the stored value is our own");
    let bytes = kv.get("web-1").await.unwrap().unwrap();
    assert_eq!(
        invalog::checkpoint::decode_checkpoint(&bytes)
            .unwrap()
            .sequence,
        3
    );
}

/// A pipelined publish whose middle message is refused still reports the
/// messages sent after it that the stream stored (with their token), not
/// only those before.
#[tokio::test]
async fn a_publish_that_fails_part_way_lists_everything_stored() {
    use invalog::{Instruction, PublishErrorKind, Publisher, PublisherSettings};
    let mut log = invalog::LogSettings {
        max_message_size: 4096,
        ..Default::default()
    };
    let f = Fixture::with_log(log.clone()).await;
    // A publisher that believes the limit is larger: the server refuses.
    log.max_message_size = 1024 * 1024;
    let p = Publisher::new(
        f.js.clone(),
        log,
        PublisherSettings::new("test"),
        crate::support::defs(),
    );
    let mut work = p.unit_of_work();
    work.add("content", vec![Instruction::RefreshIds(vec![1])]);
    work.add(
        "media",
        vec![Instruction::RefreshKeys(vec!["x".repeat(8000)])],
    );
    work.add("other", vec![Instruction::RefreshIds(vec![3])]);
    let error = work.commit().await.unwrap_err();
    assert_eq!(error.kind, PublishErrorKind::Rejected, "{error}");
    let stored: Vec<&str> = error
        .published
        .iter()
        .map(|m| m.refresher.as_str())
        .collect();
    assert_eq!(stored, ["content", "other"], "{error}");
    assert!(error.incarnation.is_some());
}
