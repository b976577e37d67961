//! The stored form of a node's checkpoint (its stored sequence), shared by the
//! file store and the KV store: a small JSON object, versioned like messages.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::Checkpoint;

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Record {
    format: u32,
    stream: String,
    #[serde(with = "time::serde::rfc3339")]
    stream_created: OffsetDateTime,
    sequence: u64,
    #[serde(with = "time::serde::rfc3339")]
    written_at: OffsetDateTime,
}

/// Why a stored checkpoint could not be read.
#[derive(Debug, thiserror::Error)]
#[error("stored checkpoint is unreadable: {0}")]
pub struct CheckpointDecodeError(String);

/// Encodes a checkpoint as pretty JSON (it is small and people read it).
pub fn encode_checkpoint(checkpoint: &Checkpoint) -> Vec<u8> {
    let record = Record {
        format: 1,
        stream: checkpoint.stream.clone(),
        stream_created: crate::wire::to_offset(checkpoint.stream_created),
        sequence: checkpoint.sequence,
        written_at: OffsetDateTime::now_utc(),
    };
    let mut out = serde_json::to_vec_pretty(&record).expect("a checkpoint always serializes");
    out.push(b'\n');
    out
}

/// Decodes a stored checkpoint.
pub fn decode_checkpoint(bytes: &[u8]) -> Result<Checkpoint, CheckpointDecodeError> {
    let record: Record =
        serde_json::from_slice(bytes).map_err(|e| CheckpointDecodeError(e.to_string()))?;
    if record.format != 1 {
        return Err(CheckpointDecodeError(format!(
            "format {} is not 1",
            record.format
        )));
    }
    Ok(Checkpoint {
        stream: record.stream,
        stream_created: record.stream_created.into(),
        sequence: record.sequence,
    })
}
