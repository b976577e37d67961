//! What a replay does with each message leaving the window: skip it
//! (refresher filter), report it as superseded (dry run), apply or
//! classify it, count it, report it; missing ranges are counted and
//! reported in their place.

use std::time::Instant;

use super::window::Released;
use super::{Mode, Outcome, ReplayEvent, ReplayRequest, ReplaySummary};
use crate::history::Entry;
use crate::model::PROBE_REFRESHER;
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
pub(super) fn applies(mode: Mode<'_>, entry: &Entry) -> bool {
    let (Mode::DryRun { hosted, node, .. }, Ok(batch)) = (mode, &entry.batch) else {
        return false;
    };
    let name = batch.refresher.name.as_str();
    let hosted = hosted.is_none_or(|names| names.iter().any(|n| n.as_str() == name));
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

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;
    use crate::model::{Batch, Instruction, NodeId, Provenance, RefresherDef, RefresherName};
    use crate::wire::DecodeError;

    fn entry(refresher: &str, origin: &str, at_origin: bool) -> Entry {
        Entry {
            sequence: 1,
            subject: format!("invalog.{refresher}"),
            stored_at: SystemTime::now(),
            batch: Ok(Batch {
                id: uuid::Uuid::new_v4(),
                origin: origin.into(),
                published_at: SystemTime::now(),
                refresher: RefresherDef::new(uuid::Uuid::nil(), refresher).unwrap(),
                provenance: Provenance::default(),
                applied_at_origin: at_origin,
                instructions: vec![Instruction::RefreshAll],
            }),
        }
    }

    #[test]
    fn only_messages_the_node_would_apply_take_part_in_superseding() {
        let hosted = [RefresherName::new("content").unwrap()];
        let web_1 = NodeId::new("web-1").unwrap();
        let dry = |hosted| Mode::DryRun {
            hosted,
            lookahead: 10,
            node: Some(&web_1),
        };
        let known = dry(Some(&hosted[..]));
        assert!(applies(known, &entry("content", "cms", false)));
        // Another node's instance refresh is applied here; our own is not.
        assert!(applies(known, &entry("content", "web-2", true)));
        assert!(!applies(known, &entry("content", "web-1", true)));
        assert!(!applies(known, &entry("media", "cms", false)));
        // Without a hosted list every refresher counts, canaries never.
        assert!(applies(dry(None), &entry("media", "cms", false)));
        assert!(!applies(dry(None), &entry(PROBE_REFRESHER, "cms", false)));
        let mut undecodable = entry("content", "cms", false);
        undecodable.batch = Err(DecodeError::MissingVersion);
        assert!(!applies(known, &undecodable));
        // A replay applies everything; nothing is superseded.
        let registry = crate::refresher::Registry::new();
        assert!(!applies(
            Mode::Apply(&registry),
            &entry("content", "cms", false)
        ));
    }
}
