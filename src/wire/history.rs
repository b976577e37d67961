//! The JSON output of `invalog history --json` (one line per message) and
//! `invalog explain --json` (one document), documented field by field in
//! `docs/operations/history.md`. Tools parse them, so each carries a
//! `format` version; fields may be added, never renamed or removed.
//!
//! A history line embeds the message's batch exactly as the wire format
//! (docs/wire-format.md) writes it, so whatever reads stream messages reads
//! `batch` too.

use serde::Serialize;
use serde_json::Value;

use crate::history::explain::Explanation;
use crate::history::{Entry, Touch};

/// The format version of history lines and explain documents.
const FORMAT: u32 = 1;

#[derive(Serialize)]
struct LineJson<'a> {
    format: u32,
    sequence: u64,
    stored_at: String,
    subject: &'a str,
    refresher: &'a str,
    /// How the message touched the entry asked for (`--id`), else null.
    touch: Option<&'static str>,
    /// The batch as stored (wire format), null when it does not decode.
    batch: Option<Value>,
    /// Why it does not decode, null when it does.
    error: Option<String>,
}

fn line(entry: &Entry, touch: Option<Touch>) -> LineJson<'_> {
    let (batch, error) = match &entry.batch {
        Ok(batch) => (
            Some(serde_json::from_slice(&super::encode(batch)).unwrap_or(Value::Null)),
            None,
        ),
        Err(e) => (None, Some(e.to_string())),
    };
    LineJson {
        format: FORMAT,
        sequence: entry.sequence,
        stored_at: super::format_time(entry.stored_at),
        subject: &entry.subject,
        refresher: entry.refresher(),
        touch: touch.map(|t| t.as_str()),
        batch,
        error,
    }
}

/// One line of `invalog history --json` (without the newline). `touch` is
/// how the message touched the entry asked for, when one was.
pub fn encode_history_line(entry: &Entry, touch: Option<Touch>) -> String {
    serde_json::to_string(&line(entry, touch)).expect("a history line always serializes")
}

#[derive(Serialize)]
struct ExplainJson<'a> {
    format: u32,
    refresher: &'a str,
    id: String,
    first_sequence: u64,
    last_sequence: u64,
    /// The newest change's sequence, null when none is in the log.
    newest: Option<u64>,
    changes: Vec<LineJson<'a>>,
    nodes: Vec<NodeJson<'a>>,
    /// Why no node was judged (no presence bucket), else null.
    no_presence: Option<&'a str>,
}

#[derive(Serialize)]
struct NodeJson<'a> {
    node: &'a str,
    applied: u64,
    ready: bool,
    state: &'a str,
    stale: bool,
    last_seen: String,
    seen_ago_seconds: f64,
    verdict: &'static str,
    answer: String,
}

/// The document of `invalog explain --json` (without a newline).
pub fn encode_explanation(x: &Explanation) -> String {
    let doc = ExplainJson {
        format: FORMAT,
        refresher: x.question.refresher.as_str(),
        id: x.question.target.to_string(),
        first_sequence: x.first_sequence,
        last_sequence: x.last_sequence,
        newest: x.newest(),
        changes: x
            .changes
            .iter()
            .map(|c| line(&c.entry, Some(c.touch)))
            .collect(),
        nodes: x
            .nodes
            .iter()
            .map(|n| NodeJson {
                node: &n.status.report.node,
                applied: n.status.report.applied,
                ready: n.status.report.ready,
                state: &n.status.report.state,
                stale: n.status.stale,
                last_seen: super::format_time(n.status.report.last_seen),
                seen_ago_seconds: n.status.seen_ago.as_secs_f64(),
                verdict: n.verdict.as_str(),
                answer: n.sentence(&x.question),
            })
            .collect(),
        no_presence: x.no_presence.as_deref(),
    };
    serde_json::to_string(&doc).expect("an explanation always serializes")
}
