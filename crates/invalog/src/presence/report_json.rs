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

use super::NodeReport;

/// The format version of presence reports this build writes and reads.
const FORMAT: u32 = 1;

#[derive(Serialize, Deserialize)]
struct Report {
    format: u32,
    node: String,
    /// Absent in reports of invalog before reports named their stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    stream: Option<String>,
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
    #[serde(default, skip_serializing_if = "String::is_empty")]
    instance: String,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    stream_created: Option<OffsetDateTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    duplicate: Option<String>,
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
        stream: report.stream.clone(),
        version: report.version.clone(),
        applied: report.applied,
        stored: report.stored,
        stream_last: report.stream_last,
        lag: report.lag,
        state: report.state.clone(),
        ready: report.ready,
        reason: report.reason.clone(),
        started_at: crate::wire::to_offset(report.started_at),
        reported_at: crate::wire::to_offset(report.last_seen),
        refreshers: report.refreshers.clone(),
        instance: report.instance.clone(),
        stream_created: report.stream_created.map(crate::wire::to_offset),
        duplicate: report.duplicate.clone(),
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
        stream: r.stream,
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
        instance: r.instance,
        stream_created: r.stream_created.map(Into::into),
        duplicate: r.duplicate,
    })
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;

    fn report() -> NodeReport {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        NodeReport {
            node: "web-1".into(),
            stream: Some("INVALOG".into()),
            version: "0.1.0".into(),
            applied: 41,
            stored: 40,
            stream_last: 42,
            lag: 1,
            state: "catching_up".into(),
            ready: false,
            reason: Some("catching up to sequence 42".into()),
            started_at: at,
            last_seen: at + Duration::from_secs(5),
            refreshers: vec!["content".into()],
            instance: "5d3c8f0e-0000-4000-8000-000000000001".into(),
            stream_created: Some(at - Duration::from_secs(3600)),
            duplicate: None,
        }
    }

    #[test]
    fn a_report_reads_back_with_the_servers_time_as_last_seen() {
        let stored_at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_900_000_000);
        let back = decode_node_report(&encode_node_report(&report()), stored_at).unwrap();
        assert_eq!(
            back,
            NodeReport {
                last_seen: stored_at,
                ..report()
            }
        );
    }

    #[test]
    fn newer_fields_are_ignored_and_newer_formats_refused() {
        let mut json: serde_json::Value =
            serde_json::from_slice(&encode_node_report(&report())).unwrap();
        json["added_later"] = serde_json::json!({"x": 1});
        let bytes = serde_json::to_vec(&json).unwrap();
        assert!(decode_node_report(&bytes, SystemTime::now()).is_ok());
        json["format"] = 2.into();
        let bytes = serde_json::to_vec(&json).unwrap();
        let error = decode_node_report(&bytes, SystemTime::now()).unwrap_err();
        assert!(error.to_string().contains("format 2"), "{error}");
        assert!(decode_node_report(b"not json", SystemTime::now()).is_err());
    }

    #[test]
    fn a_report_without_a_stream_is_from_an_older_invalog() {
        let mut json: serde_json::Value =
            serde_json::from_slice(&encode_node_report(&report())).unwrap();
        assert_eq!(json["stream"], "INVALOG");
        json.as_object_mut().unwrap().remove("stream");
        let bytes = serde_json::to_vec(&json).unwrap();
        let back = decode_node_report(&bytes, SystemTime::now()).unwrap();
        assert_eq!(back.stream, None);
    }
}
