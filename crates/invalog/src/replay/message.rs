//! What a replay does with each message leaving the window: skip it
//! (refresher filter), report it as superseded (dry run), apply or
//! classify it, count it, report it; missing ranges are counted and
//! reported in their place.

use std::time::Instant;

use super::window::Released;
use super::{Mode, Outcome, ReplayEvent, ReplayRequest, ReplaySummary};
use crate::history::Entry;
use crate::model::{NodeId, PROBE_REFRESHER};
use crate::refresher::BatchContext;

/// Reports one released item of the window (applying or classifying a
/// message); true when the replay stops there ([`ReplayRequest::stop_on_failure`]).
pub(super) async fn handle(
    mode: Mode<'_>,
    request: &ReplayRequest,
    item: Released,
    summary: &mut ReplaySummary,
    on_event: &mut impl FnMut(ReplayEvent<'_>),
) -> bool {
    let (entry, cover) = match item {
        Released::Missing { from, to } => {
            on_event(missing(summary, from, to));
            return false;
        }
        Released::Message { entry, cover } => (entry, cover),
    };
    let token = entry.subject.rsplit('.').next().unwrap_or_default();
    if !request.refreshers.is_empty() && !request.refreshers.iter().any(|n| n.as_str() == token) {
        summary.filtered_out += 1;
        return false;
    }
    let outcome = match cover {
        Some(by) => Outcome::Superseded { by },
        None => apply_one(mode, token, &entry).await,
    };
    count(summary, &outcome);
    on_event(ReplayEvent::Message {
        entry: &entry,
        outcome: &outcome,
    });
    if outcome.is_failure() && request.stop_on_failure {
        summary.stopped_at = Some(entry.sequence);
        return true;
    }
    false
}

/// Dry run: whether a node would apply the message (hosted, decodable,
/// not a canary, not its own message applied at origin), so that it can be
/// superseded and its refresh-all covers earlier ones.
pub(super) fn applies(mode: Mode<'_>, node: Option<&NodeId>, entry: &Entry) -> bool {
    let Ok(batch) = &entry.batch else {
        return false;
    };
    let name = batch.refresher.name.as_str();
    let hosted = match mode {
        Mode::DryRun {
            hosted: Some(names),
            ..
        } => names.iter().any(|n| n.as_str() == name),
        _ => true,
    };
    let own = batch.applied_at_origin && node.is_some_and(|id| batch.origin == id.as_str());
    hosted && name != PROBE_REFRESHER && !own
}

/// Records missing sequences and returns the event that reports them.
fn missing(summary: &mut ReplaySummary, from: u64, to: u64) -> ReplayEvent<'static> {
    summary.missing.push((from, to));
    ReplayEvent::Missing { from, to }
}

/// Applies (or, in a dry run, classifies) one message.
async fn apply_one(mode: Mode<'_>, token: &str, entry: &Entry) -> Outcome {
    if token == PROBE_REFRESHER {
        return Outcome::Canary;
    }
    let hosted = match mode {
        Mode::Apply(registry) => match registry.get(token) {
            Some(hosted) => Some(hosted),
            None => return Outcome::NotHosted,
        },
        Mode::DryRun {
            hosted: Some(names),
            ..
        } if !names.iter().any(|n| n.as_str() == token) => return Outcome::NotHosted,
        Mode::DryRun { .. } => None,
    };
    let Ok(batch) = &entry.batch else {
        return Outcome::Undecodable;
    };
    let Some(hosted) = hosted else {
        return Outcome::WouldApply;
    };
    let started = Instant::now();
    let context = BatchContext {
        sequence: entry.sequence,
        batch,
    };
    match hosted.handler.apply(context).await {
        Ok(()) => Outcome::Applied {
            took: started.elapsed(),
        },
        Err(error) => {
            tracing::debug!(sequence = entry.sequence, refresher = token, %error, "replay: refresher failed");
            Outcome::Failed {
                error: error.to_string(),
            }
        }
    }
}

fn count(summary: &mut ReplaySummary, outcome: &Outcome) {
    let counter = match outcome {
        Outcome::Applied { .. } => &mut summary.applied,
        Outcome::WouldApply => &mut summary.would_apply,
        Outcome::Superseded { .. } => &mut summary.superseded,
        Outcome::Failed { .. } => &mut summary.failed,
        Outcome::Undecodable => &mut summary.undecodable,
        Outcome::NotHosted => &mut summary.not_hosted,
        Outcome::Canary => &mut summary.canaries,
    };
    *counter += 1;
}
