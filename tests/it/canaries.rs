//! Canaries are publisher-controlled: whoever may publish to the log may
//! write one, with any reply subject and any number of canaries per
//! message. These attacks must not make a node publish anywhere but the
//! probe's own reply namespace (`_INVALOG.probe.<run id>`), at most
//! `MAX_CANARIES_PER_MESSAGE` times per message. `permissions` checks the
//! shipped least-privilege NATS configuration against each role.

mod permissions;

use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use invalog::node::NewNodePolicy;
use invalog::probe::{canary_json, decode_probe_reply, Canary};
use invalog::probe::{probe_refresher, PROBE_REFRESHER};
use invalog::{
    Instruction, KvStore, Node, NodeId, NodeSettings, Provenance, Publisher, PublisherSettings,
    Registry,
};

use crate::support::{defs, eventually, within, Call, Fixture, Recorder};

const LIMIT: Duration = Duration::from_secs(10);
const BUCKET: &str = "invalog_checkpoints";

/// Publishes one `_probe` message holding a canary per `(run id, reply)`.
async fn publish_canaries(f: &Fixture, canaries: &[(&str, &str)]) -> u64 {
    let publisher = Publisher::new(
        f.js.clone(),
        f.log.clone(),
        PublisherSettings::new("attacker"),
        [probe_refresher()],
    );
    let instructions = canaries
        .iter()
        .enumerate()
        .map(|(n, (probe, reply))| {
            Instruction::RefreshJson(canary_json(&Canary {
                probe: (*probe).into(),
                canary: n as u64,
                reply: (*reply).into(),
            }))
        })
        .collect();
    let receipt = publisher
        .publish(PROBE_REFRESHER, instructions, &Provenance::default())
        .await
        .unwrap();
    assert_eq!(receipt.messages.len(), 1, "one message");
    receipt.sequence().unwrap()
}

async fn content(f: &Fixture, id: i64) -> u64 {
    let receipt = f.publisher().refresh_ids("content", &[id]).await.unwrap();
    receipt.sequence().unwrap()
}

/// A node hosting `content`, its checkpoint in the KV bucket.
async fn kv_node(f: &Fixture, name: &str) -> (Node, Arc<Recorder>) {
    let id = NodeId::new(name).unwrap();
    let store = KvStore::open(&f.js, BUCKET, 1, id.clone()).await.unwrap();
    let recorder = Arc::new(Recorder::default());
    let mut registry = Registry::new();
    registry
        .register_arc(defs()[0].clone(), recorder.clone())
        .unwrap();
    let mut settings = NodeSettings::new(id);
    settings.new_node = NewNodePolicy::ReplayAll;
    settings.flush_interval = Duration::from_millis(50);
    let node = Node::start(f.js.clone(), f.log.clone(), settings, registry, store)
        .await
        .expect("node starts");
    (node, recorder)
}

#[tokio::test]
async fn a_canary_replying_to_the_nodes_checkpoint_key_does_not_touch_it() {
    let f = Fixture::new().await;
    let (node, _) = kv_node(&f, "web-1").await;
    within(LIMIT, node.ready()).await.unwrap();
    let first = content(&f, 1).await;
    within(LIMIT, node.wait_applied(first)).await.unwrap();

    publish_canaries(&f, &[("attack", "$KV.invalog_checkpoints.web-1")]).await;
    let second = content(&f, 2).await;
    within(LIMIT, node.wait_applied(second)).await.unwrap();
    eventually(LIMIT, "the node keeps storing its checkpoint", || {
        node.position().stored == second
    })
    .await;
    let stats = node.stats();
    assert_eq!(stats.checkpoint_errors, 0);
    assert_eq!(stats.probe_canaries_refused, 1);
    let bucket = f.js.get_key_value(BUCKET).await.unwrap();
    let entry = bucket.entry("web-1").await.unwrap().expect("stored");
    let stored = invalog::checkpoint::decode_checkpoint(&entry.value).expect("still a checkpoint");
    assert_eq!(stored.sequence, second);
    node.shutdown().await.expect("stores its checkpoint");

    // The restart replays from the checkpoint: no error, no cold boot.
    let (again, recorder) = kv_node(&f, "web-1").await;
    within(LIMIT, again.ready()).await.unwrap();
    assert_eq!(again.stats().cold_boots, 0);
    let third = content(&f, 3).await;
    within(LIMIT, again.wait_applied(third)).await.unwrap();
    assert_eq!(recorder.calls(), vec![Call::Ids(vec![3])]);
}

#[tokio::test]
async fn canaries_replying_to_the_log_store_nothing_on_it() {
    let f = Fixture::new().await;
    let a = f.node("web-1", NewNodePolicy::ReplayAll).await;
    a.ready().await;
    let canaries = vec![("attack", "invalog.content"); 50];
    publish_canaries(&f, &canaries).await;
    let marker = content(&f, 1).await;
    a.wait_applied(marker).await;
    // The node shares this client: after a flush the server has every
    // answer it sent, and the stream orders what it stores, so the next
    // acknowledged message shows whether anything was stored in between.
    f.js.client().flush().await.unwrap();
    let after = content(&f, 2).await;
    assert_eq!(after, marker + 1, "the node stored answers on the log");
    a.wait_applied(after).await;
    let stats = a.node.stats();
    assert_eq!(stats.probe_canaries_refused, 50);
    assert_eq!(stats.decode_errors, 0);
    assert_eq!(
        a.content.calls(),
        vec![Call::Ids(vec![1]), Call::Ids(vec![2])]
    );
}

#[tokio::test]
async fn a_node_answers_at_most_the_cap_of_canaries_per_message() {
    let f = Fixture::new().await;
    let a = f.node("web-1", NewNodePolicy::ReplayAll).await;
    a.ready().await;
    let reply = invalog::probe::reply_subject("run-1").unwrap();
    let mut answers = f.js.client().subscribe(reply.clone()).await.unwrap();
    f.js.client().flush().await.unwrap();
    let cap = invalog::probe::MAX_CANARIES_PER_MESSAGE;
    let canaries = vec![("run-1", reply.as_str()); cap + 9];
    let sequence = publish_canaries(&f, &canaries).await;
    let marker = content(&f, 1).await;
    a.wait_applied(marker).await;
    let mut received = Vec::new();
    for _ in 0..cap {
        let message = within(LIMIT, answers.next()).await.unwrap();
        received.push(decode_probe_reply(&message.payload).unwrap());
    }
    // Every answer was sent before the marker was applied; once a flush of
    // the shared client returns, any extra one is already in the channel.
    f.js.client().flush().await.unwrap();
    let extra = answers.next().now_or_never();
    assert!(extra.is_none(), "more than {cap} answers: {extra:?}");
    assert!(received
        .iter()
        .all(|r| r.node == "web-1" && r.sequence == sequence));
    let numbers: Vec<u64> = received.iter().map(|r| r.canary).collect();
    assert_eq!(
        numbers,
        (0..cap as u64).collect::<Vec<_>>(),
        "the first ones"
    );
    assert_eq!(a.node.stats().probe_canaries_refused, 9);
}
