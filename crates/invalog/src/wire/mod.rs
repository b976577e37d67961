//! The wire format: the only module that knows serde. It turns a
//! [`Batch`] into the bytes of one stream message and
//! back, and holds the stored forms of checkpoints. Decoding is total: any
//! byte string yields a batch or a typed [`DecodeError`], never a panic.
//!
//! The format is versioned by the `format` field of every message; version 1
//! is documented in `docs/wire-format.md`, which non-Rust publishers follow.

pub(crate) mod encoder;
mod request;
mod v1;
mod v1_instruction;

pub use request::{decode_publish_request, PublishRequest, RequestError};
pub(crate) use v1::to_offset;
pub use v1::{format_time, WireInstruction};

use crate::model::{Batch, InvalidName};

/// The format version this build writes.
pub const FORMAT_VERSION: u32 = 1;

/// Header carrying the batch UUID; JetStream drops a second message with the
/// same value inside the stream's duplicate window.
pub const HEADER_MSG_ID: &str = "Nats-Msg-Id";

/// Optional header other publishers may set to the format version. Readers
/// ignore it (the body's `format` field is authoritative) and invalog's own
/// publisher does not send it: each header costs nats-server time.
pub const HEADER_FORMAT: &str = "Invalog-Format";

/// Largest body `decode` accepts; the stream's own `max_msg_size` is usually
/// far smaller.
pub const MAX_DECODE_BYTES: usize = 8 * 1024 * 1024;

/// Why a message could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The body is larger than [`MAX_DECODE_BYTES`].
    #[error("message of {size} bytes is over the {limit}-byte limit")]
    TooLarge {
        /// Size of the body.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The body is not UTF-8.
    #[error("message is not UTF-8 (invalid byte at offset {offset})")]
    NotUtf8 {
        /// Offset of the first invalid byte.
        offset: usize,
    },
    /// The body is not JSON.
    #[error("message is not valid JSON: {0}")]
    Json(String),
    /// The body has no numeric `format` field.
    #[error("message has no numeric `format` field")]
    MissingVersion,
    /// The body's `format` is not one this build reads.
    #[error("message has format version {found}; this build reads version 1")]
    UnsupportedVersion {
        /// The version found.
        found: u64,
    },
    /// The JSON does not match the format (missing field, wrong type,
    /// unknown instruction kind, bad UUID or timestamp).
    #[error("message does not match format version 1: {0}")]
    Invalid(String),
    /// A name in the message is not a subject-safe token.
    #[error("message has an {0}")]
    BadName(#[from] InvalidName),
    /// The refresher name in the body is not the one of the subject.
    #[error("message on subject `{subject}` names refresher `{name}`")]
    SubjectMismatch {
        /// The message's subject.
        subject: String,
        /// The refresher name in its body.
        name: String,
    },
}

/// Encodes a batch as a format-1 JSON body.
pub fn encode(batch: &Batch) -> Vec<u8> {
    v1::encode(batch)
}

/// Decodes a message body. Total: never panics, whatever the bytes.
pub fn decode(body: &[u8]) -> Result<Batch, DecodeError> {
    if body.len() > MAX_DECODE_BYTES {
        return Err(DecodeError::TooLarge {
            size: body.len(),
            limit: MAX_DECODE_BYTES,
        });
    }
    if let Err(e) = std::str::from_utf8(body) {
        return Err(DecodeError::NotUtf8 {
            offset: e.valid_up_to(),
        });
    }
    match v1::decode(body) {
        Ok(batch) => Ok(batch),
        Err(full) => Err(explain(body, full)),
    }
}

/// Decodes a message body and checks it against its subject
/// `<prefix>.<refresher-name>`.
pub fn decode_on_subject(subject: &str, body: &[u8]) -> Result<Batch, DecodeError> {
    let batch = decode(body)?;
    let token = subject.rsplit('.').next().unwrap_or(subject);
    if token != batch.refresher.name.as_str() {
        return Err(DecodeError::SubjectMismatch {
            subject: subject.to_owned(),
            name: batch.refresher.name.to_string(),
        });
    }
    Ok(batch)
}

/// Turns a failed full decode into the most useful error: a version problem
/// beats a field problem, which beats a syntax problem's position.
fn explain(body: &[u8], full: v1::Failure) -> DecodeError {
    let syntax = match full {
        v1::Failure::Name(e) => return DecodeError::BadName(e),
        v1::Failure::Serde(e) => e,
    };
    if syntax.is_syntax() || syntax.is_eof() {
        return DecodeError::Json(syntax.to_string());
    }
    match v1::probe_version(body) {
        None => DecodeError::MissingVersion,
        Some(v) if v != u64::from(FORMAT_VERSION) => DecodeError::UnsupportedVersion { found: v },
        Some(_) => DecodeError::Invalid(syntax.to_string()),
    }
}

#[cfg(test)]
mod tests;
