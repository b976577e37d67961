//! Reading the log back: a range of messages, decoded, for `invalog demo`
//! today and `invalog history` later. Reads with an ordered consumer, which
//! leaves no durable state on the server.

use std::time::{Duration, SystemTime};

use async_nats::jetstream::{self, consumer::pull, consumer::DeliverPolicy};
use futures::StreamExt;

use crate::model::Batch;
use crate::stream::LogSettings;
use crate::wire::{self, DecodeError};

/// One message of the log.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Stream sequence.
    pub sequence: u64,
    /// Subject (`<prefix>.<refresher>`).
    pub subject: String,
    /// When the stream stored it (server clock).
    pub stored_at: SystemTime,
    /// The decoded batch, or why it does not decode.
    pub batch: Result<Batch, DecodeError>,
}

/// Why the log could not be read.
#[derive(Debug, thiserror::Error)]
#[error("reading stream `{stream}`: {message}")]
pub struct HistoryError {
    stream: String,
    message: String,
}

/// Reads messages with sequence in `from..=to` (to the current end when `to`
/// is `None`), at most `limit` of them.
pub async fn read_range(
    js: &jetstream::Context,
    log: &LogSettings,
    from: u64,
    to: Option<u64>,
    limit: usize,
) -> Result<Vec<Entry>, HistoryError> {
    let error = |message: String| HistoryError {
        stream: log.stream.clone(),
        message,
    };
    let mut stream = js
        .get_stream(&log.stream)
        .await
        .map_err(|e| error(e.to_string()))?;
    let last = stream
        .info()
        .await
        .map_err(|e| error(e.to_string()))?
        .state
        .last_sequence;
    let end = to.map_or(last, |t| t.min(last));
    let mut out = Vec::new();
    if from > end || limit == 0 {
        return Ok(out);
    }
    let consumer = stream
        .create_consumer(pull::OrderedConfig {
            filter_subject: log.all_subjects(),
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: from.max(1),
            },
            ..Default::default()
        })
        .await
        .map_err(|e| error(e.to_string()))?;
    let mut messages = consumer
        .messages()
        .await
        .map_err(|e| error(e.to_string()))?;
    loop {
        let next = tokio::time::timeout(Duration::from_secs(5), messages.next()).await;
        let message = match next {
            Ok(Some(Ok(message))) => message,
            Ok(Some(Err(e))) => return Err(error(e.to_string())),
            Ok(None) | Err(_) => break,
        };
        let info = message.info().map_err(|e| error(e.to_string()))?;
        let sequence = info.stream_sequence;
        let pending = info.pending;
        let stored_at = info.published.into();
        if sequence > end {
            break;
        }
        out.push(Entry {
            sequence,
            subject: message.subject.to_string(),
            stored_at,
            batch: wire::decode_on_subject(&message.subject, &message.payload),
        });
        if out.len() >= limit || sequence >= end || pending == 0 {
            break;
        }
    }
    Ok(out)
}
