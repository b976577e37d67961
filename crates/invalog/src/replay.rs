//! Re-applying a range of the log through a node's refreshers (`invalog
//! replay`), for debugging and repair: every message with a sequence in
//! `from..=to` is read in stream order with an ordered consumer (no
//! server-side state) and handed once to the refresher that hosts it, or,
//! in a dry run, only reported. A replay never touches a stored sequence,
//! a checkpoint or a consumer: the node that owns the refreshers keeps its
//! position.
//!
//! Policy: nothing is skipped silently. Every message in the range is
//! reported through the `on_event` callback with its [`Outcome`]; messages
//! that are no longer in the stream (retention) are reported as
//! [`ReplayEvent::Missing`]. A refresher that fails is not retried (the
//! replay is a one-shot tool, run again to retry): the failure is reported
//! and the replay goes on with the next message, or stops at once with
//! [`ReplayRequest::stop_on_failure`]. [`ReplaySummary::is_clean`] is false
//! when anything in the range failed, did not decode, or was missing.
//!
//! A replay applies every message: it is exact. A dry run also shows what a
//! node catching up over the same range would *supersede* (the rule of
//! `supersede`): a message of a hosted refresher followed, within the
//! lookahead window ([`Mode::DryRun`]'s `lookahead` delivered messages), by
//! a refresh-all of that refresher is reported as [`Outcome::Superseded`].
//! The window slides over the range (`window`): memory holds at most the
//! window and one chunk of messages.

use std::time::Duration;

use async_nats::jetstream;

use crate::history::{self, Entry, HistoryError};
use crate::model::{NodeId, RefresherName};
use crate::refresher::Registry;
use crate::stream::LogSettings;

use message::{applies, handle};
use window::Window;

mod message;
mod window;

/// Messages read from the stream at once.
const CHUNK: usize = 512;

/// What to replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayRequest {
    /// First sequence (inclusive).
    pub from: u64,
    /// Last sequence (inclusive); `None`: the stream's last sequence when
    /// the replay starts (messages published during the replay are not
    /// included). A `to` past the end is clamped to it.
    pub to: Option<u64>,
    /// Only messages for these refreshers; empty: all.
    pub refreshers: Vec<RefresherName>,
    /// Stop at the first failure instead of going on with the next message.
    pub stop_on_failure: bool,
}

/// Whether messages are applied or only reported.
#[derive(Clone, Copy)]
pub enum Mode<'a> {
    /// Apply each message through the refresher of this registry that hosts
    /// it; messages for other refreshers are reported as not hosted.
    Apply(&'a Registry),
    /// Apply nothing; report what would be applied. With `hosted`, messages
    /// for refreshers not in the list are reported as not hosted.
    DryRun {
        /// The refreshers the node hosts, when known.
        hosted: Option<&'a [RefresherName]>,
        /// The catch-up lookahead window, in messages
        /// ([`crate::node::NodeSettings::catch_up_lookahead`]): a message
        /// followed within it by a refresh-all of its refresher is reported
        /// as [`Outcome::Superseded`]; 0 reports none.
        lookahead: usize,
        /// The node's id, when known: its own messages applied at their
        /// origin are skipped by the node, so they are never superseded and
        /// their refresh-alls cover nothing.
        node: Option<&'a NodeId>,
    },
}

/// What happened to one message of the range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The refresher applied the batch.
    Applied {
        /// How long the refresher took.
        took: Duration,
    },
    /// Dry run: the batch would be applied.
    WouldApply,
    /// Dry run: a node catching up over this range would not apply the
    /// batch, a refresh-all of its refresher following it within the
    /// lookahead window (that refresh-all is applied, and covers it).
    Superseded {
        /// The sequence of the covering refresh-all.
        by: u64,
    },
    /// The refresher returned an error (not retried).
    Failed {
        /// The refresher's error.
        error: String,
    },
    /// The message does not decode (see the entry's `batch` for why); not
    /// applied.
    Undecodable,
    /// No refresher of this node hosts it; not applied (a running node
    /// ignores it too).
    NotHosted,
    /// A canary of `invalog probe` (refresher `_probe`); never replayed.
    Canary,
}

impl Outcome {
    /// Short name: `applied`, `would_apply`, `superseded`, `failed`,
    /// `undecodable`, `not_hosted`, `canary`.
    pub fn name(&self) -> &'static str {
        match self {
            Outcome::Applied { .. } => "applied",
            Outcome::WouldApply => "would_apply",
            Outcome::Superseded { .. } => "superseded",
            Outcome::Failed { .. } => "failed",
            Outcome::Undecodable => "undecodable",
            Outcome::NotHosted => "not_hosted",
            Outcome::Canary => "canary",
        }
    }

    /// True for a failure or an undecodable message.
    pub fn is_failure(&self) -> bool {
        matches!(self, Outcome::Failed { .. } | Outcome::Undecodable)
    }
}

/// Reported during a replay, in sequence order.
#[derive(Debug)]
pub enum ReplayEvent<'a> {
    /// One message of the range (those excluded by the refresher filter are
    /// not reported, only counted).
    Message {
        /// The message as read from the log.
        entry: &'a Entry,
        /// What the replay did with it.
        outcome: &'a Outcome,
    },
    /// Sequences of the range that are no longer in the stream.
    Missing {
        /// First missing sequence.
        from: u64,
        /// Last missing sequence.
        to: u64,
    },
}

/// What a replay did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplaySummary {
    /// First sequence of the range.
    pub from: u64,
    /// Last sequence of the range (after clamping to the stream's end).
    pub to: u64,
    /// The stream's first sequence when the replay started.
    pub stream_first: u64,
    /// The stream's last sequence when the replay started.
    pub stream_last: u64,
    /// True for a dry run.
    pub dry_run: bool,
    /// The dry run's lookahead window, in messages (0 for a replay).
    pub lookahead: usize,
    /// Messages applied.
    pub applied: u64,
    /// Messages that a dry run would apply.
    pub would_apply: u64,
    /// Messages that a dry run marks as superseded while catching up (not
    /// counted in `would_apply`).
    pub superseded: u64,
    /// Messages whose refresher failed.
    pub failed: u64,
    /// Messages that do not decode.
    pub undecodable: u64,
    /// Messages for refreshers this node does not host.
    pub not_hosted: u64,
    /// Canaries of `invalog probe`, not replayed.
    pub canaries: u64,
    /// Messages excluded by the refresher filter.
    pub filtered_out: u64,
    /// Ranges of sequences no longer in the stream, in order.
    pub missing: Vec<(u64, u64)>,
    /// The sequence of the failure that stopped the replay early
    /// ([`ReplayRequest::stop_on_failure`]).
    pub stopped_at: Option<u64>,
}

impl ReplaySummary {
    /// How many sequences of the range are missing.
    pub fn missing_count(&self) -> u64 {
        self.missing.iter().map(|(a, b)| b - a + 1).sum()
    }

    /// True when every message of the range was applied (or would be, or
    /// would be superseded), was not hosted, or was a canary: nothing
    /// failed, nothing was undecodable,
    /// nothing was missing, and the replay was not stopped early.
    pub fn is_clean(&self) -> bool {
        self.failed == 0
            && self.undecodable == 0
            && self.missing.is_empty()
            && self.stopped_at.is_none()
    }
}

/// Why a replay could not run (failures of single messages are outcomes,
/// not errors).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReplayError {
    /// `from` is after `to`, or 0.
    #[error(
        "invalid range {from}..={to}: the first sequence must be at least 1 and not after the last"
    )]
    InvalidRange {
        /// First sequence asked for.
        from: u64,
        /// Last sequence asked for.
        to: u64,
    },
    /// The range starts after the stream's last message.
    #[error("nothing to replay: the range starts at {from}, the stream's last sequence is {last}")]
    BeyondEnd {
        /// First sequence asked for.
        from: u64,
        /// The stream's last sequence.
        last: u64,
    },
    /// A refresher of the filter is not hosted by the node's registry.
    #[error("refresher `{0}` is not configured on this node, so nothing of it can be replayed")]
    NotHosted(RefresherName),
    /// The stream could not be inspected.
    #[error("reading stream `{stream}`: {message}")]
    Stream {
        /// The stream.
        stream: String,
        /// What failed.
        message: String,
    },
    /// The log could not be read.
    #[error(transparent)]
    Read(#[from] HistoryError),
}

/// Replays `request` in `mode`, calling `on_event` for every message and
/// every missing range, in sequence order. Touches no stored sequence.
pub async fn replay(
    js: &jetstream::Context,
    log: &LogSettings,
    mode: Mode<'_>,
    request: &ReplayRequest,
    mut on_event: impl FnMut(ReplayEvent<'_>),
) -> Result<ReplaySummary, ReplayError> {
    if request.from == 0 || request.to.is_some_and(|to| to < request.from) {
        return Err(ReplayError::InvalidRange {
            from: request.from,
            to: request.to.unwrap_or(request.from),
        });
    }
    if let Mode::Apply(registry) = mode {
        if let Some(name) = request
            .refreshers
            .iter()
            .find(|n| registry.get(n.as_str()).is_none())
        {
            return Err(ReplayError::NotHosted(name.clone()));
        }
    }
    let (first, last) = stream_bounds(js, log).await?;
    if request.from > last {
        return Err(ReplayError::BeyondEnd {
            from: request.from,
            last,
        });
    }
    let end = request.to.map_or(last, |to| to.min(last));
    let lookahead = match mode {
        Mode::DryRun { lookahead, .. } => lookahead,
        Mode::Apply(_) => 0,
    };
    let mut summary = ReplaySummary {
        from: request.from,
        to: end,
        stream_first: first,
        stream_last: last,
        dry_run: matches!(mode, Mode::DryRun { .. }),
        lookahead,
        ..ReplaySummary::default()
    };
    let mut window = Window::new(lookahead);
    let mut next = request.from;
    let mut stopped = false;
    'read: while next <= end {
        let chunk = history::read_range(js, log, next, Some(end), CHUNK).await?;
        let Some(last_read) = chunk.last().map(|e| e.sequence) else {
            window.missing(next, end);
            break;
        };
        for entry in chunk {
            if entry.sequence > next {
                window.missing(next, entry.sequence - 1);
            }
            next = entry.sequence + 1;
            let applies = lookahead > 0 && applies(mode, &entry);
            window.push(entry, applies);
            while let Some(item) = window.pop() {
                if handle(mode, request, item, &mut summary, &mut on_event).await {
                    stopped = true;
                    break 'read;
                }
            }
        }
        next = next.max(last_read + 1);
    }
    if !stopped {
        while let Some(item) = window.drain() {
            if handle(mode, request, item, &mut summary, &mut on_event).await {
                break;
            }
        }
    }
    Ok(summary)
}

/// The stream's first and last sequences.
async fn stream_bounds(
    js: &jetstream::Context,
    log: &LogSettings,
) -> Result<(u64, u64), ReplayError> {
    let error = |message: String| ReplayError::Stream {
        stream: log.stream.clone(),
        message,
    };
    let mut stream = js
        .get_stream(&log.stream)
        .await
        .map_err(|e| error(e.to_string()))?;
    let state = stream
        .info()
        .await
        .map_err(|e| error(e.to_string()))?
        .state
        .clone();
    Ok((state.first_sequence, state.last_sequence))
}
