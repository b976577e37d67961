//! `invalog replay`: re-applies a range of the log through the appliers of
//! an agent configuration, or with `--dry-run` prints what would be applied
//! (see `invalog::replay`), marking the messages a catching-up node would
//! supersede (`[node] catch_up_lookahead`, or `--lookahead`). One line per
//! message — a table, or JSON lines with `--json` — then a summary. Never
//! moves a stored sequence: the agent's checkpoint is not read or written.

use std::io::Write as _;

use invalog::history::Entry;
use invalog::replay::{Mode, Outcome, ReplayEvent, ReplayRequest, ReplaySummary};
use invalog::{RefresherName, Registry};
use serde_json::json;

use super::history_cmd::{self, HEADER};
use super::ConfigArg;
use super::{jetstream, Columns};
use super::{load_config, EXIT_CONFIG, EXIT_FAILURE, EXIT_OK};

/// Arguments of `invalog replay`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Exit codes: 0 every message of the range was applied (or would be, or would be superseded while catching up), or is not hosted here; 1 a message failed, did not decode, or is no longer in the stream, or NATS failed; 2 invalid configuration or arguments; 3 NATS unreachable.\n\nExamples:\n  invalog replay -c config/agent.toml --from-seq 1200 --to-seq 1250 --dry-run\n  invalog replay -c config/agent.toml --from-seq 1200 --to-seq 1250 --refresher content\n  invalog replay -c config/agent.toml --from-seq 1200 --json"
)]
pub struct Args {
    #[command(flatten)]
    config: ConfigArg,
    /// First sequence to replay.
    #[arg(long, value_name = "SEQ")]
    from_seq: u64,
    /// Last sequence to replay (default: the stream's last sequence when the
    /// replay starts).
    #[arg(long, value_name = "SEQ")]
    to_seq: Option<u64>,
    /// Only messages for this refresher (repeatable).
    #[arg(long = "refresher", value_name = "NAME")]
    refreshers: Vec<String>,
    /// Apply nothing; print what would be applied (then any configuration
    /// with [nats] and [stream] will do, not only an agent's), and which
    /// messages a node catching up over the range would supersede: those
    /// followed within the lookahead window by a refresh-all of their
    /// refresher.
    #[arg(long)]
    dry_run: bool,
    /// The dry run's lookahead window in messages (default: the
    /// configuration's `[node] catch_up_lookahead`, else 1000; 0: mark none
    /// superseded).
    #[arg(long, value_name = "N", requires = "dry_run")]
    lookahead: Option<usize>,
    /// Stop at the first message that fails instead of going on.
    #[arg(long)]
    fail_fast: bool,
    /// Print JSON lines (one per message, then a summary) instead of the table.
    #[arg(long)]
    json: bool,
}

/// Runs `invalog replay`.
pub async fn run(args: Args) -> anyhow::Result<u8> {
    if args.to_seq.is_some_and(|to| to < args.from_seq) || args.from_seq == 0 {
        eprintln!("invalog: --from-seq must be at least 1 and not after --to-seq");
        return Ok(EXIT_CONFIG);
    }
    let config = match load_config(&args.config.agent()) {
        Ok(config) => config,
        Err(error) => return Ok(config_error(error)),
    };
    let mut filter = Vec::new();
    for name in &args.refreshers {
        match RefresherName::new(name.as_str()) {
            Ok(name) => filter.push(name),
            Err(error) => return Ok(config_error(error.into())),
        }
    }
    // A dry run needs no appliers: any configuration that names the stream.
    let (mut lookahead, mut node_id) = (0, None);
    let (nats, log, registry, hosted) = if args.dry_run {
        let client = match config.client() {
            Ok(client) => client,
            Err(error) => return Ok(config_error(error.into())),
        };
        let names: Vec<RefresherName> = client.refreshers.iter().map(|d| d.name.clone()).collect();
        lookahead = args.lookahead.unwrap_or(client.catch_up_lookahead);
        node_id = client.node_id;
        (
            client.nats,
            client.log,
            Registry::new(),
            (!names.is_empty()).then_some(names),
        )
    } else {
        let agent = match config.agent() {
            Ok(agent) => agent,
            Err(error) => return Ok(config_error(error.into())),
        };
        let mut registry = Registry::new();
        for (def, applier) in &agent.refreshers {
            let built = invalog_agent::applier::build(def, applier).map_err(anyhow::Error::from);
            let added = built.and_then(|h| {
                registry
                    .register_arc(def.clone(), h)
                    .map(|_| ())
                    .map_err(Into::into)
            });
            if let Err(error) = added {
                return Ok(config_error(error));
            }
        }
        if let Some(name) = filter.iter().find(|n| registry.get(n.as_str()).is_none()) {
            eprintln!(
                "invalog: {}: refresher `{name}` is not configured, so nothing of it can be replayed",
                args.config.agent().display()
            );
            return Ok(EXIT_CONFIG);
        }
        (agent.nats, agent.log, registry, None)
    };
    let mode = if args.dry_run {
        Mode::DryRun {
            hosted: hosted.as_deref(),
            lookahead,
            node: node_id.as_ref(),
        }
    } else {
        Mode::Apply(&registry)
    };
    let request = ReplayRequest {
        from: args.from_seq,
        to: args.to_seq,
        refreshers: filter,
        stop_on_failure: args.fail_fast,
    };
    let (_client, js) = match jetstream(&nats).await {
        Ok(connected) => connected,
        Err(code) => return Ok(code),
    };
    let json = args.json;
    let mut stdout = std::io::stdout().lock();
    let mut columns = table_columns();
    let outcome = invalog::replay::replay(&js, &log, mode, &request, |event| {
        let text = if json {
            format!("{}\n", json_line(&event))
        } else {
            columns.render(&[table_row(&event)])
        };
        let _ = stdout.write_all(text.as_bytes());
        let _ = stdout.flush();
    })
    .await;
    let summary = match outcome {
        Ok(summary) => summary,
        Err(error) => {
            eprintln!("invalog: {error}");
            return Ok(EXIT_FAILURE);
        }
    };
    if json {
        writeln!(stdout, "{}", json_summary(&summary))?;
    } else {
        let gap = if columns.fixed() { "\n" } else { "" };
        writeln!(stdout, "{gap}{}", text_summary(&summary))?;
    }
    stdout.flush()?;
    Ok(if summary.is_clean() {
        EXIT_OK
    } else {
        EXIT_FAILURE
    })
}

fn config_error(error: anyhow::Error) -> u8 {
    eprintln!("invalog: {error:#}");
    EXIT_CONFIG
}

fn refresher_of(entry: &Entry) -> &str {
    entry.subject.rsplit('.').next().unwrap_or_default()
}

fn result_text(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Applied { took } => format!("applied ({:.1} ms)", took.as_secs_f64() * 1000.0),
        Outcome::WouldApply => "would apply".to_owned(),
        Outcome::Superseded { .. } => "superseded".to_owned(),
        Outcome::Failed { .. } => "FAILED".to_owned(),
        Outcome::Undecodable => "UNDECODABLE".to_owned(),
        Outcome::NotHosted => "not hosted (skipped)".to_owned(),
        Outcome::Canary => "probe canary (skipped)".to_owned(),
    }
}

/// The columns of `history` with RESULT before WHAT.
fn table_columns() -> Columns {
    let mut header = HEADER.to_vec();
    header.insert(4, "RESULT");
    // "probe canary (skipped)" is the longest result.
    Columns::new(&header, &[3, 24, 8, 9, 22, 4])
}

fn table_row(event: &ReplayEvent<'_>) -> Vec<String> {
    let (entry, outcome) = match event {
        ReplayEvent::Missing { from, to } => {
            return vec![
                from.to_string(),
                format!("MISSING: sequences {from}..={to} are no longer in the stream (retention); not replayed"),
            ];
        }
        ReplayEvent::Message { entry, outcome } => (*entry, *outcome),
    };
    let mut row = history_cmd::row(entry);
    let note = match outcome {
        Outcome::Failed { error } => format!("  — error: {error}"),
        Outcome::Superseded { by } => {
            format!("  — would be superseded while catching up (refresh_all at {by})")
        }
        _ => String::new(),
    };
    if let Some(what) = row.last_mut() {
        what.push_str(&note);
    }
    row.insert(4, result_text(outcome));
    row
}

fn json_line(event: &ReplayEvent<'_>) -> String {
    let (entry, outcome) = match event {
        ReplayEvent::Missing { from, to } => {
            return json!({"missing": {"from": from, "to": to}}).to_string();
        }
        ReplayEvent::Message { entry, outcome } => (*entry, *outcome),
    };
    let (batch, decode_error) = match &entry.batch {
        Ok(batch) => (
            serde_json::from_slice::<serde_json::Value>(&invalog::wire::encode(batch)).ok(),
            None,
        ),
        Err(error) => (None, Some(error.to_string())),
    };
    let (took_ms, error) = match outcome {
        Outcome::Applied { took } => (
            Some((took.as_secs_f64() * 1e6).round() / 1000.0),
            decode_error,
        ),
        Outcome::Failed { error } => (None, Some(error.clone())),
        _ => (None, decode_error),
    };
    json!({
        "sequence": entry.sequence,
        "subject": entry.subject,
        "refresher": refresher_of(entry),
        "stored_at": invalog::wire::format_time(entry.stored_at),
        "outcome": outcome.name(),
        "superseded_by": match outcome {
            Outcome::Superseded { by } => Some(*by),
            _ => None,
        },
        "took_ms": took_ms,
        "error": error,
        "batch": batch,
    })
    .to_string()
}

fn json_summary(s: &ReplaySummary) -> String {
    json!({"summary": {
        "from": s.from,
        "to": s.to,
        "stream_first": s.stream_first,
        "stream_last": s.stream_last,
        "dry_run": s.dry_run,
        "clean": s.is_clean(),
        "applied": s.applied,
        "would_apply": s.would_apply,
        "superseded": s.superseded,
        "lookahead": s.lookahead,
        "failed": s.failed,
        "undecodable": s.undecodable,
        "not_hosted": s.not_hosted,
        "canaries": s.canaries,
        "filtered_out": s.filtered_out,
        "missing": s.missing_count(),
        "missing_ranges": s.missing.iter().map(|(a, b)| json!([a, b])).collect::<Vec<_>>(),
        "stopped_at": s.stopped_at,
    }})
    .to_string()
}

fn text_summary(s: &ReplaySummary) -> String {
    let mut parts = vec![if s.dry_run {
        format!("{} would be applied", s.would_apply)
    } else {
        format!("{} applied", s.applied)
    }];
    if s.superseded > 0 {
        parts.push(format!(
            "{} superseded while catching up (lookahead {})",
            s.superseded, s.lookahead
        ));
    }
    for (count, what) in [
        (s.failed, "FAILED"),
        (s.undecodable, "UNDECODABLE"),
        (s.missing_count(), "MISSING"),
        (s.not_hosted, "not hosted"),
        (s.canaries, "probe canaries"),
        (s.filtered_out, "filtered out"),
    ] {
        if count > 0 {
            parts.push(format!("{count} {what}"));
        }
    }
    let mut out = format!(
        "{} {}..={} (stream holds {}..={}): {}",
        if s.dry_run { "dry run of" } else { "replayed" },
        s.from,
        s.to,
        s.stream_first,
        s.stream_last,
        parts.join(", ")
    );
    if let Some(at) = s.stopped_at {
        out.push_str(&format!("\nstopped at sequence {at} (--fail-fast)"));
    }
    if !s.is_clean() {
        out.push_str("\nnot clean: see the lines marked FAILED, UNDECODABLE or MISSING");
    }
    out
}
