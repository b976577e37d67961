//! Start rules and failures: retention gaps, recreated streams, malformed
//! messages, failing refreshers, crashes between apply and flush, duplicate
//! publishes.

use std::sync::atomic::Ordering;
use std::time::Duration;

use async_nats::jetstream::message::PublishMessage;
use invalog::checkpoint::CheckpointStore;
use invalog::node::{ColdBootReason, NewNodePolicy};
use invalog::{FileStore, LogSettings, NodeState};

use crate::support::{eventually, within, Call, Fixture};

#[tokio::test]
async fn a_node_behind_retention_cold_boots_before_ready() {
    let f = Fixture::with_log(LogSettings {
        max_messages: Some(10),
        ..LogSettings::default()
    })
    .await;
    let p = f.publisher();
    let a = f.node("a", NewNodePolicy::ReplayAll).await;
    a.ready().await;
    let seq = p
        .refresh_ids("content", &[1])
        .await
        .unwrap()
        .sequence()
        .unwrap();
    a.wait_applied(seq).await;
    a.node.shutdown().await.unwrap();
    for i in 0..30 {
        p.refresh_ids("content", &[100 + i]).await.unwrap();
    }
    let again = f.node("a", NewNodePolicy::ReplayAll).await;
    let mut states = again.node.watch_position();
    let cold = within(
        Duration::from_secs(10),
        states.wait_for(|p| matches!(p.state, NodeState::ColdBooting { .. })),
    )
    .await
    .unwrap()
    .state
    .clone();
    assert!(
        matches!(
            cold,
            NodeState::ColdBooting {
                reason: ColdBootReason::BehindRetention {
                    stored: 1,
                    first: 22
                }
            }
        ),
        "{cold:?}"
    );
    again.ready().await;
    assert_eq!(
        again.content.calls(),
        vec![Call::All],
        "full refresh, no stale replay"
    );
    assert_eq!(again.media.calls(), vec![Call::All]);
    assert_eq!(again.node.applied(), 31);
    assert_eq!(again.node.stats().cold_boots, 1);
    let next = p
        .refresh_ids("content", &[7])
        .await
        .unwrap()
        .sequence()
        .unwrap();
    again.wait_applied(next).await;
    assert_eq!(again.content.calls().last(), Some(&Call::Ids(vec![7])));
}

#[tokio::test]
async fn a_recreated_stream_is_answered_with_a_cold_boot() {
    let f = Fixture::new().await;
    let p = f.publisher();
    let a = f.node("a", NewNodePolicy::ReplayAll).await;
    for i in 0..5 {
        p.refresh_ids("content", &[i]).await.unwrap();
    }
    a.wait_applied(5).await;
    a.node.shutdown().await.unwrap();

    f.recreate_stream().await;
    for i in 0..7 {
        p.refresh_ids("content", &[50 + i]).await.unwrap();
    }
    let again = f.node("a", NewNodePolicy::ReplayAll).await;
    again.ready().await;
    assert_eq!(
        again.content.calls(),
        vec![Call::All],
        "never a silent skip to sequence 6"
    );
    assert_eq!(again.node.applied(), 7);

    // While running: the stream is recreated under the node's feet.
    f.recreate_stream().await;
    p.refresh_ids("content", &[77]).await.unwrap();
    eventually(
        Duration::from_secs(10),
        "node detects the new stream",
        || again.node.stats().cold_boots == 2,
    )
    .await;
    // The cold boot reads the new stream's tail and refreshes; anything
    // published before that read is covered by the refresh, not replayed.
    // Publish 78 only once the node is ready again so it must arrive as
    // an instruction.
    again.ready().await;
    assert!(
        again.content.calls().ends_with(&[Call::All])
            || again.content.calls().ends_with(&[Call::Ids(vec![77])])
    );
    let seq = p
        .refresh_ids("content", &[78])
        .await
        .unwrap()
        .sequence()
        .unwrap();
    assert_eq!(seq, 2, "sequences restarted at 1");
    // `wait_applied` compares sequence numbers, which restart with the new
    // stream; wait for the call itself.
    eventually(
        Duration::from_secs(10),
        "78 applied from the new stream",
        || again.content.calls().last() == Some(&Call::Ids(vec![78])),
    )
    .await;
    again.ready().await;
    assert_eq!(again.node.applied(), 2);
}

#[tokio::test]
async fn the_same_batch_published_twice_is_stored_once() {
    let f = Fixture::new().await;
    let batch = invalog::Batch {
        id: uuid::Uuid::now_v7(),
        origin: "retrying-service".into(),
        published_at: std::time::SystemTime::now(),
        refresher: crate::support::defs()[0].clone(),
        provenance: Default::default(),
        applied_at_origin: false,
        instructions: vec![invalog::Instruction::RefreshIds(vec![1])],
    };
    let body = invalog::wire::encode(&batch);
    let mut acks = Vec::new();
    for _ in 0..2 {
        let message = PublishMessage::build()
            .payload(body.clone().into())
            .message_id(batch.id.to_string());
        acks.push(
            f.js.send_publish("invalog.content", message)
                .await
                .unwrap()
                .await
                .unwrap(),
        );
    }
    assert_eq!(acks[0].sequence, acks[1].sequence);
    assert!(!acks[0].duplicate);
    assert!(acks[1].duplicate);
    let mut stream = f.js.get_stream(&f.log.stream).await.unwrap();
    assert_eq!(stream.info().await.unwrap().state.messages, 1);
}

#[tokio::test]
async fn a_malformed_message_is_escalated_and_what_follows_is_applied() {
    let f = Fixture::new().await;
    let a = f.node("a", NewNodePolicy::ReplayAll).await;
    a.ready().await;
    f.js.publish("invalog.content", "{not json".into())
        .await
        .unwrap()
        .await
        .unwrap();
    f.js.publish("invalog.other", "\u{0}garbage".into())
        .await
        .unwrap()
        .await
        .unwrap();
    f.js.publish("invalog.media", vec![0xff, 0xfe].into())
        .await
        .unwrap()
        .await
        .unwrap();
    let seq = f
        .publisher()
        .refresh_ids("content", &[8])
        .await
        .unwrap()
        .sequence()
        .unwrap();
    a.wait_applied(seq).await;
    assert_eq!(a.content.calls(), vec![Call::All, Call::Ids(vec![8])]);
    assert_eq!(a.media.calls(), vec![Call::All]);
    let stats = a.node.stats();
    assert_eq!(stats.decode_errors, 3);
    assert_eq!(
        stats.escalations, 2,
        "the unhosted refresher is not escalated"
    );
    assert_eq!(stats.unhosted_messages, 1);
    assert!(a.node.is_ready());
}

#[tokio::test]
async fn a_failing_refresher_is_retried_then_escalated_never_skipped() {
    let f = Fixture::new().await;
    let a = f.node("a", NewNodePolicy::ReplayAll).await;
    a.ready().await;
    let p = f.publisher();

    a.content.fail_calls.store(2, Ordering::SeqCst);
    let s1 = p
        .refresh_ids("content", &[1])
        .await
        .unwrap()
        .sequence()
        .unwrap();
    a.wait_applied(s1).await;
    assert_eq!(
        a.content.calls(),
        vec![Call::Ids(vec![1])],
        "third attempt succeeds"
    );
    assert_eq!(a.node.stats().retries, 2);

    a.content.fail_calls.store(3, Ordering::SeqCst);
    let s2 = p
        .refresh_ids("content", &[2])
        .await
        .unwrap()
        .sequence()
        .unwrap();
    a.wait_applied(s2).await;
    assert_eq!(
        a.content.calls().last(),
        Some(&Call::All),
        "escalated to refresh_all"
    );
    assert_eq!(a.node.stats().escalations, 1);

    // refresh_all fails too: the node stalls, unready, and does not advance.
    a.content.fail_calls.store(u32::MAX, Ordering::SeqCst);
    a.content.fail_refresh_all.store(u32::MAX, Ordering::SeqCst);
    let s3 = p
        .refresh_ids("content", &[3])
        .await
        .unwrap()
        .sequence()
        .unwrap();
    p.refresh_ids("content", &[4]).await.unwrap();
    let mut states = a.node.watch_position();
    within(
        Duration::from_secs(10),
        states
            .wait_for(|p| matches!(p.state, NodeState::Stalled { sequence, .. } if sequence == s3)),
    )
    .await
    .unwrap();
    assert!(!a.node.is_ready());
    let attempts = a.content.attempts.load(Ordering::SeqCst);
    eventually(
        Duration::from_secs(10),
        "keeps retrying while stalled",
        || a.content.attempts.load(Ordering::SeqCst) > attempts + 3,
    )
    .await;
    assert_eq!(
        a.node.applied(),
        s2,
        "never advances past the failing message"
    );
    // The lag keeps counting what is published while stalled.
    let s5 = p
        .refresh_ids("content", &[5])
        .await
        .unwrap()
        .sequence()
        .unwrap();
    eventually(Duration::from_secs(10), "lag grows while stalled", || {
        a.node.position().lag() == s5 - s2
    })
    .await;

    a.content.fail_calls.store(0, Ordering::SeqCst);
    a.content.fail_refresh_all.store(0, Ordering::SeqCst);
    a.wait_applied(s5).await;
    a.ready().await;
    assert_eq!(a.content.calls().last(), Some(&Call::Ids(vec![5])));
    assert!(a.content.calls().contains(&Call::Ids(vec![4])));
}

#[tokio::test]
async fn a_crash_between_apply_and_flush_reapplies_and_loses_nothing() {
    let f = Fixture::new().await;
    let a = f
        .node_with("a", |s| {
            s.new_node = NewNodePolicy::ReplayAll;
            s.flush_interval = Duration::from_secs(3600);
        })
        .await;
    a.ready().await;
    let p = f.publisher();
    for i in 1..=10 {
        p.refresh_ids("content", &[i]).await.unwrap();
    }
    a.wait_applied(10).await;
    drop(a); // a crash: no flush
    let stored = FileStore::new(f.checkpoint_path("a")).load().await.unwrap();
    assert!(
        stored.map_or(0, |c| c.sequence) < 10,
        "stored sequence never ahead of applied"
    );

    let again = f.node("a", NewNodePolicy::ReplayAll).await;
    again.wait_applied(10).await;
    let expected: Vec<Call> = (1..=10).map(|i| Call::Ids(vec![i])).collect();
    assert_eq!(
        again.content.calls(),
        expected,
        "applied again after the crash"
    );
}

#[tokio::test]
async fn a_node_cut_off_from_nats_fences_itself_then_recovers() {
    let mut f = Fixture::new().await;
    let a = f
        .node_with("a", |s| {
            s.new_node = NewNodePolicy::ReplayAll;
            s.fence.max_disconnected = Some(Duration::from_secs(1));
        })
        .await;
    a.ready().await;
    assert_eq!(a.node.readiness(), invalog::node::Readiness::Ready);
    f.server.kill().unwrap();
    eventually(Duration::from_secs(10), "fenced after 1 s without NATS", || {
        matches!(a.node.readiness(), invalog::node::Readiness::NotReady(ref why) if why.starts_with("fenced: the stream has not been reachable"))
    })
    .await;
    assert_eq!(
        a.node.state(),
        NodeState::Ready,
        "caught up, yet not serving"
    );
    f.server.restart().await.unwrap();
    let seq = within(Duration::from_secs(20), async {
        loop {
            if let Ok(receipt) = f.publisher().refresh_ids("content", &[5]).await {
                break receipt.sequence().unwrap();
            }
        }
    })
    .await;
    a.wait_applied(seq).await;
    eventually(
        Duration::from_secs(10),
        "ready again after reconnecting",
        || a.node.is_ready(),
    )
    .await;
}
