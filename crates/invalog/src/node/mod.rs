//! The node replayer: the consumer beside each node. It reads the node's
//! stored sequence and the stream, decides how to start (`plan`), applies
//! messages in stream order through the hosted refreshers with the failure
//! policy of the spec (`apply`), stores the applied sequence (`run`), and
//! reports readiness and counters (`status`).
//!
//! A [`Node`] handle owns its task: [`Node::shutdown`] finishes the batch in
//! hand and flushes the stored sequence; dropping the handle aborts the task
//! without flushing, exactly like a crash (some messages are then applied
//! again on the next start, none is lost).

mod apply;
mod canary;
mod check;
mod consume;
mod cursor;
mod direct;
mod fill;
mod group;
mod plan;
mod position;
mod pull;
mod run;
mod slots;
mod status;
mod window;
mod writer;

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub use fill::{FillKey, FillTicket, FillVerdict, Unknowable};
pub use plan::{plan_start, NewNodePolicy, StartPlan};
pub use position::Position;
pub use slots::{ColdBootLimit, DEFAULT_BUCKET as COLD_BOOT_BUCKET};
pub use status::{
    ColdBootReason, HistogramSnapshot, NodeState, Readiness, RefresherCounters, RefresherSnapshot,
    Stats, StatsSnapshot, APPLY_BUCKETS,
};

use crate::checkpoint::{CheckpointError, CheckpointStore};
use crate::model::NodeId;
use crate::refresher::Registry;
use crate::stream::{LogSettings, StreamPosition};
use crate::token::{Incarnation, ReadToken, TokenCheck};
use position::PositionExt;

/// How a failing refresher is retried before escalating.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts before escalating to refresh-all (and refresh-all attempts
    /// before reporting the node stalled).
    pub attempts: u32,
    /// First backoff; doubles after each failure.
    pub initial_backoff: Duration,
    /// Longest backoff (also the pace of retries while stalled).
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 3,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
        }
    }
}

impl RetryPolicy {
    /// The backoff after `failures` failures (1-based).
    pub fn backoff(&self, failures: u32) -> Duration {
        let factor = 2u32.saturating_pow(failures.saturating_sub(1));
        self.initial_backoff
            .saturating_mul(factor)
            .min(self.max_backoff)
    }
}

/// Fencing: when a node that is caught up still reports itself unready,
/// rather than serve stale data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FenceSettings {
    /// Unready when the stream has not been reachable for longer than this.
    pub max_disconnected: Option<Duration>,
    /// Unready when more than this many messages wait to be applied.
    pub max_lag_messages: Option<u64>,
}

/// A node's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSettings {
    /// The node's stable identity.
    pub node_id: NodeId,
    /// What a node without a stored sequence does.
    pub new_node: NewNodePolicy,
    /// Cold boot instead of replaying when more messages than this are
    /// pending at start; `None` always replays what is retained.
    pub cold_boot_threshold: Option<u64>,
    /// Failure policy.
    pub retry: RetryPolicy,
    /// How often the applied sequence is stored (and the stream checked).
    pub flush_interval: Duration,
    /// When to report unready although caught up.
    pub fence: FenceSettings,
    /// How many nodes of the fleet may cold boot at once (`slots`).
    pub cold_boot: ColdBootLimit,
    /// Keep the stale-fill guard with a window of this many recent
    /// (refresher, unit) entries (24 bytes each), for
    /// [`Node::fill_if_fresh`]; `None` (the default) keeps none.
    pub fill_guard_window: Option<usize>,
    /// While catching up, how many delivered messages the node looks
    /// ahead of the one it applies: a message followed within this window
    /// by a refresh-all of its refresher is superseded (counted in
    /// [`StatsSnapshot::superseded`], not applied). 0 turns superseding
    /// off. A decoded message is held for each slot (about 300 bytes for
    /// one instruction).
    pub catch_up_lookahead: usize,
}

/// [`NodeSettings::catch_up_lookahead`]'s default.
pub const DEFAULT_CATCH_UP_LOOKAHEAD: usize = 1000;

impl NodeSettings {
    /// Defaults for a node id.
    pub fn new(node_id: NodeId) -> Self {
        Self {
            node_id,
            new_node: NewNodePolicy::default(),
            cold_boot_threshold: None,
            retry: RetryPolicy::default(),
            flush_interval: Duration::from_secs(1),
            fence: FenceSettings::default(),
            cold_boot: ColdBootLimit::default(),
            fill_guard_window: None,
            catch_up_lookahead: DEFAULT_CATCH_UP_LOOKAHEAD,
        }
    }
}

/// Why a node could not start, or stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// The stream could not be read.
    #[error("stream `{stream}`: {message}")]
    Stream {
        /// The stream.
        stream: String,
        /// What failed.
        message: String,
    },
    /// The stored sequence could not be read.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// The node was shut down, or its task ended.
    #[error("node `{0}` is stopped")]
    Stopped(NodeId),
    /// A read-your-writes token of an older incarnation of the stream than
    /// the one the node follows: the stream was deleted and created again
    /// since the token was issued.
    #[error("token {token} belongs to an older incarnation of the stream than the one node `{node}` follows (created {current}); the stream was created again since, so the token proves nothing: the node refreshed its caches fully when it moved to the new stream")]
    OtherIncarnation {
        /// The node.
        node: NodeId,
        /// The token.
        token: ReadToken,
        /// The incarnation the node follows.
        current: String,
    },
}

/// What the handle and the task share.
pub(crate) struct Shared {
    node_id: NodeId,
    fence: FenceSettings,
    /// The one source of truth for where the node is (`position`).
    position: watch::Sender<Position>,
    stats: Stats,
    /// Evidence that another process runs with this node id, once seen.
    duplicate: std::sync::Mutex<Option<String>>,
    /// The stale-fill guard, when enabled (`fill`).
    pub(crate) fill: Option<fill::FillGuard>,
}

impl Shared {
    /// Records evidence of another process with this node id: logged at
    /// ERROR the first time, shown by every surface from then on.
    pub(crate) fn report_duplicate(&self, evidence: String) {
        let mut duplicate = self.duplicate.lock().unwrap();
        if duplicate.is_none() {
            tracing::error!(node = %self.node_id, %evidence, "another process uses this node id: give every node its own `node.id`");
        }
        *duplicate = Some(evidence);
    }
}

/// What `/status`, `/readyz`, `/metrics` and presence show about a node,
/// taken at one moment by [`Node::snapshot`].
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Where the node is.
    pub position: Position,
    /// Whether it serves, judged from `position`.
    pub readiness: Readiness,
    /// Its counters.
    pub stats: StatsSnapshot,
    /// Evidence that another process uses the same node id (see
    /// [`Node::duplicate`]).
    pub duplicate: Option<String>,
}

/// A running node replayer. See the module docs.
pub struct Node {
    shared: Arc<Shared>,
    cancel: CancellationToken,
    task: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Node {
    /// Reads the stored sequence and the stream, decides how to start, and
    /// starts applying in a background task owned by the returned handle.
    /// Errors here are configuration or connection problems; everything
    /// after start is retried by the task.
    pub async fn start(
        js: jetstream::Context,
        log: LogSettings,
        settings: NodeSettings,
        registry: Registry,
        store: impl CheckpointStore,
    ) -> Result<Node, NodeError> {
        let stream_error = |message: String| NodeError::Stream {
            stream: log.stream.clone(),
            message,
        };
        let mut stream = js.get_stream(&log.stream).await.map_err(|e| {
            stream_error(format!(
                "cannot open it: {e}; provision it first (`invalog stream provision`)"
            ))
        })?;
        let info = stream
            .info()
            .await
            .map_err(|e| stream_error(format!("cannot read its info: {e}")))?;
        let position = StreamPosition::of(info);
        let stored = store.load().await?;
        let plan = plan_start(
            stored.as_ref(),
            &log.stream,
            position,
            settings.new_node,
            settings.cold_boot_threshold,
        );
        tracing::info!(
            node = %settings.node_id,
            stored = ?stored.as_ref().map(|c| c.sequence),
            first = position.first,
            last = position.last,
            plan = ?plan,
            store = %store.describe(),
            "node starting"
        );
        let stats = Stats::new(registry.hosted().iter().map(|h| h.def.name.clone()));
        stats
            .last_contact_ms
            .store(status::now_ms(), std::sync::atomic::Ordering::Relaxed);
        // What is stored counts only in the incarnation it was stored in,
        // and only up to the stream's last sequence.
        let stored_here = stored
            .as_ref()
            .filter(|c| {
                c.stream == log.stream
                    && c.stream_created == position.created
                    && c.sequence <= position.last
            })
            .map_or(0, |c| c.sequence);
        let shared = Arc::new(Shared {
            node_id: settings.node_id.clone(),
            fence: settings.fence,
            position: watch::Sender::new(Position::starting(
                Incarnation::new(position.created),
                stored_here,
                position.last,
            )),
            stats,
            duplicate: std::sync::Mutex::new(None),
            fill: settings.fill_guard_window.map(|window| {
                let hosted = registry.hosted();
                fill::FillGuard::new(window, hosted.iter().map(|h| h.def.name.as_str()))
            }),
        });
        let cancel = CancellationToken::new();
        let runner = run::Runner::new(run::RunnerParts {
            js,
            log,
            settings,
            registry,
            store: Box::new(store),
            shared: shared.clone(),
            cancel: cancel.clone(),
            position,
            stored: stored_here,
        });
        let task = tokio::spawn(supervise(runner, plan, shared.clone()));
        Ok(Node {
            shared,
            cancel,
            task: std::sync::Mutex::new(Some(task)),
        })
    }

    /// The node's id.
    pub fn node_id(&self) -> &NodeId {
        &self.shared.node_id
    }

    /// Waits until the node is ready (caught up and not stalled). Errors when
    /// the node stopped.
    pub async fn ready(&self) -> Result<(), NodeError> {
        let mut rx = self.shared.position.subscribe();
        let position = rx
            .wait_for(|p| p.state.is_ready() || p.state.is_final())
            .await
            .map_err(|_| self.stopped())?
            .clone();
        if position.state.is_final() {
            return Err(self.stopped());
        }
        Ok(())
    }

    /// True when the node is ready now (caught up, not stalled, not fenced).
    pub fn is_ready(&self) -> bool {
        self.readiness().is_ready()
    }

    /// Whether the node should serve now, with the reason when not: not
    /// caught up, stalled, or fenced (the stream unreachable for longer than
    /// `fence.max_disconnected`, or more than `fence.max_lag_messages`
    /// behind).
    pub fn readiness(&self) -> Readiness {
        self.readiness_at(&self.position())
    }

    /// [`Node::readiness`] judged from a copy of the position taken before,
    /// so that what a surface shows (position and readiness) is one moment.
    pub fn readiness_at(&self, position: &Position) -> Readiness {
        if !position.state.is_ready() {
            return Readiness::NotReady(position.state.to_string());
        }
        let fence = self.shared.fence;
        if let Some(limit) = fence.max_disconnected {
            let last = self
                .shared
                .stats
                .last_contact_ms
                .load(std::sync::atomic::Ordering::Relaxed);
            let silent = Duration::from_millis(status::now_ms().saturating_sub(last));
            if silent > limit {
                return Readiness::NotReady(format!(
                    "fenced: the stream has not been reachable for {:.1}s (limit {:.1}s)",
                    silent.as_secs_f64(),
                    limit.as_secs_f64()
                ));
            }
        }
        if let Some(limit) = fence.max_lag_messages {
            let lag = position.lag();
            if lag > limit {
                return Readiness::NotReady(format!(
                    "fenced: {lag} messages behind (limit {limit})"
                ));
            }
        }
        Readiness::Ready
    }

    /// Everything a surface shows about the node, read at one moment: the
    /// position, the readiness judged from it, and the counters.
    pub fn snapshot(&self) -> Snapshot {
        let position = self.position();
        Snapshot {
            readiness: self.readiness_at(&position),
            position,
            stats: self.stats(),
            duplicate: self.duplicate(),
        }
    }

    /// Evidence that another process runs with this node's id, if any was
    /// seen: its checkpoint in the KV bucket written by someone else, or
    /// another instance's presence reports under the same key. The node
    /// goes on serving (its own caches are current: readiness is about
    /// them), but it no longer stores its sequence over the other's;
    /// `/status`, `/metrics` and `invalog status` report it.
    pub fn duplicate(&self) -> Option<String> {
        self.shared.duplicate.lock().unwrap().clone()
    }

    /// Records evidence of another process with this node id (presence
    /// uses it; see [`Node::duplicate`]).
    pub(crate) fn report_duplicate(&self, evidence: String) {
        self.shared.report_duplicate(evidence);
    }

    /// A copy of the node's position: the one source of truth for what it
    /// applied and stored, in which incarnation, its lag and its state.
    pub fn position(&self) -> Position {
        self.shared.position.borrow().clone()
    }

    /// A receiver of position changes (state changes always notify; applied
    /// sequences notify while someone waits).
    pub fn watch_position(&self) -> watch::Receiver<Position> {
        self.shared.position.subscribe()
    }

    /// The current state.
    pub fn state(&self) -> NodeState {
        self.shared.position.borrow().state.clone()
    }

    /// The last sequence applied (in the incarnation [`Node::position`] names).
    pub fn applied(&self) -> u64 {
        self.shared.position.borrow().applied
    }

    /// Waits until sequence `sequence` is applied. Prefer
    /// [`Node::wait_token`]: a bare sequence cannot tell one incarnation of
    /// the stream from another. Bound it with `tokio::time::timeout`.
    pub async fn wait_applied(&self, sequence: u64) -> Result<(), NodeError> {
        let mut rx = self.shared.position.subscribe();
        let position = rx
            .wait_for(|p| p.applied >= sequence || p.state.is_final())
            .await
            .map_err(|_| self.stopped())?
            .clone();
        if position.applied >= sequence {
            Ok(())
        } else {
            Err(self.stopped())
        }
    }

    /// Waits until the message of `token` (a publish's
    /// [`crate::Receipt::token`]) is applied: read-your-writes. Errors at once
    /// with [`NodeError::OtherIncarnation`] for a token of an older
    /// incarnation of the stream, and when the node stops. Bound it with
    /// `tokio::time::timeout`.
    pub async fn wait_token(&self, token: &ReadToken) -> Result<(), NodeError> {
        let mut rx = self.shared.position.subscribe();
        let position = rx
            .wait_for(|p| p.check(token) != TokenCheck::Pending || p.state.is_final())
            .await
            .map_err(|_| self.stopped())?
            .clone();
        match position.check(token) {
            TokenCheck::Applied => Ok(()),
            TokenCheck::OtherIncarnation => Err(NodeError::OtherIncarnation {
                node: self.shared.node_id.clone(),
                token: *token,
                current: crate::wire::format_time(position.stream_created()),
            }),
            TokenCheck::Pending => Err(self.stopped()),
        }
    }

    /// The counters.
    pub fn stats(&self) -> StatsSnapshot {
        self.shared.stats.snapshot()
    }

    /// Stops cleanly: finishes the batch in hand, stores the applied
    /// sequence, and waits for the task to end. Later calls return at once.
    pub async fn shutdown(&self) -> Result<(), NodeError> {
        self.cancel.cancel();
        let task = self.task.lock().unwrap().take();
        if let Some(task) = task {
            if let Err(e) = task.await {
                tracing::error!(node = %self.shared.node_id, error = %e, "node task failed");
            }
        }
        Ok(())
    }

    fn stopped(&self) -> NodeError {
        NodeError::Stopped(self.shared.node_id.clone())
    }
}

/// Runs the node's task; a panic anywhere in it (a refresher's panic is
/// caught earlier, as a failure of that refresher) leaves the node
/// `Failed`, not ready, instead of a dead task behind a handle that still
/// says ready.
async fn supervise(runner: run::Runner, plan: StartPlan, shared: Arc<Shared>) {
    use futures::FutureExt;
    if let Err(panic) = std::panic::AssertUnwindSafe(runner.run(plan))
        .catch_unwind()
        .await
    {
        let error = crate::refresher::panic_message(panic.as_ref());
        tracing::error!(node = %shared.node_id, %error, "node task panicked; the node is failed (not ready) until restarted");
        shared.position.set_state(NodeState::Failed { error });
    }
}

impl Drop for Node {
    /// Aborts the task without storing the applied sequence (like a crash).
    fn drop(&mut self) {
        if let Some(task) = self.task.lock().unwrap().take() {
            task.abort();
            self.shared.position.set_state(NodeState::Stopped);
        }
    }
}
