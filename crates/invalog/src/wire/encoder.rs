//! The format-1 encoder the publisher uses: writes a batch's JSON body
//! straight into a caller's buffer, field by field in the order and with the
//! escaping serde_json's compact writer uses for `v1::Envelope`, so the
//! bytes are the same as `serde_json::to_vec(&envelope)` (tests in
//! `encoder_tests.rs` compare the two on generated batches). It skips what the
//! generic path costs per message: the intermediate instruction list, the
//! timestamp's `String`, a growing output `Vec`. Strings that need no
//! escaping, integers and UUIDs are copied directly; anything else (escaped
//! strings, free-form JSON values) goes through serde_json itself.

use std::time::SystemTime;

use bytes::{BufMut, BytesMut};
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

use crate::model::{Batch, Instruction, Provenance, RefresherDef};

/// A batch's parts, borrowed: what the encoder reads.
#[derive(Clone, Copy)]
pub(crate) struct BatchParts<'a> {
    pub id: Uuid,
    pub origin: &'a str,
    pub published_at: SystemTime,
    pub refresher: &'a RefresherDef,
    pub provenance: &'a Provenance,
    pub applied_at_origin: bool,
    pub instructions: &'a [Instruction],
}

impl<'a> BatchParts<'a> {
    pub fn of(batch: &'a Batch) -> Self {
        Self {
            id: batch.id,
            origin: &batch.origin,
            published_at: batch.published_at,
            refresher: &batch.refresher,
            provenance: &batch.provenance,
            applied_at_origin: batch.applied_at_origin,
            instructions: &batch.instructions,
        }
    }

    /// A generous estimate of the encoded size (for reserving room; never
    /// relied on for correctness).
    pub fn size_hint(&self) -> usize {
        let provenance = [
            &self.provenance.actor,
            &self.provenance.reason,
            &self.provenance.trace_id,
        ]
        .iter()
        .map(|s| s.as_ref().map_or(0, |s| s.len() + 16))
        .sum::<usize>();
        let instructions: usize = self
            .instructions
            .iter()
            .map(|i| {
                40 + match i {
                    Instruction::RefreshAll => 0,
                    Instruction::RefreshIds(v) | Instruction::RemoveIds(v) => 21 * v.len(),
                    Instruction::RefreshUuids(v) | Instruction::RemoveUuids(v) => 39 * v.len(),
                    Instruction::RefreshKeys(v) | Instruction::RemoveKeys(v) => {
                        v.iter().map(|k| k.len() + 3).sum()
                    }
                    Instruction::RefreshJson(_) => 64,
                    Instruction::RefreshPayloads(v) => 64 * v.len(),
                }
            })
            .sum();
        200 + self.origin.len() + self.refresher.name.as_str().len() + provenance + instructions
    }
}

/// Appends the format-1 JSON body of `batch` to `out`.
pub(crate) fn encode_into(batch: BatchParts<'_>, out: &mut BytesMut) {
    out.reserve(batch.size_hint());
    out.put_slice(b"{\"format\":");
    put_i64(out, i64::from(super::FORMAT_VERSION));
    out.put_slice(b",\"batch_id\":");
    put_uuid(out, batch.id);
    out.put_slice(b",\"origin\":");
    put_str(out, batch.origin);
    out.put_slice(b",\"published_at\":\"");
    super::v1::to_offset(batch.published_at)
        .format_into(&mut out.writer(), &Rfc3339)
        .expect("times are clamped to years 0000-9999, which RFC 3339 expresses");
    out.put_slice(b"\",\"refresher\":{\"id\":");
    put_uuid(out, batch.refresher.id);
    out.put_slice(b",\"name\":");
    put_str(out, batch.refresher.name.as_str());
    out.put_u8(b'}');
    for (field, value) in [
        (&b",\"actor\":"[..], &batch.provenance.actor),
        (b",\"reason\":", &batch.provenance.reason),
        (b",\"trace_id\":", &batch.provenance.trace_id),
    ] {
        if let Some(value) = value {
            out.put_slice(field);
            put_str(out, value);
        }
    }
    if batch.applied_at_origin {
        out.put_slice(b",\"applied_at_origin\":true");
    }
    out.put_slice(b",\"instructions\":[");
    for (index, instruction) in batch.instructions.iter().enumerate() {
        if index > 0 {
            out.put_u8(b',');
        }
        put_instruction(out, instruction);
    }
    out.put_slice(b"]}");
}

fn put_instruction(out: &mut BytesMut, instruction: &Instruction) {
    out.put_slice(b"{\"kind\":\"");
    out.put_slice(instruction.kind().as_bytes());
    out.put_u8(b'"');
    match instruction {
        Instruction::RefreshAll => {}
        Instruction::RefreshIds(ids) | Instruction::RemoveIds(ids) => {
            out.put_slice(b",\"ids\":");
            put_ids(out, ids);
        }
        Instruction::RefreshUuids(uuids) | Instruction::RemoveUuids(uuids) => {
            out.put_slice(b",\"uuids\":");
            put_list(out, uuids, |out, uuid| put_uuid(out, *uuid));
        }
        Instruction::RefreshKeys(keys) | Instruction::RemoveKeys(keys) => {
            out.put_slice(b",\"keys\":");
            put_list(out, keys, |out, key| put_str(out, key));
        }
        Instruction::RefreshJson(json) => {
            out.put_slice(b",\"json\":");
            put_json(out, json);
        }
        Instruction::RefreshPayloads(payloads) => {
            out.put_slice(b",\"payloads\":");
            put_list(out, payloads, put_json);
        }
    }
    out.put_u8(b'}');
}

fn put_list<T>(out: &mut BytesMut, items: &[T], mut put: impl FnMut(&mut BytesMut, &T)) {
    out.put_u8(b'[');
    for (index, item) in items.iter().enumerate() {
        if index > 0 {
            out.put_u8(b',');
        }
        put(out, item);
    }
    out.put_u8(b']');
}

/// A JSON array of integers, `[1,-2,3]` (digits by `itoa`, as serde_json
/// writes them).
fn put_ids(out: &mut BytesMut, ids: &[i64]) {
    let mut text = itoa::Buffer::new();
    out.put_u8(b'[');
    for (index, id) in ids.iter().enumerate() {
        if index > 0 {
            out.put_u8(b',');
        }
        out.put_slice(text.format(*id).as_bytes());
    }
    out.put_u8(b']');
}

fn put_i64(out: &mut BytesMut, value: i64) {
    out.put_slice(itoa::Buffer::new().format(value).as_bytes());
}

fn put_uuid(out: &mut BytesMut, uuid: Uuid) {
    let mut text = Uuid::encode_buffer();
    out.put_u8(b'"');
    out.put_slice(uuid.hyphenated().encode_lower(&mut text).as_bytes());
    out.put_u8(b'"');
}

/// A JSON string. Text without `"`, `\` or control characters needs no
/// escaping and is copied; other text is escaped by serde_json.
fn put_str(out: &mut BytesMut, text: &str) {
    if text.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.put_u8(b'"');
        out.put_slice(text.as_bytes());
        out.put_u8(b'"');
    } else {
        serde_json::to_writer(out.writer(), text).expect("writing to memory cannot fail");
    }
}

fn put_json(out: &mut BytesMut, value: &serde_json::Value) {
    serde_json::to_writer(out.writer(), value).expect("a JSON value always serializes");
}

#[cfg(test)]
#[path = "encoder_tests.rs"]
mod tests;
