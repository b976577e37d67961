//! Format version 1: the serde structs that mirror `docs/wire-format.md`
//! field by field, and their conversion to and from the model.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::model::{Batch, Instruction, InvalidName, Provenance, RefresherDef, RefresherName};

#[derive(Serialize, Deserialize)]
struct Envelope {
    format: u32,
    batch_id: Uuid,
    origin: String,
    #[serde(with = "time::serde::rfc3339")]
    published_at: OffsetDateTime,
    refresher: Refresher,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    actor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    trace_id: Option<String>,
    #[serde(default, skip_serializing_if = "is_false")]
    applied_at_origin: bool,
    instructions: Vec<Wire>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

#[derive(Serialize, Deserialize)]
struct Refresher {
    id: Uuid,
    name: String,
}

/// An instruction in format 1. Written through [`WireRef`]; read by the
/// hand-written `Deserialize` in `v1_instruction` (tag `kind`, no unknown
/// fields, in one pass).
#[derive(Serialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub(super) enum Wire {
    RefreshAll {},
    RefreshIds { ids: Vec<i64> },
    RefreshUuids { uuids: Vec<Uuid> },
    RefreshKeys { keys: Vec<String> },
    RemoveIds { ids: Vec<i64> },
    RemoveUuids { uuids: Vec<Uuid> },
    RemoveKeys { keys: Vec<String> },
    RefreshJson { json: serde_json::Value },
    RefreshPayloads { payloads: Vec<serde_json::Value> },
}

pub(super) enum Failure {
    Serde(serde_json::Error),
    Name(InvalidName),
}

#[derive(Deserialize)]
struct Probe {
    format: Option<serde_json::Value>,
}

/// Reads just the `format` field, if the body is a JSON object that has a
/// numeric one.
pub(super) fn probe_version(body: &[u8]) -> Option<u64> {
    serde_json::from_slice::<Probe>(body).ok()?.format?.as_u64()
}

/// [`Wire`] borrowing the instruction, for encoding.
#[derive(Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum WireRef<'a> {
    RefreshAll {},
    RefreshIds { ids: &'a [i64] },
    RefreshUuids { uuids: &'a [Uuid] },
    RefreshKeys { keys: &'a [String] },
    RemoveIds { ids: &'a [i64] },
    RemoveUuids { uuids: &'a [Uuid] },
    RemoveKeys { keys: &'a [String] },
    RefreshJson { json: &'a serde_json::Value },
    RefreshPayloads { payloads: &'a [serde_json::Value] },
}

/// An instruction as the wire format writes it (`{"kind": "refresh_ids",
/// "ids": [1, 2]}`), for documents that embed instructions in that form:
/// the agent's applier body, the CLI's history lines.
#[derive(Debug, Clone, Copy)]
pub struct WireInstruction<'a>(pub &'a Instruction);

impl Serialize for WireInstruction<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        to_wire_ref(self.0).serialize(serializer)
    }
}

fn to_wire_ref(i: &Instruction) -> WireRef<'_> {
    match i {
        Instruction::RefreshAll => WireRef::RefreshAll {},
        Instruction::RefreshIds(ids) => WireRef::RefreshIds { ids },
        Instruction::RefreshUuids(uuids) => WireRef::RefreshUuids { uuids },
        Instruction::RefreshKeys(keys) => WireRef::RefreshKeys { keys },
        Instruction::RemoveIds(ids) => WireRef::RemoveIds { ids },
        Instruction::RemoveUuids(uuids) => WireRef::RemoveUuids { uuids },
        Instruction::RemoveKeys(keys) => WireRef::RemoveKeys { keys },
        Instruction::RefreshJson(json) => WireRef::RefreshJson { json },
        Instruction::RefreshPayloads(payloads) => WireRef::RefreshPayloads { payloads },
    }
}

/// Encodes with the hand-written encoder (`encoder.rs`), which writes what
/// serde_json writes for [`Envelope`].
pub(super) fn encode(batch: &Batch) -> Vec<u8> {
    let mut out = bytes::BytesMut::new();
    super::encoder::encode_into(super::encoder::BatchParts::of(batch), &mut out);
    out.into()
}

/// The same body through serde and the owned [`Envelope`]: the reference the
/// hand-written encoder is compared with.
#[cfg(test)]
pub(super) fn encode_with_serde(batch: &Batch) -> Vec<u8> {
    let owned = Envelope {
        format: super::FORMAT_VERSION,
        batch_id: batch.id,
        origin: batch.origin.clone(),
        published_at: to_offset(batch.published_at),
        refresher: Refresher {
            id: batch.refresher.id,
            name: batch.refresher.name.to_string(),
        },
        actor: batch.provenance.actor.clone(),
        reason: batch.provenance.reason.clone(),
        trace_id: batch.provenance.trace_id.clone(),
        applied_at_origin: batch.applied_at_origin,
        instructions: batch.instructions.iter().map(to_wire).collect(),
    };
    serde_json::to_vec(&owned).expect("a batch always serializes")
}

pub(super) fn decode(body: &[u8]) -> Result<Batch, Failure> {
    let envelope: Envelope = serde_json::from_slice(body).map_err(Failure::Serde)?;
    if envelope.format != super::FORMAT_VERSION {
        // Parsed as v1 by luck; the version decides.
        return Err(Failure::Serde(serde::de::Error::custom(format!(
            "format {} is not 1",
            envelope.format
        ))));
    }
    let name = RefresherName::new(envelope.refresher.name).map_err(Failure::Name)?;
    Ok(Batch {
        id: envelope.batch_id,
        origin: envelope.origin,
        published_at: SystemTime::from(envelope.published_at),
        refresher: RefresherDef {
            id: envelope.refresher.id,
            name,
        },
        provenance: Provenance {
            actor: envelope.actor,
            reason: envelope.reason,
            trace_id: envelope.trace_id,
        },
        applied_at_origin: envelope.applied_at_origin,
        instructions: envelope.instructions.into_iter().map(from_wire).collect(),
    })
}

/// Formats a time as the RFC 3339 string the wire uses (also for display).
pub fn format_time(at: SystemTime) -> String {
    to_offset(at)
        .format(&Rfc3339)
        .unwrap_or_else(|_| "invalid-time".to_owned())
}

/// Converts without panicking: times outside years 0000–9999 (which RFC 3339
/// cannot express) are clamped to that range.
pub(crate) fn to_offset(at: SystemTime) -> OffsetDateTime {
    let nanos = match at.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(after) => i128::try_from(after.as_nanos()).unwrap_or(i128::MAX),
        Err(before) => -i128::try_from(before.duration().as_nanos()).unwrap_or(i128::MAX),
    };
    let min = time::macros::datetime!(0000-01-01 00:00 UTC);
    let max = time::macros::datetime!(9999-12-31 23:59:59.999_999_999 UTC);
    OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .unwrap_or(if nanos < 0 { min } else { max })
        .clamp(min, max)
}

#[cfg(test)]
pub(super) fn to_wire(i: &Instruction) -> Wire {
    match i.clone() {
        Instruction::RefreshAll => Wire::RefreshAll {},
        Instruction::RefreshIds(ids) => Wire::RefreshIds { ids },
        Instruction::RefreshUuids(uuids) => Wire::RefreshUuids { uuids },
        Instruction::RefreshKeys(keys) => Wire::RefreshKeys { keys },
        Instruction::RemoveIds(ids) => Wire::RemoveIds { ids },
        Instruction::RemoveUuids(uuids) => Wire::RemoveUuids { uuids },
        Instruction::RemoveKeys(keys) => Wire::RemoveKeys { keys },
        Instruction::RefreshJson(json) => Wire::RefreshJson { json },
        Instruction::RefreshPayloads(payloads) => Wire::RefreshPayloads { payloads },
    }
}

pub(super) fn from_wire(w: Wire) -> Instruction {
    match w {
        Wire::RefreshAll {} => Instruction::RefreshAll,
        Wire::RefreshIds { ids } => Instruction::RefreshIds(ids),
        Wire::RefreshUuids { uuids } => Instruction::RefreshUuids(uuids),
        Wire::RefreshKeys { keys } => Instruction::RefreshKeys(keys),
        Wire::RemoveIds { ids } => Instruction::RemoveIds(ids),
        Wire::RemoveUuids { uuids } => Instruction::RemoveUuids(uuids),
        Wire::RemoveKeys { keys } => Instruction::RemoveKeys(keys),
        Wire::RefreshJson { json } => Instruction::RefreshJson(json),
        Wire::RefreshPayloads { payloads } => Instruction::RefreshPayloads(payloads),
    }
}

#[cfg(test)]
mod encode_tests {
    use super::*;

    /// The hand-written encoder writes exactly what the owning `Envelope` does.
    #[test]
    fn borrowed_envelope_encodes_like_the_owned_one() {
        let all = vec![
            Instruction::RefreshAll,
            Instruction::RefreshIds(vec![1, -2]),
            Instruction::RefreshUuids(vec![Uuid::from_u128(7)]),
            Instruction::RefreshKeys(vec!["a\"b".into()]),
            Instruction::RemoveIds(vec![3]),
            Instruction::RemoveUuids(vec![Uuid::from_u128(8)]),
            Instruction::RemoveKeys(vec!["k".into()]),
            Instruction::RefreshJson(serde_json::json!({"x": [1, "y"]})),
            Instruction::RefreshPayloads(vec![serde_json::json!(1.5), serde_json::json!(null)]),
        ];
        for (provenance, applied) in [
            (Provenance::default(), false),
            (
                Provenance {
                    actor: Some("ops".into()),
                    reason: Some("fix \u{e9}".into()),
                    trace_id: Some("t".into()),
                },
                true,
            ),
        ] {
            let batch = Batch {
                id: Uuid::from_u128(42),
                origin: "web-1".into(),
                published_at: SystemTime::UNIX_EPOCH
                    + std::time::Duration::from_nanos(1_700_000_000_123_456_789),
                refresher: RefresherDef::new(Uuid::from_u128(1), "content").unwrap(),
                provenance,
                applied_at_origin: applied,
                instructions: all.clone(),
            };
            assert_eq!(
                String::from_utf8(encode(&batch)).unwrap(),
                String::from_utf8(encode_with_serde(&batch)).unwrap()
            );
        }
    }
}
