//! Fleet-wide cold-boot control: at most K nodes of one stream run a cold
//! boot's refresh-all at the same time, so a recreated stream does not send
//! every node to the database at once. A node takes one of K *slots* —
//! keys `<stream>.slot-<i>` of the KV bucket [`DEFAULT_BUCKET`] — with
//! `create` (which fails while the key holds a value), renews it with
//! `update` at its revision every third of the lease TTL while it refreshes,
//! and deletes it when done. The bucket's `max_age` is the lease TTL, so
//! the slot of a holder that died, or stalled (it stops renewing), frees
//! itself within the TTL; bucket `max_age` works on every supported server
//! (per-key TTLs need 2.11). A node that finds every slot busy waits a
//! jittered `retry_interval` (uniform in ½..1½ of it) and tries again;
//! meanwhile its state is `WaitingForColdBootSlot` (not ready).
//!
//! Each node counts slots `0..K-1` of its own K: nodes configured with
//! different K share the low slots, and the fleet runs at most the largest
//! K at once. `max_concurrent = 0` turns coordination off (no KV is used).
//! Where the bucket cannot be opened or created, or slots keep failing for
//! another reason than being taken (permissions), the node warns and cold
//! boots without coordination rather than never.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv::{self, CreateErrorKind, UpdateErrorKind};

use super::position::PositionExt;
use super::run::Runner;
use super::status::{ColdBootReason, NodeState};

/// The KV bucket of cold-boot leases unless configured otherwise (one per
/// server; keys name the stream).
pub const DEFAULT_BUCKET: &str = "invalog_cold_boot";

/// Rounds of tries in which every slot failed for another reason than
/// being taken before the node gives up coordinating.
const FAILED_ROUNDS_LIMIT: u32 = 3;

/// How many nodes of a stream's fleet may run a cold boot's refresh-all at
/// the same time, and how they agree on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColdBootLimit {
    /// Slots (K); `0` = no limit and no coordination.
    pub max_concurrent: u32,
    /// A holder's lease lasts this long unless renewed; the bucket's
    /// `max_age` when this node creates it.
    pub lease_ttl: Duration,
    /// Mean time between two tries of a waiting node (jittered ±50 %).
    pub retry_interval: Duration,
    /// The KV bucket (created if missing).
    pub bucket: String,
    /// Replicas of the bucket when this node creates it.
    pub replicas: usize,
}

impl Default for ColdBootLimit {
    fn default() -> Self {
        Self {
            max_concurrent: 2,
            lease_ttl: Duration::from_secs(30),
            retry_interval: Duration::from_millis(500),
            bucket: DEFAULT_BUCKET.to_owned(),
            replicas: 1,
        }
    }
}

/// A slot held: renewed in the background until released or dropped
/// (dropping it — a node dropped mid-refresh — stops the renewals, and the
/// slot frees itself within the lease TTL).
pub(super) struct Lease {
    store: kv::Store,
    key: String,
    revision: Arc<AtomicU64>,
    renewer: tokio::task::JoinHandle<()>,
}

impl Lease {
    /// Stops renewing and frees the slot (only if it is still this lease's).
    pub(super) async fn release(self) {
        self.renewer.abort();
        let revision = self.revision.load(Relaxed);
        if let Err(e) = self
            .store
            .delete_expect_revision(&self.key, Some(revision))
            .await
        {
            tracing::debug!(key = %self.key, error = %e, "cannot free the cold-boot slot; it expires by itself");
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.renewer.abort();
    }
}

/// Renews the lease at `revision` every `every` until aborted or lost, or
/// until the node stalls (a refresh-all that keeps failing): then the slot
/// is left to expire, so one broken node does not hold up the fleet.
async fn renew(
    store: kv::Store,
    key: String,
    holder: bytes::Bytes,
    revision: Arc<AtomicU64>,
    every: Duration,
    position: tokio::sync::watch::Receiver<super::Position>,
) {
    loop {
        tokio::time::sleep(every).await;
        if matches!(position.borrow().state, NodeState::Stalled { .. }) {
            tracing::warn!(%key, "stalled during a cold boot: giving up the cold-boot slot (it expires within the lease TTL); the refresh-all is retried without it");
            return;
        }
        match store
            .update(&key, holder.clone(), revision.load(Relaxed))
            .await
        {
            Ok(next) => revision.store(next, Relaxed),
            Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => {
                tracing::warn!(%key, "lost the cold-boot slot (its lease expired before it was renewed); the refresh goes on, and another node may refresh at the same time");
                return;
            }
            Err(e) => {
                tracing::debug!(%key, error = %e, "cannot renew the cold-boot slot; trying again")
            }
        }
    }
}

/// What one round of tries found.
enum Round {
    Took(Box<Lease>),
    /// How many slots other nodes hold (the rest failed otherwise).
    Busy(u32),
}

impl Runner {
    /// Takes a cold-boot slot, waiting (state `WaitingForColdBootSlot`) while
    /// all are busy. `Ok(None)`: proceed without one (no limit, or no KV
    /// usable: warned). `Err(())`: the node is shutting down.
    pub(super) async fn take_cold_boot_slot(
        &mut self,
        reason: &ColdBootReason,
    ) -> Result<Option<Lease>, ()> {
        let limit = self.settings.cold_boot.clone();
        if limit.max_concurrent == 0 {
            return Ok(None);
        }
        let Some(store) = self.lease_bucket(&limit).await else {
            return Ok(None);
        };
        let ttl = match store.status().await.map(|s| s.max_age()) {
            Ok(age) if !age.is_zero() => age,
            _ => {
                tracing::warn!(node = %self.settings.node_id, bucket = %limit.bucket, "the cold-boot bucket has no max_age: a crashed holder's slot would never free itself; cold booting without coordination (delete the bucket to let a node create it again)");
                return Ok(None);
            }
        };
        let mut failed_rounds = 0;
        loop {
            match self.try_slots(&store, limit.max_concurrent, ttl).await {
                Round::Took(lease) => return Ok(Some(*lease)),
                Round::Busy(0) => {
                    failed_rounds += 1;
                    if failed_rounds >= FAILED_ROUNDS_LIMIT {
                        tracing::warn!(node = %self.settings.node_id, bucket = %limit.bucket, "cannot take a cold-boot slot (see the errors above); cold booting without coordination: grant this node's user the bucket's subjects (docs/nats-connection.md), or set node.cold_boot.max_concurrent = 0");
                        return Ok(None);
                    }
                }
                Round::Busy(busy) => {
                    failed_rounds = 0;
                    self.shared
                        .position
                        .set_state(NodeState::WaitingForColdBootSlot {
                            reason: reason.clone(),
                            busy,
                            slots: limit.max_concurrent,
                        });
                }
            }
            let wait = limit.retry_interval.mul_f64(0.5 + fastrand::f64());
            if !self.pause(wait).await {
                return Err(());
            }
        }
    }

    /// Tries every slot in turn; the first free one is taken.
    async fn try_slots(&self, store: &kv::Store, slots: u32, ttl: Duration) -> Round {
        let mut busy = 0;
        for i in 0..slots {
            let key = format!("{}.slot-{i}", self.log.stream);
            let holder = bytes::Bytes::from(self.settings.node_id.as_str().to_owned());
            match store.create(&key, holder.clone()).await {
                Ok(revision) => {
                    tracing::info!(node = %self.settings.node_id, %key, "took a cold-boot slot");
                    let revision = Arc::new(AtomicU64::new(revision));
                    let renewer = tokio::spawn(renew(
                        store.clone(),
                        key.clone(),
                        holder,
                        revision.clone(),
                        ttl / 3,
                        self.shared.position.subscribe(),
                    ));
                    return Round::Took(Box::new(Lease {
                        store: store.clone(),
                        key,
                        revision,
                        renewer,
                    }));
                }
                Err(e) if e.kind() == CreateErrorKind::AlreadyExists => busy += 1,
                Err(e) => {
                    tracing::warn!(node = %self.settings.node_id, %key, error = %e, "cannot take a cold-boot slot");
                }
            }
        }
        Round::Busy(busy)
    }

    /// Opens the lease bucket, creating it if missing; `None` (warned) when
    /// neither works.
    async fn lease_bucket(&self, limit: &ColdBootLimit) -> Option<kv::Store> {
        let config = kv::Config {
            bucket: limit.bucket.clone(),
            description: "invalog: cold-boot slots (leases) of each stream's fleet".into(),
            history: 1,
            max_age: limit.lease_ttl,
            num_replicas: limit.replicas.max(1),
            ..Default::default()
        };
        match crate::bucket::open_or_create(&self.js, config).await {
            Ok(store) => Some(store),
            Err(error) => {
                tracing::warn!(node = %self.settings.node_id, bucket = %limit.bucket, %error, "cannot open or create the cold-boot bucket; cold booting without coordination: create the bucket as an administrator and grant this node's user its subjects (docs/nats-connection.md), or set node.cold_boot.max_concurrent = 0");
                None
            }
        }
    }
}
