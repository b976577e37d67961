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

/// A JSON array of integers, `[1,-2,3]`, written through a stack buffer
/// (one copy into `out` per few dozen ids, not two per id).
fn put_ids(out: &mut BytesMut, ids: &[i64]) {
    let mut chunk = [0u8; 512];
    chunk[0] = b'[';
    let mut len = 1;
    for (index, id) in ids.iter().enumerate() {
        if len > chunk.len() - 22 {
            out.put_slice(&chunk[..len]);
            len = 0;
        }
        if index > 0 {
            chunk[len] = b',';
            len += 1;
        }
        len += write_i64(&mut chunk[len..], *id);
    }
    out.put_slice(&chunk[..len]);
    out.put_u8(b']');
}

/// An integer in decimal, as serde_json writes it.
fn put_i64(out: &mut BytesMut, value: i64) {
    let mut text = [0u8; 20];
    let len = write_i64(&mut text, value);
    out.put_slice(&text[..len]);
}

/// Writes `value` in decimal at the start of `to` (at least 20 bytes) and
/// returns its length.
fn write_i64(to: &mut [u8], value: i64) -> usize {
    const PAIRS: &[u8; 200] = b"0001020304050607080910111213141516171819\
        2021222324252627282930313233343536373839\
        4041424344454647484950515253545556575859\
        6061626364656667686970717273747576777879\
        8081828384858687888990919293949596979899";
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut rest = value.unsigned_abs();
    while rest >= 100 {
        let pair = (rest % 100) as usize * 2;
        rest /= 100;
        at -= 2;
        digits[at..at + 2].copy_from_slice(&PAIRS[pair..pair + 2]);
    }
    if rest >= 10 {
        let pair = rest as usize * 2;
        at -= 2;
        digits[at..at + 2].copy_from_slice(&PAIRS[pair..pair + 2]);
    } else {
        at -= 1;
        digits[at] = b'0' + rest as u8;
    }
    let mut len = 0;
    if value < 0 {
        to[0] = b'-';
        len = 1;
    }
    let text = &digits[at..];
    to[len..len + text.len()].copy_from_slice(text);
    len + text.len()
}

/// A UUID as a JSON string, hyphenated and lower case (as `uuid`'s serde
/// support writes it).
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
