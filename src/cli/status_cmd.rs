//! `invalog status`: the log's stream and every node's position, as an
//! aligned table or one JSON document (`--json`, `crate::json::status`).
//! The exit code is for monitoring: 0 when every node is ready and has
//! reported recently, [`EXIT_UNHEALTHY`] when one is not.

use std::io::Write as _;
use std::time::Duration;

use invalog::fleet::{FleetStatus, NodeStatus};
use invalog::printable::printable_lines;

use super::table;
use super::ConfigArg;
use super::PresenceArgs;
use super::{client_settings, jetstream};
use super::{EXIT_FAILURE, EXIT_OK};

/// Exit code when a node is not ready, is stale, runs with a node id
/// another process uses too, reports a position in an older incarnation of
/// the stream, or its report is unreadable.
pub const EXIT_UNHEALTHY: u8 = 5;

/// Arguments of `invalog status`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Exit codes: 0 every node ready and seen recently; 5 a node is not ready, stale, unreadable, on an older incarnation of the stream, or its id is used by two processes; 1 the stream or the presence bucket cannot be read; 2 invalid configuration or arguments; 3 NATS unreachable or credentials refused.\n\nExamples:\n  invalog status -c config/publisher.toml\n  invalog status -c config/publisher.toml --json --stale-after 1m"
)]
pub struct Args {
    #[command(flatten)]
    config: ConfigArg,
    #[command(flatten)]
    presence: PresenceArgs,
    /// Print one JSON document instead of the table.
    #[arg(long)]
    json: bool,
}

/// Runs `invalog status`.
pub async fn run(args: Args) -> anyhow::Result<u8> {
    let settings = match client_settings(&args.config.publisher()) {
        Ok(settings) => settings,
        Err(code) => return Ok(code),
    };
    let bucket = args.presence.bucket(&settings);
    let stale_after = args.presence.stale_after(&settings);
    let (_client, js) = match jetstream(&settings.nats).await {
        Ok(connected) => connected,
        Err(code) => return Ok(code),
    };
    let status = match invalog::fleet::fleet_status(&js, &settings.log, &bucket, stale_after).await
    {
        Ok(status) => status,
        Err(error) => {
            eprintln!("invalog: {error}");
            return Ok(EXIT_FAILURE);
        }
    };
    let out = if args.json {
        crate::json::status::encode_fleet_status(&status)
    } else {
        printable_lines(&render(&status)).into_owned().into_bytes()
    };
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(&out)?;
    stdout.flush()?;
    Ok(if status.healthy() {
        EXIT_OK
    } else {
        EXIT_UNHEALTHY
    })
}

/// The table: the stream block, the nodes, and a verdict line.
fn render(status: &FleetStatus) -> String {
    let s = &status.stream;
    let mut block = vec![
        vec!["STREAM".to_owned(), s.name.clone()],
        vec![
            "SEQUENCES".to_owned(),
            format!(
                "{} to {} ({} messages, {})",
                s.first_sequence,
                s.last_sequence,
                s.messages,
                bytes(s.bytes)
            ),
        ],
        vec![
            "OLDEST".to_owned(),
            match (s.oldest_at, s.oldest_age) {
                (Some(at), Some(age)) => {
                    format!("{} ago ({})", ago(age), invalog::wire::format_time(at))
                }
                _ => "(empty)".to_owned(),
            },
        ],
        vec!["REPLICAS".to_owned(), s.replicas.to_string()],
    ];
    if let Some(cluster) = &s.cluster {
        let leader = cluster
            .leader
            .as_deref()
            .map_or("(none)".to_owned(), server);
        // A single server (no NATS cluster) is the stream's only copy.
        let (label, name) = match cluster.name.as_deref() {
            Some(n) => ("LEADER", format!(" (cluster {n})")),
            None => ("SERVER", String::new()),
        };
        block.push(vec![label.to_owned(), format!("{leader}{name}")]);
    }
    let mut out = table(&block, &[false, false]);
    if let Some(cluster) = s.cluster.as_ref().filter(|c| c.replicas.len() > 1) {
        let mut rows = vec![["SERVER", "ROLE", "CURRENT", "SEEN", "LAG"]
            .map(String::from)
            .to_vec()];
        for r in &cluster.replicas {
            rows.push(vec![
                server(&r.name),
                if r.leader { "leader" } else { "follower" }.to_owned(),
                match (r.offline, r.current) {
                    (true, _) => "OFFLINE".to_owned(),
                    (false, true) => "yes".to_owned(),
                    (false, false) => "NO".to_owned(),
                },
                if r.leader {
                    "-".to_owned()
                } else {
                    format!("{} ago", ago(r.active))
                },
                r.lag.to_string(),
            ]);
        }
        out.push('\n');
        out.push_str(&indent(&table(&rows, &[false, false, false, true, true])));
    }
    out.push('\n');
    if status.nodes.is_empty() {
        out.push_str("(no node has reported)\n");
    } else {
        let mut rows = vec![[
            "NODE",
            "STATE",
            "READY",
            "APPLIED",
            "LAG",
            "LAST SEEN",
            "VERSION",
            "REASON",
        ]
        .map(String::from)
        .to_vec()];
        rows.extend(status.nodes.iter().map(|n| node_row(n, status.stale_after)));
        out.push_str(&table(
            &rows,
            &[false, false, false, true, true, true, false, false],
        ));
    }
    for u in &status.unreadable {
        out.push_str(&format!("unreadable report `{}`: {}\n", u.key, u.error));
    }
    out.push('\n');
    out.push_str(&verdict(status));
    out.push('\n');
    out
}

fn node_row(n: &NodeStatus, stale_after: Duration) -> Vec<String> {
    let r = &n.report;
    let reason = if n.stale {
        let why = format!(
            "stale: no report for {} (limit {})",
            ago(n.seen_ago),
            ago(stale_after)
        );
        match &r.reason {
            Some(last) => format!("{why}; last reported: {last}"),
            None => why,
        }
    } else if let Some(evidence) = &r.duplicate {
        format!("node id used by two processes: {evidence}")
    } else if n.other_incarnation {
        "reports a position in an older incarnation of the stream (created again since)".to_owned()
    } else {
        r.reason.clone().unwrap_or_default()
    };
    vec![
        r.node.clone(),
        r.state.clone(),
        match (n.stale, r.ready) {
            (true, _) => "STALE".to_owned(),
            _ if r.duplicate.is_some() => "DUPLICATE".to_owned(),
            _ if n.other_incarnation => "OLD STREAM".to_owned(),
            (false, true) => "yes".to_owned(),
            (false, false) if n.stopped() => "-".to_owned(),
            (false, false) => "NO".to_owned(),
        },
        n.applied().to_string(),
        n.lag.to_string(),
        format!("{} ago", ago(n.seen_ago)),
        r.version.clone(),
        reason,
    ]
}

fn verdict(status: &FleetStatus) -> String {
    let live = status.nodes.iter().filter(|n| !n.stopped()).count();
    let stopped = status.nodes.len() - live;
    let stopped = if stopped > 0 {
        format!(", {stopped} stopped")
    } else {
        String::new()
    };
    if status.healthy() {
        return format!("healthy: {live} node(s) ready{stopped}");
    }
    let mut problems: Vec<String> = status
        .nodes
        .iter()
        .filter(|n| !n.healthy())
        .map(|n| {
            let what = if n.stale {
                "stale"
            } else if n.report.duplicate.is_some() {
                "duplicate node id"
            } else if n.other_incarnation {
                "on an older stream"
            } else {
                "not ready"
            };
            format!("{} {what}", n.report.node)
        })
        .collect();
    problems.extend(
        status
            .unreadable
            .iter()
            .map(|u| format!("{} unreadable", u.key)),
    );
    format!("UNHEALTHY: {}", problems.join(", "))
}

/// A server's name as JetStream reports it. A server without `server_name`
/// reports its id (56 characters of base32, starting with `N`) instead:
/// said so, with the fix.
fn server(name: &str) -> String {
    let id = name.len() == 56
        && name.starts_with('N')
        && name
            .bytes()
            .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b));
    if id {
        format!("{name} (the server's id: it has no `server_name` in its configuration)")
    } else {
        name.to_owned()
    }
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("  {l}\n")).collect()
}

/// A short duration: `0.4s`, `12s`, `3m 12s`, `2h 3m`, `4d 2h`.
fn ago(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=9 => format!("{:.1}s", d.as_secs_f64()),
        10..=59 => format!("{s}s"),
        60..=3599 => format!("{}m {}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {}h", s / 86_400, s % 86_400 / 3600),
    }
}

/// Bytes with a binary unit: `812 B`, `12.3 KiB`, `4.0 MiB`.
fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sizes_are_short() {
        assert_eq!(ago(Duration::from_millis(400)), "0.4s");
        assert_eq!(ago(Duration::from_secs(42)), "42s");
        assert_eq!(ago(Duration::from_secs(192)), "3m 12s");
        assert_eq!(ago(Duration::from_secs(7380)), "2h 3m");
        assert_eq!(bytes(812), "812 B");
        assert_eq!(bytes(12_595), "12.3 KiB");
    }

    #[test]
    fn a_server_without_a_name_is_said_to_be_shown_by_id() {
        let id = "NCXV5XMB6YKM5NHKNX2QAVU4XZ3LNXEWBQYX7RHOKHQ2IA4DU6RBDBJE";
        assert_eq!(
            server(id),
            format!("{id} (the server's id: it has no `server_name` in its configuration)")
        );
        assert_eq!(server("nats-1"), "nats-1");
        assert_eq!(server("NATS"), "NATS");
    }

    #[test]
    fn tables_align_and_trim() {
        let rows = vec![
            vec!["A".to_owned(), "NUM".to_owned(), "X".to_owned()],
            vec!["long".to_owned(), "7".to_owned(), String::new()],
        ];
        assert_eq!(
            table(&rows, &[false, true, false]),
            "A     NUM  X\nlong    7\n"
        );
    }
}
