//! The streaming reader behind [`super::read`]: one ordered consumer
//! (ephemeral, no acks, memory storage, deleted when the read ends, so it
//! leaves no state behind) that the server filters by subject and positions
//! at the first sequence or time asked for. The reader decodes each message,
//! applies the client-side filters of the [`Query`], and stops at the end of
//! the log as it was when the read started — unless it follows.
//!
//! The end is the stream's last sequence read at start, and, because a
//! filtered consumer may never deliver that sequence, also the first message
//! whose `pending` count is 0 (nothing more matches the filter) — or the
//! consumer's pending count at creation when it is 0 already.

use std::collections::VecDeque;
use std::time::{Duration, SystemTime};

use async_nats::jetstream::{self, consumer::pull, consumer::DeliverPolicy};
use futures::StreamExt;

use super::query::{Limit, Query};
use super::{Entry, HistoryError};
use crate::stream::LogSettings;
use crate::wire;

/// How long a read that does not follow waits for the next message the
/// server said was pending before it gives up.
const IDLE_LIMIT: Duration = Duration::from_secs(20);

/// How far a read has come, for progress bars.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Messages received from the server so far (matching or not).
    pub scanned: u64,
    /// Messages the server had to send when the read started (after its
    /// subject filter, from the start position); an upper bound of what a
    /// read that does not follow scans.
    pub total: u64,
    /// The sequence of the last message received.
    pub sequence: u64,
}

type ProgressFn = Box<dyn FnMut(Progress) + Send>;

/// A read in progress; see [`super::read`].
pub struct Reader {
    query: Query,
    stream: String,
    /// The stream's last sequence when the read started.
    end: u64,
    /// The stream's first sequence when the read started.
    first: u64,
    /// When the stream read was created (its incarnation).
    created: std::time::SystemTime,
    messages: Option<pull::Ordered>,
    cleanup: Option<(jetstream::stream::Stream, String)>,
    total: u64,
    scanned: u64,
    returned: usize,
    /// Reached the end of the log as it was at start.
    live: bool,
    done: bool,
    /// `Limit::Last`: the last matches so far; then the ones to hand out.
    kept: VecDeque<Entry>,
    ready: VecDeque<Entry>,
    progress: Option<ProgressFn>,
}

impl Reader {
    pub(super) async fn open(
        js: &jetstream::Context,
        log: &LogSettings,
        query: Query,
    ) -> Result<Reader, HistoryError> {
        let read_err = |message: String| HistoryError::Read {
            stream: log.stream.clone(),
            message,
        };
        if let (Some(from), Some(to)) = (query.from_seq, query.to_seq) {
            if from > to {
                return Err(HistoryError::Query(format!(
                    "the first sequence {from} is after the last {to}"
                )));
            }
        }
        if let (Some(since), Some(until)) = (query.since, query.until) {
            if since > until {
                return Err(HistoryError::Query(
                    "the start time is after the end time".into(),
                ));
            }
        }
        let stream = js.get_stream(&log.stream).await.map_err(|e| {
            let missing = matches!(
                e.kind(),
                jetstream::context::GetStreamErrorKind::JetStream(ref js)
                    if js.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
            );
            if missing {
                HistoryError::NoStream {
                    stream: log.stream.clone(),
                }
            } else {
                read_err(format!("cannot open it: {e}"))
            }
        })?;
        let state = stream.cached_info().state.clone();
        let mut reader = Reader {
            stream: log.stream.clone(),
            end: state.last_sequence,
            first: state.first_sequence,
            created: stream.cached_info().created.into(),
            messages: None,
            cleanup: None,
            total: 0,
            scanned: 0,
            returned: 0,
            live: false,
            done: false,
            kept: VecDeque::new(),
            ready: VecDeque::new(),
            progress: None,
            query,
        };
        let q = &reader.query;
        let empty_range = q.to_seq.is_some_and(|to| to < state.first_sequence)
            || (!q.follow && q.from_seq.is_some_and(|from| from > state.last_sequence));
        if empty_range || matches!(q.limit, Limit::First(0)) {
            reader.done = true;
            return Ok(reader);
        }
        let mut config = pull::OrderedConfig {
            deliver_policy: reader.deliver_policy(),
            ..Default::default()
        };
        let mut subjects: Vec<String> = q.refreshers.iter().map(|r| log.subject(r)).collect();
        subjects.sort();
        subjects.dedup();
        match subjects.len() {
            0 => config.filter_subject = log.all_subjects(),
            1 => config.filter_subject = subjects.remove(0),
            _ => config.filter_subjects = subjects,
        }
        let consumer = stream
            .create_consumer(config)
            .await
            .map_err(|e| read_err(format!("cannot create a reader: {e}")))?;
        reader.total = consumer.cached_info().num_pending;
        if reader.total == 0 {
            reader.live = true;
            if !reader.query.follow {
                reader.done = true;
            }
        }
        let name = consumer.cached_info().name.clone();
        reader.messages = Some(
            consumer
                .messages()
                .await
                .map_err(|e| read_err(format!("cannot read: {e}")))?,
        );
        reader.cleanup = Some((stream, name));
        if reader.done {
            reader.close().await;
        }
        Ok(reader)
    }

    /// Where the server starts: the time asked for (the server finds its
    /// first sequence), else the sequence; for `Limit::Last` without
    /// client-side or subject filters, the `n`-th message from the end.
    fn deliver_policy(&self) -> DeliverPolicy {
        let q = &self.query;
        if let Some(since) = q.since {
            return DeliverPolicy::ByStartTime {
                start_time: to_offset(since),
            };
        }
        let mut start = q.from_seq.unwrap_or(1).max(1);
        if let Limit::Last(n) = q.limit {
            if q.refreshers.is_empty() && !q.filters_bodies() {
                let last = q.to_seq.unwrap_or(self.end).min(self.end);
                start = start.max(last.saturating_sub(n as u64) + 1);
            }
        }
        DeliverPolicy::ByStartSequence {
            start_sequence: start,
        }
    }

    /// Calls `f` after every message received from the server.
    pub fn on_progress(&mut self, f: impl FnMut(Progress) + Send + 'static) {
        self.progress = Some(Box::new(f));
    }

    /// Messages the server had to send when the read started (see
    /// [`Progress::total`]).
    pub fn to_scan(&self) -> u64 {
        self.total
    }

    /// The stream's last sequence when the read started: where a read that
    /// does not follow ends.
    pub fn end_sequence(&self) -> u64 {
        self.end
    }

    /// The stream's first sequence when the read started: older messages
    /// left the log (retention).
    pub fn first_sequence(&self) -> u64 {
        self.first
    }

    /// When the stream being read was created: the incarnation its
    /// sequences count in.
    pub fn stream_created(&self) -> std::time::SystemTime {
        self.created
    }

    /// True once the read has passed the end of the log as it was at start
    /// (a following read then waits for new messages).
    pub fn is_live(&self) -> bool {
        self.live
    }

    /// Matching messages the reader holds and returns without waiting
    /// (after the end of a `Limit::Last` scan, all of them).
    pub fn buffered(&self) -> usize {
        self.ready.len()
    }

    /// The next matching message, or `None` at the end.
    pub async fn next(&mut self) -> Result<Option<Entry>, HistoryError> {
        loop {
            if let Some(entry) = self.ready.pop_front() {
                return Ok(Some(entry));
            }
            if self.done {
                return Ok(None);
            }
            let Some(message) = self.receive().await? else {
                self.finish().await;
                continue;
            };
            let entry = Entry {
                sequence: message.0,
                subject: message.1.to_string(),
                stored_at: message.2,
                batch: wire::decode_on_subject(&message.1, &message.3),
            };
            let pending = message.4;
            let q = &self.query;
            let past_end = (!q.follow && entry.sequence > self.end)
                || q.to_seq.is_some_and(|to| entry.sequence > to)
                || q.until.is_some_and(|until| entry.stored_at > until);
            if past_end {
                self.finish().await;
                continue;
            }
            let at_end = !self.live && (entry.sequence >= self.end || pending == 0);
            let wanted =
                q.from_seq.is_none_or(|from| entry.sequence >= from) && q.matches(&entry.batch);
            if wanted {
                match q.limit {
                    Limit::Last(n) if !self.live => {
                        if self.kept.len() == n {
                            self.kept.pop_front();
                        }
                        if n > 0 {
                            self.kept.push_back(entry);
                        }
                    }
                    limit => {
                        self.returned += 1;
                        self.ready.push_back(entry);
                        if matches!(limit, Limit::First(n) if self.returned >= n) {
                            self.done = true;
                        }
                    }
                }
            }
            if at_end {
                self.live = true;
                self.ready.append(&mut self.kept);
                if !self.query.follow {
                    self.done = true;
                }
            }
            if self.done {
                self.close().await;
            }
        }
    }

    /// Ends the read (past `to_seq` or `until`, or the consumer ended): hands
    /// out what `Limit::Last` kept, then stops, even when following.
    async fn finish(&mut self) {
        self.live = true;
        self.ready.append(&mut self.kept);
        self.done = true;
        self.close().await;
    }

    async fn receive(&mut self) -> Result<Option<Received>, HistoryError> {
        let Some(messages) = self.messages.as_mut() else {
            return Ok(None);
        };
        let next = if self.query.follow {
            Ok(messages.next().await)
        } else {
            tokio::time::timeout(IDLE_LIMIT, messages.next()).await
        };
        let message = match next {
            Ok(Some(Ok(message))) => message,
            Ok(Some(Err(e))) => return Err(self.error(format!("reading: {e}"))),
            Ok(None) => return Ok(None),
            Err(_) => {
                return Err(self.error(format!(
                    "the server sent nothing for {IDLE_LIMIT:?} though messages were pending"
                )))
            }
        };
        let info = message
            .info()
            .map_err(|e| self.error(format!("a message without metadata: {e}")))?;
        let received = (
            info.stream_sequence,
            message.subject.clone(),
            SystemTime::from(info.published),
            message.payload.clone(),
            info.pending,
        );
        self.scanned += 1;
        if let Some(progress) = self.progress.as_mut() {
            progress(Progress {
                scanned: self.scanned,
                total: self.total,
                sequence: received.0,
            });
        }
        Ok(Some(received))
    }

    /// Stops the consumer and deletes it (best effort: the server drops an
    /// ordered consumer by itself once it is inactive).
    async fn close(&mut self) {
        self.messages = None;
        if let Some((stream, name)) = self.cleanup.take() {
            let _ = stream.delete_consumer(&name).await;
        }
    }

    fn error(&self, message: String) -> HistoryError {
        HistoryError::Read {
            stream: self.stream.clone(),
            message,
        }
    }

    /// The read as a `futures::Stream` of entries; it ends after the first
    /// error.
    pub fn into_stream(self) -> impl futures::Stream<Item = Result<Entry, HistoryError>> + Send {
        futures::stream::unfold(Some(self), |reader| async move {
            let mut reader = reader?;
            match reader.next().await {
                Ok(Some(entry)) => Some((Ok(entry), Some(reader))),
                Ok(None) => None,
                Err(e) => Some((Err(e), None)),
            }
        })
    }
}

/// (sequence, subject, stored at, body, pending)
type Received = (u64, async_nats::Subject, SystemTime, bytes::Bytes, u64);

/// A `SystemTime` as the server's time type, clamped to what it can hold.
fn to_offset(at: SystemTime) -> time::OffsetDateTime {
    let nanos = match at.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => i128::try_from(d.as_nanos()).unwrap_or(i128::MAX),
        Err(e) => -i128::try_from(e.duration().as_nanos()).unwrap_or(i128::MAX),
    };
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos).unwrap_or(if nanos < 0 {
        time::OffsetDateTime::UNIX_EPOCH
    } else {
        time::macros::datetime!(9999-12-31 23:59:59 UTC)
    })
}
