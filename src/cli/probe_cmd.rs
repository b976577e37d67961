//! `invalog probe`: publishes canaries to the reserved `_probe` refresher at
//! a given rate and reports when every live node applied each of them (see
//! `invalog::probe`), as a table or one JSON document (`--json`). Live nodes
//! are those whose presence report is recent, those named with `--node`,
//! and any node that answers. Exits [`EXIT_PROBE_MISSED`] unless every
//! canary reached every live node within `--timeout`.
//!
//! With `--serve` it runs as a service instead (`invalog_agent::probe_service`):
//! one canary every `--every` until SIGTERM or SIGINT (then exit 0),
//! `/metrics` and `/healthz` served on the given address.

use std::io::Write as _;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use invalog::probe::{Latencies, ProbeReport, ProbeSettings};
use invalog_agent::probe_service::{PresenceSource, ServiceSettings};

use super::ConfigArg;
use super::PresenceArgs;
use super::{client_settings, jetstream};
use super::{EXIT_CONFIG, EXIT_FAILURE, EXIT_OK};

/// Exit code when a canary did not reach every live node within
/// `--timeout`, could not be published, or no node answered.
pub const EXIT_PROBE_MISSED: u8 = 6;

/// Arguments of `invalog probe`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Exit codes: 0 every canary reached every live node within --timeout; 6 a canary was missed, not published, or no node answered; 1 NATS or the stream failed; 2 invalid configuration or arguments; 3 NATS unreachable.\n\nWith --serve: runs until SIGTERM or SIGINT (Ctrl-C) and exits 0; 1 the reply subscription failed or ended; 2 invalid arguments or an address that cannot be bound; 3 NATS unreachable.\n\nExamples:\n  invalog probe -c config/publisher.toml\n  invalog probe -c config/publisher.toml --rate 5 --duration 5m --within 50ms --json\n  invalog probe -c config/publisher.toml --serve 0.0.0.0:9465 --every 1s"
)]
pub struct Args {
    #[command(flatten)]
    config: ConfigArg,
    /// Canaries per second.
    #[arg(long, default_value_t = 10.0)]
    rate: f64,
    /// How many canaries to send.
    #[arg(long, default_value_t = 100, conflicts_with = "duration")]
    count: u64,
    /// Send canaries for this long instead of --count (rate × duration canaries).
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// The T of "N of M canaries applied on all nodes within T".
    #[arg(long, default_value = "100ms", value_parser = humantime::parse_duration)]
    within: Duration,
    /// A canary not applied on a live node within this long is missed; the
    /// probe waits at most this long after the last canary.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// A node that must answer (repeatable), in addition to the nodes with a
    /// recent presence report.
    #[arg(long = "node", value_name = "NODE_ID")]
    nodes: Vec<String>,
    #[command(flatten)]
    presence: PresenceArgs,
    /// Print one JSON document instead of the table.
    #[arg(long)]
    json: bool,
    /// Run as a service: a canary every --every, forever, with /metrics and
    /// /healthz served on this address (default 127.0.0.1:9465).
    #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = "127.0.0.1:9465",
          conflicts_with_all = ["count", "duration", "rate", "within", "json"])]
    serve: Option<SocketAddr>,
    /// With --serve: time between canaries.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration, requires = "serve")]
    every: Duration,
    /// With --serve: a node that has not applied a canary for this long is
    /// no longer expected, and its series leave /metrics (--node ones stay).
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration, requires = "serve")]
    forget_after: Duration,
}

impl Args {
    /// Whether this is the long-running service (`--serve`).
    pub fn is_service(&self) -> bool {
        self.serve.is_some()
    }
}

/// Runs `invalog probe`.
pub async fn run(args: Args) -> anyhow::Result<u8> {
    let settings = match client_settings(&args.config.publisher()) {
        Ok(settings) => settings,
        Err(code) => return Ok(code),
    };
    if let Some(address) = args.serve {
        return serve(args, address, settings).await;
    }
    let count = match args.duration {
        Some(d) => (args.rate * d.as_secs_f64()).ceil() as u64,
        None => args.count,
    };
    if !(args.rate.is_finite() && args.rate > 0.0) || count == 0 || args.timeout.is_zero() {
        eprintln!("invalog: --rate, --count (or --duration) and --timeout must be more than 0");
        return Ok(EXIT_CONFIG);
    }
    let bucket = args.presence.bucket(&settings);
    let stale_after = args.presence.stale_after(&settings);
    let (client, js) = match jetstream(&settings.nats).await {
        Ok(connected) => connected,
        Err(code) => return Ok(code),
    };
    let mut expected = args.nodes.clone();
    match invalog::presence::read_all(&js, &bucket, &settings.log.stream).await {
        Ok(reports) => {
            let now = SystemTime::now();
            for r in reports {
                let age = now.duration_since(r.last_seen).unwrap_or_default();
                if r.state != "stopped" && age <= stale_after && !expected.contains(&r.node) {
                    expected.push(r.node);
                }
            }
        }
        Err(error) => eprintln!(
            "invalog: warning: {error}; only nodes named with --node and nodes that answer are counted"
        ),
    }
    let probe = ProbeSettings {
        rate: args.rate,
        count,
        within: args.within,
        timeout: args.timeout,
        expected_nodes: expected,
    };
    if !args.json {
        eprintln!(
            "probing: {count} canaries at {}/s to `{}`, expecting {} live node(s)…",
            args.rate,
            invalog::probe::PROBE_REFRESHER,
            probe.expected_nodes.len()
        );
    }
    let report = match invalog::probe::run(&js, &settings.log, settings.publisher, &probe).await {
        Ok(report) => report,
        Err(error) => {
            eprintln!("invalog: {error}");
            return Ok(EXIT_FAILURE);
        }
    };
    client.flush().await.ok();
    let out = if args.json {
        crate::json::probe::encode_probe_report(&report)
    } else {
        render(&report).into_bytes()
    };
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(&out)?;
    stdout.flush()?;
    Ok(if report.is_ok() {
        EXIT_OK
    } else {
        EXIT_PROBE_MISSED
    })
}

/// `invalog probe --serve`: binds, connects, runs the service until a
/// signal.
async fn serve(
    args: Args,
    address: SocketAddr,
    settings: invalog_agent::config::ClientSettings,
) -> anyhow::Result<u8> {
    if args.every.is_zero() || args.timeout.is_zero() || args.forget_after.is_zero() {
        eprintln!("invalog: --every, --timeout and --forget-after must be more than 0");
        return Ok(EXIT_CONFIG);
    }
    let listener = match tokio::net::TcpListener::bind(address).await {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!(
                "invalog: cannot listen on {address}: {error}; choose another --serve address"
            );
            return Ok(EXIT_CONFIG);
        }
    };
    let (client, js) = match jetstream(&settings.nats).await {
        Ok(connected) => connected,
        Err(code) => return Ok(code),
    };
    let service = ServiceSettings {
        every: args.every,
        timeout: args.timeout,
        forget_after: args.forget_after,
        nodes: args.nodes.clone(),
        presence: Some(PresenceSource {
            bucket: args.presence.bucket(&settings),
            stale_after: args.presence.stale_after(&settings),
        }),
    };
    tracing::info!(%address, "probe: serving /metrics and /healthz");
    let outcome = invalog_agent::probe_service::serve(
        &js,
        &settings.log,
        settings.publisher,
        &service,
        listener,
        super::agent_cmd::shutdown_signal(),
    )
    .await;
    client.flush().await.ok();
    match outcome {
        Ok(()) => Ok(EXIT_OK),
        Err(error) => {
            eprintln!("invalog: {error}");
            Ok(EXIT_FAILURE)
        }
    }
}

/// `1.234 ms`, `12.3 ms`, `1.25 s`.
fn duration(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms < 10.0 {
        format!("{ms:.2} ms")
    } else if ms < 1000.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{:.2} s", ms / 1000.0)
    }
}

fn latency(l: &Latencies, value: Option<Duration>) -> String {
    match value {
        Some(d) => duration(d),
        None if l.samples == 0 => "-".to_owned(),
        None => "missed".to_owned(),
    }
}

/// The table: a header, one row per node and one for the fleet, the "N of
/// M" line and a verdict.
fn render(r: &ProbeReport) -> String {
    let s = &r.settings;
    let within = humantime::format_duration(s.within).to_string();
    let timeout = humantime::format_duration(s.timeout).to_string();
    let mut out = format!(
        "probe {} at {}: {} canaries at {}/s in {}\n",
        r.probe,
        invalog::wire::format_time(r.started_at),
        r.sent,
        s.rate,
        duration(r.duration)
    );
    out.push_str(&format!(
        "published {} of {}; acknowledged by JetStream p50 {}, p99 {}, max {}\n\n",
        r.published,
        r.sent,
        latency(&r.publish_ack, r.publish_ack.p50),
        latency(&r.publish_ack, r.publish_ack.p99),
        latency(&r.publish_ack, r.publish_ack.max),
    ));
    let mut rows = vec![vec![
        "NODE".to_owned(),
        "EXPECTED".to_owned(),
        "APPLIED".to_owned(),
        format!("WITHIN {within}"),
        "MISSED".to_owned(),
        "P50".to_owned(),
        "P99".to_owned(),
        "MAX".to_owned(),
    ]];
    for n in &r.nodes {
        let name = if n.listed {
            n.node.clone()
        } else {
            format!("{} (unlisted)", n.node)
        };
        rows.push(vec![
            name,
            n.expected.to_string(),
            n.applied.to_string(),
            n.within.to_string(),
            n.missed.to_string(),
            latency(&n.latency, n.latency.p50),
            latency(&n.latency, n.latency.p99),
            latency(&n.latency, n.latency.max),
        ]);
    }
    rows.push(vec![
        "all nodes".to_owned(),
        r.published.to_string(),
        r.all_within_timeout.to_string(),
        r.all_within.to_string(),
        (r.published - r.all_within_timeout).to_string(),
        latency(&r.fleet, r.fleet.p50),
        latency(&r.fleet, r.fleet.p99),
        latency(&r.fleet, r.fleet.max),
    ]);
    out.push_str(&table(&rows));
    out.push('\n');
    out.push_str(&format!(
        "{} of {} canaries applied on all {} node(s) within {within} ({:.2}%, {} nine{})\n",
        r.all_within,
        r.published,
        r.nodes.len(),
        r.fraction_within() * 100.0,
        r.nines(),
        if r.nines() == 1 { "" } else { "s" }
    ));
    for f in &r.publish_failures {
        out.push_str(&format!("canary {} not published: {}\n", f.canary, f.error));
    }
    if r.is_ok() {
        out.push_str(&format!(
            "OK: every canary reached every live node within {timeout}\n"
        ));
    } else if r.nodes.is_empty() {
        out.push_str("MISSED: no node answered; are nodes running invalog with this stream?\n");
    } else {
        let missed: Vec<String> = r
            .nodes
            .iter()
            .filter(|n| n.missed > 0)
            .map(|n| match n.first_missed {
                Some(first) => format!("{} missed {} (first: canary {first})", n.node, n.missed),
                None => format!("{} missed {}", n.node, n.missed),
            })
            .collect();
        let mut problems = missed;
        if !r.publish_failures.is_empty() {
            problems.push(format!(
                "{} canaries not published",
                r.publish_failures.len()
            ));
        }
        out.push_str(&format!(
            "MISSED within {timeout}: {}\n",
            problems.join(", ")
        ));
    }
    out
}

/// Aligns columns with two spaces between them; numbers (every column but
/// the first) right-aligned.
fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let right: Vec<bool> = (0..columns).map(|c| c > 0).collect();
    super::table(rows, &right)
}
