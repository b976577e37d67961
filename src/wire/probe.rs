//! The canary instruction's JSON, the reply a node sends when it applied
//! a canary (see `crate::probe`), and the report of `invalog probe --json`
//! (documented in `docs/operations/probe-and-replay.md`; it carries a
//! `format` version: fields may be added, never renamed or removed).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::probe::{Latencies, ProbeReport};

/// What a canary asks for, read from its `refresh_json` instruction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Canary {
    /// The probe run.
    pub probe: String,
    /// The canary's number in the run.
    pub canary: u64,
    /// Core NATS subject for the replies; nodes answer only if it is
    /// `_INVALOG.probe.<probe>` (`crate::probe::check_reply`).
    pub reply: String,
}

#[derive(Serialize, Deserialize)]
struct CanaryJson {
    probe: String,
    canary: u64,
    reply: String,
}

/// A node's answer to a canary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeReply {
    /// The probe run.
    pub probe: String,
    /// The canary's number.
    pub canary: u64,
    /// The node that applied it.
    pub node: String,
    /// The canary's stream sequence.
    pub sequence: u64,
}

#[derive(Serialize, Deserialize)]
struct ProbeReplyJson {
    probe: String,
    canary: u64,
    node: String,
    sequence: u64,
}

/// The JSON document of a canary's `refresh_json` instruction.
pub fn canary_json(canary: &Canary) -> serde_json::Value {
    serde_json::to_value(CanaryJson {
        probe: canary.probe.clone(),
        canary: canary.canary,
        reply: canary.reply.clone(),
    })
    .expect("a canary always serializes")
}

/// Reads a canary from a `refresh_json` document; `None` if it is not one.
pub fn parse_canary(json: &serde_json::Value) -> Option<Canary> {
    let c = CanaryJson::deserialize(json).ok()?;
    Some(Canary {
        probe: c.probe,
        canary: c.canary,
        reply: c.reply,
    })
}

/// Encodes a node's reply.
pub fn encode_probe_reply(reply: &ProbeReply) -> Vec<u8> {
    serde_json::to_vec(&ProbeReplyJson {
        probe: reply.probe.clone(),
        canary: reply.canary,
        node: reply.node.clone(),
        sequence: reply.sequence,
    })
    .expect("a reply always serializes")
}

/// Decodes a node's reply.
pub fn decode_probe_reply(bytes: &[u8]) -> Result<ProbeReply, super::DecodeError> {
    let r: ProbeReplyJson =
        serde_json::from_slice(bytes).map_err(|e| super::DecodeError::Invalid(e.to_string()))?;
    Ok(ProbeReply {
        probe: r.probe,
        canary: r.canary,
        node: r.node,
        sequence: r.sequence,
    })
}

/// The format version of the probe report.
const REPORT_FORMAT: u32 = 1;

#[derive(Serialize)]
struct ReportJson<'a> {
    format: u32,
    ok: bool,
    probe: &'a str,
    started_at: String,
    duration_ms: f64,
    rate_per_second: f64,
    within_ms: f64,
    timeout_ms: f64,
    canaries: CanariesJson<'a>,
    fleet: FleetJson,
    nodes: Vec<NodeJson<'a>>,
}

#[derive(Serialize)]
struct CanariesJson<'a> {
    sent: u64,
    published: u64,
    publish_ack: LatenciesJson,
    publish_failures: Vec<FailureJson<'a>>,
}

#[derive(Serialize)]
struct FailureJson<'a> {
    canary: u64,
    error: &'a str,
}

#[derive(Serialize)]
struct FleetJson {
    nodes: usize,
    canaries: u64,
    applied_on_all_within: u64,
    applied_on_all_within_timeout: u64,
    fraction_within: f64,
    nines: u32,
    latency: LatenciesJson,
}

#[derive(Serialize)]
struct NodeJson<'a> {
    node: &'a str,
    listed: bool,
    expected: u64,
    applied: u64,
    within: u64,
    missed: u64,
    first_missed: Option<u64>,
    last_sequence: Option<u64>,
    latency: LatenciesJson,
}

#[derive(Serialize)]
struct LatenciesJson {
    samples: u64,
    answered: u64,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
    max_ms: Option<f64>,
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1_000_000.0).round() / 1000.0
}

fn latencies(l: &Latencies) -> LatenciesJson {
    LatenciesJson {
        samples: l.samples,
        answered: l.answered,
        p50_ms: l.p50.map(ms),
        p99_ms: l.p99.map(ms),
        max_ms: l.max.map(ms),
    }
}

/// Encodes the report of `invalog probe --json`: one JSON object followed by
/// a newline. Durations are milliseconds (microsecond precision); a
/// percentile that falls on an unanswered canary is `null`.
pub fn encode_probe_report(report: &ProbeReport) -> Vec<u8> {
    let s = &report.settings;
    let json = ReportJson {
        format: REPORT_FORMAT,
        ok: report.is_ok(),
        probe: &report.probe,
        started_at: super::format_time(report.started_at),
        duration_ms: ms(report.duration),
        rate_per_second: s.rate,
        within_ms: ms(s.within),
        timeout_ms: ms(s.timeout),
        canaries: CanariesJson {
            sent: report.sent,
            published: report.published,
            publish_ack: latencies(&report.publish_ack),
            publish_failures: report
                .publish_failures
                .iter()
                .map(|f| FailureJson {
                    canary: f.canary,
                    error: &f.error,
                })
                .collect(),
        },
        fleet: FleetJson {
            nodes: report.nodes.len(),
            canaries: report.published,
            applied_on_all_within: report.all_within,
            applied_on_all_within_timeout: report.all_within_timeout,
            fraction_within: report.fraction_within(),
            nines: report.nines(),
            latency: latencies(&report.fleet),
        },
        nodes: report
            .nodes
            .iter()
            .map(|n| NodeJson {
                node: &n.node,
                listed: n.listed,
                expected: n.expected,
                applied: n.applied,
                within: n.within,
                missed: n.missed,
                first_missed: n.first_missed,
                last_sequence: n.last_sequence,
                latency: latencies(&n.latency),
            })
            .collect(),
    };
    let mut out = serde_json::to_vec(&json).expect("a report always serializes");
    out.push(b'\n');
    out
}

impl ProbeReport {
    /// The report as `invalog probe --json` prints it (the JSON document
    /// docs/operations/probe-and-replay.md describes).
    pub fn to_json(&self) -> Vec<u8> {
        encode_probe_report(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canaries_and_replies_round_trip() {
        let c = Canary {
            probe: "run-1".into(),
            canary: 7,
            reply: "_INVALOG.probe.run-1".into(),
        };
        assert_eq!(parse_canary(&canary_json(&c)), Some(c));
        assert_eq!(parse_canary(&serde_json::json!({"a": 1})), None);
        let r = ProbeReply {
            probe: "run-1".into(),
            canary: 7,
            node: "web-1".into(),
            sequence: 42,
        };
        assert_eq!(decode_probe_reply(&encode_probe_reply(&r)).unwrap(), r);
    }
}
