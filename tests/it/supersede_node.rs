//! Superseding while catching up (issue 14 item 3), on a real node: what a
//! later refresh-all of the same refresher covers is not applied but
//! counted; everything else is applied in log order; a ready node
//! supersedes nothing; the window bounds how far the node looks; and the
//! stored sequence never passes a superseded message before the
//! refresh-all that covers it is applied.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use invalog::checkpoint::CheckpointStore;
use invalog::model::Instruction;
use invalog::node::NewNodePolicy;
use invalog::refresher::BatchContext;
use invalog::{
    FileStore, Node, NodeId, NodeSettings, Provenance, RefreshResult, Refresher, Registry,
};
use tokio::sync::Semaphore;

use crate::support::{defs, eventually, within, Fixture};

/// What one refresher was asked to do, in the order asked, across all.
type Journal = Arc<Mutex<Vec<(String, u64, bool)>>>;

/// Records `(refresher, sequence, refreshes all)` of every batch applied;
/// a refresh-all batch first takes a permit of `gate` when there is one,
/// and a `slow` one takes 2 ms per batch.
struct Journaling {
    name: &'static str,
    journal: Journal,
    gate: Option<Arc<Semaphore>>,
    slow: bool,
}

#[async_trait]
impl Refresher for Journaling {
    async fn refresh_all(&self) -> RefreshResult {
        self.journal
            .lock()
            .unwrap()
            .push((self.name.into(), 0, true));
        Ok(())
    }

    async fn apply(&self, context: BatchContext<'_>) -> RefreshResult {
        let all = context
            .batch
            .instructions
            .iter()
            .any(|i| matches!(i, Instruction::RefreshAll));
        if let (true, Some(gate)) = (all, &self.gate) {
            gate.acquire().await.unwrap().forget();
        }
        if self.slow {
            // A slow cache: the node's loop runs (and stores) in between.
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        self.journal
            .lock()
            .unwrap()
            .push((self.name.into(), context.sequence, all));
        Ok(())
    }
}

async fn start(
    fx: &Fixture,
    name: &str,
    lookahead: usize,
    gate: Option<Arc<Semaphore>>,
) -> (Node, Journal) {
    start_with(fx, name, lookahead, gate, |_| {}).await
}

async fn start_with(
    fx: &Fixture,
    name: &str,
    lookahead: usize,
    gate: Option<Arc<Semaphore>>,
    adjust: impl FnOnce(&mut NodeSettings),
) -> (Node, Journal) {
    let journal = Journal::default();
    // Only the test with a gate needs slow media batches.
    let slow_media = gate.is_some();
    let mut registry = Registry::new();
    let d = defs();
    for (def, name) in [(&d[0], "content"), (&d[1], "media")] {
        let refresher = Journaling {
            name,
            journal: journal.clone(),
            gate: gate.clone(),
            slow: slow_media && name == "media",
        };
        registry.register(def.clone(), refresher).unwrap();
    }
    let mut settings = NodeSettings::new(NodeId::new(name).unwrap());
    settings.new_node = NewNodePolicy::ReplayAll;
    settings.flush_interval = Duration::from_millis(20);
    settings.catch_up_lookahead = lookahead;
    adjust(&mut settings);
    let store = FileStore::new(fx.checkpoint_path(name));
    let node = Node::start(fx.js.clone(), fx.log.clone(), settings, registry, store)
        .await
        .expect("node starts");
    (node, journal)
}

/// Publishes one batch per item: `Some(id)` refreshes that id, `None`
/// refreshes all.
async fn publish(fx: &Fixture, items: &[(&str, Option<i64>)]) -> Vec<u64> {
    let publisher = fx.publisher();
    let mut sequences = vec![];
    for (refresher, id) in items {
        let instruction = match id {
            Some(id) => Instruction::RefreshIds(vec![*id]),
            None => Instruction::RefreshAll,
        };
        let receipt = publisher
            .publish(refresher, vec![instruction], &Provenance::default())
            .await
            .unwrap();
        sequences.push(receipt.sequence().unwrap());
    }
    sequences
}

/// The log used by most tests: content 1–3, media 1, content refresh-all
/// (seq 5), content 4, media 2, media refresh-all (seq 8), content 5.
const LOG: [(&str, Option<i64>); 9] = [
    ("content", Some(1)),
    ("content", Some(2)),
    ("content", Some(3)),
    ("media", Some(1)),
    ("content", None),
    ("content", Some(4)),
    ("media", Some(2)),
    ("media", None),
    ("content", Some(5)),
];

fn applied(journal: &Journal) -> Vec<(String, u64, bool)> {
    journal.lock().unwrap().clone()
}

#[tokio::test]
async fn a_catching_up_node_skips_what_a_later_refresh_all_covers_and_counts_it() {
    let fx = Fixture::new().await;
    let sequences = publish(&fx, &LOG).await;
    assert_eq!(sequences, (1..=9).collect::<Vec<_>>());
    let (node, journal) = start(&fx, "n1", 1000, None).await;
    within(Duration::from_secs(10), node.ready()).await.unwrap();
    let seen = applied(&journal);
    let expected: Vec<(String, u64, bool)> = [
        ("content", 5, true),
        ("content", 6, false),
        ("media", 8, true),
        ("content", 9, false),
    ]
    .iter()
    .map(|&(n, s, a)| (n.to_string(), s, a))
    .collect();
    assert_eq!(
        seen, expected,
        "applied in log order, superseded ones left out"
    );
    let stats = node.stats();
    assert_eq!(stats.superseded, 5, "{stats:?}");
    let per = |name: &str| stats.per_refresher[&defs_name(name)].clone();
    assert_eq!((per("content").superseded, per("media").superseded), (3, 2));
    assert_eq!(stats.applied_messages, 4);
    // Every sequence is accounted for: applied or superseded.
    assert_eq!(node.position().applied, 9);
    node.shutdown().await.unwrap();
}

fn defs_name(name: &str) -> invalog::model::RefresherName {
    defs()
        .into_iter()
        .find(|d| d.name.as_str() == name)
        .unwrap()
        .name
}

#[tokio::test]
async fn a_ready_node_or_lookahead_0_applies_everything_in_order() {
    let fx = Fixture::new().await;
    // Lookahead 0: a backlog is applied whole.
    publish(&fx, &LOG).await;
    let (node, journal) = start(&fx, "off", 0, None).await;
    within(Duration::from_secs(10), node.ready()).await.unwrap();
    let sequences: Vec<u64> = applied(&journal).iter().map(|e| e.1).collect();
    assert_eq!(sequences, (1..=9).collect::<Vec<_>>());
    assert_eq!(node.stats().superseded, 0);
    // Ready: what arrives now is applied whole, whatever follows it.
    let (ready, live) = start(&fx, "ready", 1000, None).await;
    within(Duration::from_secs(10), ready.ready())
        .await
        .unwrap();
    // It caught up on the 9 messages above (superseding 5 of them).
    let (before, superseded) = (applied(&live).len(), ready.stats().superseded);
    assert_eq!(superseded, 5);
    let more = publish(&fx, &LOG).await;
    within(
        Duration::from_secs(10),
        ready.wait_applied(*more.last().unwrap()),
    )
    .await
    .unwrap();
    let after: Vec<u64> = applied(&live)[before..].iter().map(|e| e.1).collect();
    assert_eq!(after, more);
    assert_eq!(ready.stats().superseded, superseded);
    node.shutdown().await.unwrap();
    ready.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_refresh_all_beyond_the_lookahead_supersedes_nothing() {
    let fx = Fixture::new().await;
    // content 1, then 3 media messages, then content refresh-all (seq 5).
    let log = [
        ("content", Some(1)),
        ("media", Some(1)),
        ("media", Some(2)),
        ("media", Some(3)),
        ("content", None),
    ];
    publish(&fx, &log).await;
    // A lookahead of 3: with seq 1 at the head, the node sees 2–4 only.
    let (node, journal) = start(&fx, "narrow", 3, None).await;
    within(Duration::from_secs(10), node.ready()).await.unwrap();
    let sequences: Vec<u64> = applied(&journal).iter().map(|e| e.1).collect();
    assert_eq!(sequences, vec![1, 2, 3, 4, 5]);
    assert_eq!(node.stats().superseded, 0);
    node.shutdown().await.unwrap();
    // A lookahead of 4 reaches it (the same edge as `replay --dry-run`).
    let (node, journal) = start(&fx, "wide", 4, None).await;
    within(Duration::from_secs(10), node.ready()).await.unwrap();
    let sequences: Vec<u64> = applied(&journal).iter().map(|e| e.1).collect();
    assert_eq!(sequences, vec![2, 3, 4, 5]);
    assert_eq!(node.stats().superseded, 1);
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_stored_sequence_stays_below_a_superseded_message_until_its_cover_is_applied() {
    let fx = Fixture::new().await;
    // content 1, media 1, …, content 50, media 50 (1–100), content
    // refresh-all (101), 300 × media (102–401). Media batches take 2 ms,
    // so the node stores its position between them while content 1–50 wait
    // for their cover; the cover waits for a permit.
    let mut log: Vec<(&str, Option<i64>)> = vec![];
    for i in 1..=50 {
        log.push(("content", Some(i)));
        log.push(("media", Some(i)));
    }
    log.push(("content", None));
    log.extend((1..=300).map(|i| ("media", Some(i))));
    publish(&fx, &log).await;
    let gate = Arc::new(Semaphore::new(0));
    let (node, journal) = start_with(&fx, "held", 120, Some(gate.clone()), |s| {
        s.flush_interval = Duration::from_millis(1);
    })
    .await;
    eventually(
        Duration::from_secs(20),
        "content 1-50 superseded, media 1-50 applied",
        || node.stats().superseded == 50 && applied(&journal).len() == 50,
    )
    .await;
    // Stored positions were handed over between the media batches; none
    // may pass content 1 (seq 1) while its cover has not run. This checks
    // an absence, so it watches for a while (200 ms: the writer stores
    // within milliseconds, and without the hold it stored 100 at once)
    // rather than waiting for a condition.
    let store = FileStore::new(fx.checkpoint_path("held"));
    for _ in 0..10 {
        let stored = store.load().await.unwrap().map_or(0, |c| c.sequence);
        assert_eq!(
            stored, 0,
            "stored {stored} before the refresh-all at 101 ran"
        );
        assert_eq!(node.position().stored, 0);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(node.position().applied, 100);
    gate.add_permits(1);
    within(Duration::from_secs(20), node.ready()).await.unwrap();
    node.shutdown().await.unwrap();
    let stored = store.load().await.unwrap().unwrap().sequence;
    assert_eq!(stored, 401, "everything stored once the cover ran");
    assert_eq!(node.stats().superseded, 50);
}
