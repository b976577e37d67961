//! The failure policy of the spec's "Applying": a failing refresher is
//! retried with backoff; if it keeps failing, the node escalates to a
//! refresh-all of that refresher; if that fails too, the node stops
//! advancing, reports itself `Stalled` (unready) and keeps retrying the
//! refresh-all until it succeeds or the node shuts down. Nothing is skipped.
//!
//! Escalations are coalesced ([`EscalationCovers`]): a refresh-all covers
//! every message of its refresher stored before it began (its data change
//! was committed before it was published), so a later escalation of a
//! message stored by then needs no refresh-all of its own — as long as no
//! message of that refresher was applied in between (applying an older
//! message after the refresh-all may have undone part of it). Such an
//! escalation is counted (`escalations_coalesced`), never skipped silently.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering::Relaxed;

use super::position::PositionExt;
use super::run::{Flow, Runner};
use super::status::{NodeState, Stats};
use crate::model::{Batch, RefresherName};
use crate::refresher::{BatchContext, Hosted};
use crate::token::Incarnation;

/// Per refresher, what its last successful escalation's refresh-all
/// covers: the stream incarnation and the stream's last sequence read just
/// before the refresh-all began. Forgotten when a message of the refresher
/// is applied, or when an escalation's refresh-all starts without a fresh
/// reading. Owned by the runner.
#[derive(Debug, Default)]
pub(super) struct EscalationCovers(BTreeMap<RefresherName, (Incarnation, u64)>);

impl EscalationCovers {
    fn covers(&self, refresher: &RefresherName, incarnation: Incarnation, sequence: u64) -> bool {
        self.0
            .get(refresher)
            .is_some_and(|&(of, through)| of == incarnation && sequence <= through)
    }

    pub(super) fn set(&mut self, refresher: &RefresherName, cover: Option<(Incarnation, u64)>) {
        match cover {
            Some(cover) => self.0.insert(refresher.clone(), cover),
            None => self.0.remove(refresher),
        };
    }
}

impl Runner {
    /// Applies a decoded batch with retries, escalating when they run out.
    pub(super) async fn apply_batch(
        &mut self,
        hosted: &Hosted,
        batch: &Batch,
        sequence: u64,
    ) -> Flow {
        let policy = self.settings.retry;
        let mut failures = 0;
        loop {
            let context = BatchContext { sequence, batch };
            let error = match hosted.apply_guarded(context).await {
                Ok(()) => {
                    self.escalation_covers.set(&hosted.def.name, None);
                    self.count_applied(hosted, batch);
                    return Flow::Continue;
                }
                Err(error) => error,
            };
            failures += 1;
            if error.is_permanent() || failures >= policy.attempts {
                tracing::error!(
                    node = %self.settings.node_id, sequence, refresher = %hosted.def.name,
                    batch = %batch.id, %error, attempts = failures,
                    "refresher failed; escalating to refresh_all"
                );
                return self.escalate(hosted, sequence).await;
            }
            Stats::bump(&self.stats().retries);
            tracing::warn!(
                node = %self.settings.node_id, sequence, refresher = %hosted.def.name,
                %error, attempt = failures, "refresher failed; retrying"
            );
            if !self.pause(policy.backoff(failures)).await {
                return Flow::Stop;
            }
        }
    }

    /// Replaces a message that cannot be applied by a refresh-all of its
    /// refresher, unless the last one already covers it (see the module
    /// documentation).
    pub(super) async fn escalate(&mut self, hosted: &Hosted, sequence: u64) -> Flow {
        let name = &hosted.def.name;
        if let Some(guard) = &self.shared.fill {
            guard.record_all(sequence, name);
        }
        let incarnation = self.cursor.incarnation();
        if self.escalation_covers.covers(name, incarnation, sequence) {
            Stats::bump(&self.stats().escalations_coalesced);
            Stats::bump(&self.stats().applied_messages);
            tracing::debug!(node = %self.settings.node_id, sequence, refresher = %name, "escalation coalesced: the last refresh_all began after this message was stored");
            return Flow::Continue;
        }
        Stats::bump(&self.stats().escalations);
        if let Some(counters) = self.stats().per_refresher.get(name) {
            Stats::bump(&counters.escalations);
        }
        // Everything stored up to here is covered by the refresh-all.
        let cover = match self.position().await {
            Ok(position) if Incarnation::new(position.created) == incarnation => {
                Some((incarnation, position.last))
            }
            Ok(_) => None,
            Err(error) => {
                tracing::debug!(node = %self.settings.node_id, %error, "stream check before an escalation failed; it covers only its own message");
                None
            }
        };
        self.escalation_covers.set(name, None);
        if self.refresh_all_until_done(hosted, sequence).await {
            self.escalation_covers.set(name, cover);
            Stats::bump(&self.stats().applied_messages);
            Flow::Continue
        } else {
            Flow::Stop
        }
    }

    /// Runs `refresh_all` until it succeeds; after `attempts` failures the
    /// node reports `Stalled`. False when shut down before success.
    pub(super) async fn refresh_all_until_done(&mut self, hosted: &Hosted, sequence: u64) -> bool {
        let policy = self.settings.retry;
        let mut failures = 0;
        let before = self.shared.position.borrow().state.clone();
        loop {
            let error = match hosted.refresh_all_guarded().await {
                Ok(()) => {
                    if failures >= policy.attempts {
                        tracing::info!(node = %self.settings.node_id, refresher = %hosted.def.name, "refresh_all succeeded; no longer stalled");
                        self.shared.position.set_state(before);
                    }
                    return true;
                }
                Err(error) => error,
            };
            failures += 1;
            Stats::bump(&self.stats().retries);
            if failures >= policy.attempts {
                tracing::error!(
                    node = %self.settings.node_id, sequence, refresher = %hosted.def.name, %error,
                    "refresh_all keeps failing; node is stalled (not advancing, not ready)"
                );
                self.shared.position.set_state(NodeState::Stalled {
                    refresher: hosted.def.name.clone(),
                    sequence,
                    error: error.to_string(),
                });
            }
            if !self.pause(policy.backoff(failures)).await {
                return false;
            }
            if failures >= policy.attempts {
                // Stalled: keep the lag figures (metrics, fencing) current.
                if let Err(e) = self.position().await {
                    tracing::debug!(node = %self.settings.node_id, error = %e, "stream check failed while stalled");
                }
            }
        }
    }

    pub(super) fn count_applied(&self, hosted: &Hosted, batch: &Batch) {
        let units = batch.units() as u64;
        let stats = self.stats();
        Stats::bump(&stats.applied_messages);
        stats.applied_units.fetch_add(units, Relaxed);
        if let Some(counters) = stats.per_refresher.get(&hosted.def.name) {
            Stats::bump(&counters.messages);
            counters.units.fetch_add(units, Relaxed);
        }
    }
}
