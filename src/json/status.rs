//! The JSON document of `invalog status --json` (documented field by field
//! in `docs/operations/status.md`). Monitoring parses it, so it carries a
//! `format` version; fields may be added, never renamed or removed.

use serde::Serialize;

use invalog::fleet::FleetStatus;

/// The format version of the status document.
const FORMAT: u32 = 1;

#[derive(Serialize)]
struct StatusJson<'a> {
    format: u32,
    healthy: bool,
    checked_at: String,
    stale_after_seconds: f64,
    stream: StreamJson<'a>,
    nodes: Vec<NodeJson<'a>>,
    unreadable: Vec<UnreadableJson<'a>>,
}

#[derive(Serialize)]
struct StreamJson<'a> {
    name: &'a str,
    first_sequence: u64,
    last_sequence: u64,
    messages: u64,
    bytes: u64,
    oldest_at: Option<String>,
    oldest_age_seconds: Option<f64>,
    replicas: usize,
    cluster: Option<ClusterJson<'a>>,
}

#[derive(Serialize)]
struct ClusterJson<'a> {
    name: Option<&'a str>,
    leader: Option<&'a str>,
    replicas: Vec<ReplicaJson<'a>>,
}

#[derive(Serialize)]
struct ReplicaJson<'a> {
    name: &'a str,
    leader: bool,
    current: bool,
    offline: bool,
    active_seconds: f64,
    lag: u64,
}

#[derive(Serialize)]
struct NodeJson<'a> {
    node: &'a str,
    state: &'a str,
    ready: bool,
    stale: bool,
    healthy: bool,
    reason: Option<&'a str>,
    applied: u64,
    stored: u64,
    lag: u64,
    reported_lag: u64,
    last_seen: String,
    last_seen_seconds_ago: f64,
    started_at: String,
    version: &'a str,
    refreshers: &'a [String],
    other_incarnation: bool,
    duplicate: Option<&'a str>,
}

#[derive(Serialize)]
struct UnreadableJson<'a> {
    key: &'a str,
    error: &'a str,
}

/// Encodes `invalog status --json`: one JSON object (documented in
/// `docs/operations/status.md`), followed by a newline.
pub fn encode_fleet_status(status: &FleetStatus) -> Vec<u8> {
    let s = &status.stream;
    let doc = StatusJson {
        format: FORMAT,
        healthy: status.healthy(),
        checked_at: invalog::wire::format_time(status.checked_at),
        stale_after_seconds: status.stale_after.as_secs_f64(),
        stream: StreamJson {
            name: &s.name,
            first_sequence: s.first_sequence,
            last_sequence: s.last_sequence,
            messages: s.messages,
            bytes: s.bytes,
            oldest_at: s.oldest_at.map(invalog::wire::format_time),
            oldest_age_seconds: s.oldest_age.map(|a| a.as_secs_f64()),
            replicas: s.replicas,
            cluster: s.cluster.as_ref().map(|c| ClusterJson {
                name: c.name.as_deref(),
                leader: c.leader.as_deref(),
                replicas: c
                    .replicas
                    .iter()
                    .map(|r| ReplicaJson {
                        name: &r.name,
                        leader: r.leader,
                        current: r.current,
                        offline: r.offline,
                        active_seconds: r.active.as_secs_f64(),
                        lag: r.lag,
                    })
                    .collect(),
            }),
        },
        nodes: status
            .nodes
            .iter()
            .map(|n| NodeJson {
                node: &n.report.node,
                state: &n.report.state,
                ready: n.report.ready,
                stale: n.stale,
                healthy: n.healthy(),
                reason: n.report.reason.as_deref(),
                applied: n.applied(),
                stored: if n.other_incarnation {
                    0
                } else {
                    n.report.stored
                },
                lag: n.lag,
                reported_lag: n.report.lag,
                last_seen: invalog::wire::format_time(n.report.last_seen),
                last_seen_seconds_ago: n.seen_ago.as_secs_f64(),
                started_at: invalog::wire::format_time(n.report.started_at),
                version: &n.report.version,
                refreshers: &n.report.refreshers,
                other_incarnation: n.other_incarnation,
                duplicate: n.report.duplicate.as_deref(),
            })
            .collect(),
        unreadable: status
            .unreadable
            .iter()
            .map(|u| UnreadableJson {
                key: &u.key,
                error: &u.error,
            })
            .collect(),
    };
    let mut out = serde_json::to_vec_pretty(&doc).expect("a fleet status always serializes");
    out.push(b'\n');
    out
}
