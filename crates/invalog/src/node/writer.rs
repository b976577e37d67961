//! The checkpoint writer: a task beside the node's runner that stores the
//! applied sequence, so a slow store (an fsync of the checkpoint file, a KV
//! round trip) never holds up applying the next message. The runner hands
//! it the latest checkpoint; the writer stores the newest one it has, so a
//! stored sequence is always one the runner had applied. Failed writes are
//! counted and retried with the newest checkpoint. Dropping the writer (the
//! runner task aborted: a crash) aborts it without a last write.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::task::AbortOnDropHandle;

use super::position::PositionExt;
use super::status::Stats;
use super::Shared;
use crate::checkpoint::{Checkpoint, CheckpointError, CheckpointStore};
use crate::model::NodeId;
use crate::token::Incarnation;

/// Hands checkpoints to the writer task.
pub(super) struct CheckpointWriter {
    latest: watch::Sender<Option<Checkpoint>>,
    task: AbortOnDropHandle<()>,
}

impl CheckpointWriter {
    /// Starts the writer task; `retry_after` is the pause after a failed write.
    pub(super) fn spawn(
        store: Box<dyn CheckpointStore>,
        shared: Arc<Shared>,
        node: NodeId,
        retry_after: Duration,
    ) -> Self {
        let (latest, pending) = watch::channel(None);
        let task = tokio::spawn(write_loop(store, shared, node, retry_after, pending));
        Self {
            latest,
            task: AbortOnDropHandle::new(task),
        }
    }

    /// Asks for `checkpoint` to be stored; returns at once. A checkpoint
    /// not yet written is replaced by a newer one.
    pub(super) fn submit(&self, checkpoint: Checkpoint) {
        self.latest.send_replace(Some(checkpoint));
    }

    /// Writes the last submitted checkpoint (one attempt if earlier ones
    /// failed) and stops the task.
    pub(super) async fn finish(self) {
        let Self { latest, task } = self;
        drop(latest);
        if let Err(e) = task.await {
            tracing::error!(error = %e, "checkpoint writer failed");
        }
    }
}

async fn write_loop(
    store: Box<dyn CheckpointStore>,
    shared: Arc<Shared>,
    node: NodeId,
    retry_after: Duration,
    mut pending: watch::Receiver<Option<Checkpoint>>,
) {
    // `changed` reports a value sent before the sender was dropped, then Err.
    while pending.changed().await.is_ok() {
        loop {
            let Some(checkpoint) = pending.borrow_and_update().clone() else {
                break;
            };
            match store.save(&checkpoint).await {
                Ok(()) => {
                    shared.position.stored(
                        Incarnation::new(checkpoint.stream_created),
                        checkpoint.sequence,
                    );
                    break;
                }
                Err(e @ CheckpointError::Conflict { .. }) => {
                    // Never overwrite another process's checkpoint.
                    Stats::bump(&shared.stats.checkpoint_errors);
                    shared.report_duplicate(e.to_string());
                }
                Err(e) => {
                    Stats::bump(&shared.stats.checkpoint_errors);
                    tracing::warn!(%node, error = %e, sequence = checkpoint.sequence, "cannot store the applied sequence; will retry");
                }
            }
            // Once the runner has stopped, only a newer checkpoint gets one
            // more attempt; otherwise retry the newest after a pause.
            if pending.has_changed().is_err() {
                if pending.borrow().as_ref() == Some(&checkpoint) {
                    return;
                }
                continue;
            }
            tokio::time::sleep(retry_after).await;
        }
    }
}
