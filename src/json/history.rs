//! The JSON output of `invalog history --json` (one line per message) and
//! `invalog explain --json` (one document), documented field by field in
//! `docs/operations/history.md`. Tools parse them, so each carries a
//! `format` version; fields may be added, never renamed or removed.
//!
//! A history line embeds the message's batch exactly as the wire format
//! (docs/wire-format.md) writes it, so whatever reads stream messages reads
//! `batch` too.

use serde::Serialize;

use invalog::fleet::explain::Explanation;
use invalog::history::{Entry, Touch};

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
    /// Why it does not decode, null when it does.
    error: Option<String>,
    // Then `batch`, spliced in by `line` as the wire format writes it (in
    // its field order, which a `serde_json::Value` would sort).
}

/// Appends `,"<key>":<raw>}` to a serialized object (which ends with `}`).
fn splice(mut object: String, key: &str, raw: &str) -> String {
    object.pop();
    object.push_str(&format!(",\"{key}\":{raw}}}"));
    object
}

fn line(entry: &Entry, touch: Option<Touch>) -> String {
    let (batch, error) = match &entry.batch {
        Ok(batch) => (
            String::from_utf8(invalog::wire::encode(batch)).expect("the encoder writes UTF-8"),
            None,
        ),
        Err(e) => ("null".to_owned(), Some(e.to_string())),
    };
    let head = LineJson {
        format: FORMAT,
        sequence: entry.sequence,
        stored_at: invalog::wire::format_time(entry.stored_at),
        subject: &entry.subject,
        refresher: entry.refresher(),
        touch: touch.map(|t| t.as_str()),
        error,
    };
    let head = serde_json::to_string(&head).expect("a history line always serializes");
    splice(head, "batch", &batch)
}

/// One line of `invalog history --json` (without the newline). `touch` is
/// how the message touched the entry asked for, when one was.
pub fn encode_history_line(entry: &Entry, touch: Option<Touch>) -> String {
    line(entry, touch)
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
    nodes: Vec<NodeJson<'a>>,
    /// Why no node was judged (no presence bucket), else null.
    no_presence: Option<&'a str>,
    // Then `changes`: history lines, spliced in.
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
        nodes: x
            .nodes
            .iter()
            .map(|n| NodeJson {
                node: &n.status.report.node,
                applied: n.status.applied(),
                ready: n.status.report.ready,
                state: &n.status.report.state,
                stale: n.status.stale,
                last_seen: invalog::wire::format_time(n.status.report.last_seen),
                seen_ago_seconds: n.status.seen_ago.as_secs_f64(),
                verdict: n.verdict.as_str(),
                answer: n.sentence(&x.question),
            })
            .collect(),
        no_presence: x.no_presence.as_deref(),
    };
    let doc = serde_json::to_string(&doc).expect("an explanation always serializes");
    let changes: Vec<String> = x
        .changes
        .iter()
        .map(|c| line(&c.entry, Some(c.touch)))
        .collect();
    splice(doc, "changes", &format!("[{}]", changes.join(",")))
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;
    use invalog::model::{Batch, Instruction, Provenance, RefresherDef};

    fn entry(batch: Result<Batch, invalog::wire::DecodeError>) -> Entry {
        Entry {
            sequence: 7,
            subject: "invalog.content".into(),
            stored_at: SystemTime::UNIX_EPOCH + Duration::from_millis(1500),
            batch,
        }
    }

    #[test]
    fn lines_embed_the_batch_in_wire_order_or_the_error() {
        let batch = Batch {
            id: uuid::Uuid::from_u128(9),
            origin: "web-1".into(),
            published_at: SystemTime::UNIX_EPOCH,
            refresher: RefresherDef::new(uuid::Uuid::from_u128(1), "content").unwrap(),
            provenance: Provenance::default(),
            applied_at_origin: false,
            instructions: vec![Instruction::RefreshIds(vec![42])],
        };
        let line = encode_history_line(
            &entry(Ok(batch.clone())),
            Some(Touch::Listed {
                kind: "refresh_ids",
            }),
        );
        assert!(
            line.starts_with(r#"{"format":1,"sequence":7,"stored_at":"1970-01-01T00:00:01.5Z","subject":"invalog.content","refresher":"content","touch":"listed","error":null,"batch":{"format":1,"batch_id":"#),
            "{line}"
        );
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(
            invalog::wire::decode(value["batch"].to_string().as_bytes()),
            Ok(batch)
        );
        let bad = encode_history_line(
            &entry(Err(invalog::wire::DecodeError::MissingVersion)),
            None,
        );
        let value: serde_json::Value = serde_json::from_str(&bad).unwrap();
        assert_eq!(value["batch"], serde_json::Value::Null);
        assert_eq!(value["touch"], serde_json::Value::Null);
        assert_eq!(value["error"], "message has no numeric `format` field");
    }
}
