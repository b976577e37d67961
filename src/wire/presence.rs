//! The JSON of a node's presence report: the value under its node id in the
//! presence KV bucket (see `crate::presence`).
//!
//! It is read by other programs (monitoring, older or newer versions of
//! invalog in a mixed fleet), so they are versioned by a `format` field and
//! readers ignore fields they do not know: a newer node may add fields
//! without breaking an older `invalog status`.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::presence::NodeReport;

/// The format version of presence reports this build writes and reads.
const FORMAT: u32 = 1;

#[derive(Serialize, Deserialize)]
struct Report {
    format: u32,
    node: String,
    version: String,
    applied: u64,
    stored: u64,
    stream_last: u64,
    lag: u64,
    state: String,
    ready: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    started_at: OffsetDateTime,
    /// The node's own clock when it wrote the report. Readers use the time
    /// the server stored it instead (immune to the node's clock skew).
    #[serde(with = "time::serde::rfc3339")]
    reported_at: OffsetDateTime,
    #[serde(default)]
    refreshers: Vec<String>,
}

/// Why a stored presence report could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("presence report is unreadable: {0}")]
pub struct PresenceDecodeError(String);

/// Encodes a node's report; `report.last_seen` is written as the node's
/// `reported_at`.
pub fn encode_node_report(report: &NodeReport) -> Vec<u8> {
    let record = Report {
        format: FORMAT,
        node: report.node.clone(),
        version: report.version.clone(),
        applied: report.applied,
        stored: report.stored,
        stream_last: report.stream_last,
        lag: report.lag,
        state: report.state.clone(),
        ready: report.ready,
        reason: report.reason.clone(),
        started_at: super::v1::to_offset(report.started_at),
        reported_at: super::v1::to_offset(report.last_seen),
        refreshers: report.refreshers.clone(),
    };
    serde_json::to_vec(&record).expect("a presence report always serializes")
}

/// Decodes a stored report. `stored_at` (the time the server stored it)
/// becomes the report's `last_seen`.
pub fn decode_node_report(
    bytes: &[u8],
    stored_at: SystemTime,
) -> Result<NodeReport, PresenceDecodeError> {
    let r: Report =
        serde_json::from_slice(bytes).map_err(|e| PresenceDecodeError(e.to_string()))?;
    if r.format != FORMAT {
        return Err(PresenceDecodeError(format!(
            "format {} is not {FORMAT} (written by a newer invalog?)",
            r.format
        )));
    }
    Ok(NodeReport {
        node: r.node,
        version: r.version,
        applied: r.applied,
        stored: r.stored,
        stream_last: r.stream_last,
        lag: r.lag,
        state: r.state,
        ready: r.ready,
        reason: r.reason,
        started_at: r.started_at.into(),
        last_seen: stored_at,
        refreshers: r.refreshers,
    })
}
