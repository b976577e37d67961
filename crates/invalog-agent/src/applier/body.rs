//! The JSON body the agent's `webhook` and `command` appliers hand to a
//! node's app (documented in `docs/appliers.md`): the batch being applied,
//! with its stream sequence and provenance, and the same instruction objects
//! as the stream's wire format. A refresh-all that the node decides on its
//! own (cold boot, escalation) uses the same body with one `refresh_all`
//! instruction, `"trigger": "refresh_all"` and nulls where no batch exists.

use serde::Serialize;
use uuid::Uuid;

use invalog::model::{Instruction, RefresherDef};
use invalog::refresher::BatchContext;
use invalog::wire::{format_time, WireInstruction};

/// Version of the applier body (its `format` field).
const APPLIER_FORMAT_VERSION: u32 = 1;

/// Why an applier body was sent (its `trigger` field).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplierTrigger {
    /// A batch of the log, at a stream sequence.
    Batch,
    /// A full refresh the node decided on (cold boot, escalation of a
    /// failing batch, an undecodable message).
    RefreshAll,
    /// Consecutive batches of the log at once (the multi-batch body).
    Batches,
}

impl ApplierTrigger {
    /// The value of the body's `trigger` field.
    pub fn as_str(self) -> &'static str {
        match self {
            ApplierTrigger::Batch => "batch",
            ApplierTrigger::RefreshAll => "refresh_all",
            ApplierTrigger::Batches => "batches",
        }
    }
}

/// Every field is always present; absent values are `null`.
#[derive(Serialize)]
pub(super) struct Body<'a> {
    format: u32,
    trigger: &'static str,
    sequence: Option<u64>,
    batch_id: Option<Uuid>,
    refresher: Refresher<'a>,
    origin: Option<&'a str>,
    published_at: Option<String>,
    actor: Option<&'a str>,
    reason: Option<&'a str>,
    trace_id: Option<&'a str>,
    instructions: Vec<WireInstruction<'a>>,
}

#[derive(Serialize)]
struct Refresher<'a> {
    id: Uuid,
    name: &'a str,
}

/// The body for one batch of the log.
pub fn encode_applier_body(context: BatchContext<'_>) -> Vec<u8> {
    serde_json::to_vec(&batch_body(context)).expect("an applier body always serializes")
}

/// The body of one batch, before serialization (also each element of the
/// multi-batch body, `super::body_group`).
pub(super) fn batch_body(context: BatchContext<'_>) -> Body<'_> {
    let batch = context.batch;
    Body {
        format: APPLIER_FORMAT_VERSION,
        trigger: ApplierTrigger::Batch.as_str(),
        sequence: Some(context.sequence),
        batch_id: Some(batch.id),
        refresher: Refresher {
            id: batch.refresher.id,
            name: batch.refresher.name.as_str(),
        },
        origin: Some(&batch.origin),
        published_at: Some(format_time(batch.published_at)),
        actor: batch.provenance.actor.as_deref(),
        reason: batch.provenance.reason.as_deref(),
        trace_id: batch.provenance.trace_id.as_deref(),
        instructions: batch.instructions.iter().map(WireInstruction).collect(),
    }
}

/// The body for a refresh-all the node decided on: one `refresh_all`
/// instruction; `sequence`, `batch_id`, `origin`, `published_at` and the
/// provenance are `null`.
pub fn encode_refresh_all_body(refresher: &RefresherDef) -> Vec<u8> {
    let body = Body {
        format: APPLIER_FORMAT_VERSION,
        trigger: ApplierTrigger::RefreshAll.as_str(),
        sequence: None,
        batch_id: None,
        refresher: Refresher {
            id: refresher.id,
            name: refresher.name.as_str(),
        },
        origin: None,
        published_at: None,
        actor: None,
        reason: None,
        trace_id: None,
        instructions: vec![WireInstruction(&Instruction::RefreshAll)],
    };
    serde_json::to_vec(&body).expect("an applier body always serializes")
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;
    use invalog::model::{Batch, Provenance};

    #[test]
    fn a_batch_body_has_every_field_in_wire_form() {
        let refresher = RefresherDef::new(Uuid::from_u128(7), "content").unwrap();
        let batch = Batch {
            id: Uuid::from_u128(9),
            origin: "web-1".into(),
            published_at: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            refresher: refresher.clone(),
            provenance: Provenance {
                actor: Some("alice".into()),
                reason: None,
                trace_id: None,
            },
            applied_at_origin: false,
            instructions: vec![
                Instruction::RefreshIds(vec![1, 2]),
                Instruction::RemoveKeys(vec!["/en/".into()]),
            ],
        };
        let body: serde_json::Value = serde_json::from_slice(&encode_applier_body(BatchContext {
            sequence: 42,
            batch: &batch,
        }))
        .unwrap();
        assert_eq!(
            body,
            serde_json::json!({
                "format": 1,
                "trigger": "batch",
                "sequence": 42,
                "batch_id": "00000000-0000-0000-0000-000000000009",
                "refresher": {"id": "00000000-0000-0000-0000-000000000007", "name": "content"},
                "origin": "web-1",
                "published_at": "2023-11-14T22:13:20Z",
                "actor": "alice",
                "reason": null,
                "trace_id": null,
                "instructions": [
                    {"kind": "refresh_ids", "ids": [1, 2]},
                    {"kind": "remove_keys", "keys": ["/en/"]}
                ]
            })
        );
        let all: serde_json::Value =
            serde_json::from_slice(&encode_refresh_all_body(&refresher)).unwrap();
        assert_eq!(all["trigger"], "refresh_all");
        assert_eq!(all["sequence"], serde_json::Value::Null);
        assert_eq!(
            all["instructions"],
            serde_json::json!([{"kind": "refresh_all"}])
        );
    }
}
