//! Reading the log back, decoded and filtered, without leaving state on the
//! server: `invalog history`, `invalog explain` and the demo read through
//! here.
//!
//! [`read`] opens a [`Reader`] for a [`Query`]: the server filters by
//! subject (one refresher: `filter_subject`; several: `filter_subjects`,
//! server 2.10 or later) and starts at the right place (`--since`:
//! `DeliverPolicy::ByStartTime`, so the server finds the first sequence;
//! `--from-seq`: `ByStartSequence`), and the reader matches what needs the
//! decoded body (an entry, origin, actor). A read ends at the stream's last
//! sequence as it was when it started, unless it follows. Time filters use
//! the time the server stored each message, not the publisher's clock.
//! `crate::fleet::explain` answers "why is this entry stale?" from what
//! this module reads and every node's reported position.

mod query;
mod reader;

use std::time::SystemTime;

use async_nats::jetstream;

use crate::model::Batch;
use crate::stream::LogSettings;
use crate::wire::DecodeError;

pub use query::{Limit, Query, Target, Touch};
pub use reader::{Progress, Reader};

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

impl Entry {
    /// The refresher's name: from the batch, or the subject's last token
    /// when the message does not decode.
    pub fn refresher(&self) -> &str {
        match &self.batch {
            Ok(batch) => batch.refresher.name.as_str(),
            Err(_) => self.subject.rsplit('.').next().unwrap_or(&self.subject),
        }
    }
}

/// Why the log could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HistoryError {
    /// The stream does not exist.
    #[error("stream `{stream}` does not exist")]
    NoStream {
        /// The stream's name.
        stream: String,
    },
    /// The server refused or failed a request, or the read stalled.
    #[error("reading stream `{stream}`: {message}")]
    Read {
        /// The stream's name.
        stream: String,
        /// What failed.
        message: String,
    },
    /// The query cannot match anything (a range that ends before it starts).
    #[error("invalid query: {0}")]
    Query(String),
}

/// Starts reading the messages `query` asks for; see [`Reader::next`] and
/// [`Reader::into_stream`].
pub async fn read(
    js: &jetstream::Context,
    log: &LogSettings,
    query: Query,
) -> Result<Reader, HistoryError> {
    Reader::open(js, log, query).await
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
    if to.is_some_and(|to| to < from) {
        return Ok(Vec::new());
    }
    let query = Query {
        from_seq: Some(from),
        to_seq: to,
        limit: Limit::First(limit),
        ..Query::default()
    };
    let mut reader = read(js, log, query).await?;
    let mut out = Vec::new();
    while let Some(entry) = reader.next().await? {
        out.push(entry);
    }
    Ok(out)
}
