//! The report of `invalog probe --json` (documented in
//! `docs/operations/probe-and-replay.md`; it carries a `format` version:
//! fields may be added, never renamed or removed).

use std::time::Duration;

use serde::Serialize;

use invalog::probe::{Latencies, ProbeReport};

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
        started_at: invalog::wire::format_time(report.started_at),
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
