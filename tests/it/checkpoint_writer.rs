//! The checkpoint is written beside the apply loop: a store that hangs or
//! fails never holds up applying, failed writes are counted and retried, and
//! shutdown still stores the last applied sequence.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use invalog::checkpoint::{Checkpoint, CheckpointError, CheckpointStore};
use invalog::node::NewNodePolicy;
use invalog::{FileStore, Node, NodeId, NodeSettings, Registry};
use tokio::sync::watch;

use crate::agent_support::publish_each;
use crate::support::{defs, eventually, within, Fixture, Recorder};

/// A file store whose writes wait while `open` is false and fail while
/// `failing` is true.
struct GatedStore {
    inner: FileStore,
    open: watch::Receiver<bool>,
    failing: Arc<AtomicBool>,
}

#[async_trait]
impl CheckpointStore for GatedStore {
    async fn load(&self) -> Result<Option<Checkpoint>, CheckpointError> {
        self.inner.load().await
    }

    async fn save(&self, checkpoint: &Checkpoint) -> Result<(), CheckpointError> {
        let mut open = self.open.clone();
        open.wait_for(|open| *open).await.expect("gate kept");
        if self.failing.load(Ordering::SeqCst) {
            return Err(CheckpointError::Io {
                path: self.inner.path().to_owned(),
                source: std::io::Error::other("disk full (injected)"),
            });
        }
        self.inner.save(checkpoint).await
    }

    fn describe(&self) -> String {
        "gated test store".into()
    }
}

#[tokio::test]
async fn a_hanging_or_failing_store_never_holds_up_applying() {
    let f = Fixture::new().await;
    let (gate, open) = watch::channel(false);
    let failing = Arc::new(AtomicBool::new(false));
    let path = f.checkpoint_path("gated");
    let store = GatedStore {
        inner: FileStore::new(&path),
        open,
        failing: failing.clone(),
    };
    let content = Arc::new(Recorder::default());
    let mut registry = Registry::new();
    registry
        .register_arc(defs()[0].clone(), content.clone())
        .unwrap();
    let mut settings = NodeSettings::new(NodeId::new("gated").unwrap());
    settings.new_node = NewNodePolicy::ReplayAll;
    settings.flush_interval = Duration::from_millis(20);
    settings.retry.max_backoff = Duration::from_millis(20);
    let node = Node::start(f.js.clone(), f.log.clone(), settings, registry, store)
        .await
        .expect("node starts");

    // Every write hangs; applying goes on regardless.
    let last = publish_each(&f, 20).await;
    within(Duration::from_secs(10), node.wait_applied(last))
        .await
        .expect("node running");
    assert_eq!(
        content.calls().len(),
        20,
        "all applied while the store hangs"
    );
    assert_eq!(node.position().stored, 0, "nothing stored yet");

    // Writes fail: counted, retried, the stored sequence does not move.
    failing.store(true, Ordering::SeqCst);
    gate.send_replace(true);
    eventually(Duration::from_secs(10), "failed writes counted", || {
        node.stats().checkpoint_errors >= 2
    })
    .await;
    assert_eq!(node.position().stored, 0);

    // The store recovers: the newest applied sequence is stored.
    failing.store(false, Ordering::SeqCst);
    eventually(Duration::from_secs(10), "stored after recovery", || {
        node.position().stored == last
    })
    .await;
    let more = f
        .publisher()
        .refresh_ids("content", &[99])
        .await
        .unwrap()
        .sequence()
        .unwrap();
    within(Duration::from_secs(10), node.wait_applied(more))
        .await
        .expect("node running");
    node.shutdown().await.unwrap();
    let stored = FileStore::new(&path).load().await.unwrap().unwrap();
    assert_eq!(stored.sequence, more, "shutdown stores the last applied");
}
