//! `invalog explain`: "why is this page stale?" — the last changes that
//! touched one entry of one refresher (read from the log, filtered on the
//! server by the refresher's subject) and, for every node or one, whether it
//! has applied the newest of them (from the presence bucket). Prints a table
//! and one answer line per node, or one JSON document
//! (`crate::json::history`).

use std::io::Write as _;

use invalog::fleet::explain::{self, Explanation, Question, Verdict};
use invalog::history::{HistoryError, Target};
use invalog::printable::printable_lines;
use invalog::RefresherName;

use super::history_cmd::{millis, what};
use super::ConfigArg;
use super::PresenceArgs;
use super::{client_settings, jetstream};
use super::{EXIT_CONFIG, EXIT_FAILURE, EXIT_OK};

/// Arguments of `invalog explain`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Exit codes: 0 explained; 1 the log or the presence bucket cannot be read; 2 invalid configuration or arguments, or a refresher that neither the configuration, nor any node, nor the log knows; 3 NATS unreachable or credentials refused.\n\nExamples:\n  invalog explain -c config/publisher.toml --refresher content --id 42\n  invalog explain -c config/publisher.toml --refresher content --id home --node web-3 --json"
)]
pub struct Args {
    #[command(flatten)]
    config: ConfigArg,
    /// The refresher that caches the entry.
    #[arg(long, short)]
    refresher: String,
    /// The entry: an integer id, a UUID or a key.
    #[arg(long)]
    id: String,
    /// Only this node (default: every node that reports its presence).
    #[arg(long)]
    node: Option<String>,
    /// How many of the last changes to show.
    #[arg(long, short = 'n', default_value_t = 10, value_name = "N")]
    last: usize,
    #[command(flatten)]
    presence: PresenceArgs,
    /// Print one JSON document instead of the table.
    #[arg(long)]
    json: bool,
}

/// Runs `invalog explain`.
pub async fn run(args: Args) -> anyhow::Result<u8> {
    let settings = match client_settings(&args.config.publisher()) {
        Ok(settings) => settings,
        Err(code) => return Ok(code),
    };
    let refresher = match RefresherName::new(args.refresher.trim()) {
        Ok(name) => name,
        Err(error) => {
            eprintln!("invalog: {error}");
            return Ok(EXIT_CONFIG);
        }
    };
    let question = Question {
        refresher,
        target: Target::parse(&args.id),
        node: args.node.clone(),
        last: args.last.max(1),
        bucket: args.presence.bucket(&settings),
        stale_after: args.presence.stale_after(&settings),
    };
    let (_client, js) = match jetstream(&settings.nats).await {
        Ok(connected) => connected,
        Err(code) => return Ok(code),
    };
    let explanation = match explain::explain(&js, &settings.log, question).await {
        Ok(x) => x,
        Err(error) => {
            eprintln!("invalog: {error}");
            return Ok(match error {
                explain::ExplainError::History(HistoryError::Query(_)) => EXIT_CONFIG,
                _ => EXIT_FAILURE,
            });
        }
    };
    if let Some(message) = unknown_refresher(&explanation, &settings, &args.config.publisher()) {
        eprintln!("invalog: {message}");
        return Ok(EXIT_CONFIG);
    }
    let text = if args.json {
        format!(
            "{}\n",
            crate::json::history::encode_explanation(&explanation)
        )
    } else {
        printable_lines(&render(&explanation)).into_owned()
    };
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|_| stdout.flush())
    {
        Ok(()) => Ok(EXIT_OK),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(EXIT_OK),
        Err(e) => Err(e.into()),
    }
}

/// Why the refresher asked about does not exist, when nothing knows it:
/// not the configuration, no node's report, no change in the log.
fn unknown_refresher(
    x: &Explanation,
    settings: &invalog_agent::config::ClientSettings,
    config: &std::path::Path,
) -> Option<String> {
    let name = x.question.refresher.as_str();
    let configured = settings.refreshers.iter().map(|d| d.name.as_str());
    let hosted = x
        .nodes
        .iter()
        .flat_map(|n| n.status.report.refreshers.iter().map(String::as_str));
    let known: Vec<&str> = configured.chain(hosted).collect();
    if known.contains(&name) || !x.changes.is_empty() {
        return None;
    }
    Some(format!(
        "no refresher `{name}` in {} or in any node's report, and no change to it in the log; {}",
        config.display(),
        invalog_agent::config::did_you_mean(name, known, "refreshers")
    ))
}

/// The table of changes, the table of nodes, and one answer per node.
fn render(x: &Explanation) -> String {
    let q = &x.question;
    let mut out = String::new();
    let log = format!(
        "the log holds sequences {} to {}",
        x.first_sequence, x.last_sequence
    );
    if x.changes.is_empty() {
        out.push_str(&format!(
            "No change to {} {} is in the log ({log}).\n",
            q.refresher, q.target
        ));
    } else {
        let n = x.changes.len();
        let changes = if n == 1 { "change" } else { "changes" };
        out.push_str(&format!(
            "Last {n} {changes} to {} {} ({log}):\n\n",
            q.refresher, q.target
        ));
        let mut rows = vec![["SEQ", "TIME", "ORIGIN", "TOUCH", "WHAT"].map(String::from)];
        for c in &x.changes {
            rows.push([
                c.entry.sequence.to_string(),
                millis(c.entry.stored_at),
                c.entry
                    .batch
                    .as_ref()
                    .map_or_else(|_| "-".to_owned(), |b| b.origin.clone()),
                c.touch.as_str().to_owned(),
                what(&c.entry),
            ]);
        }
        out.push_str(&table(&rows));
    }
    out.push('\n');
    if let Some(why) = &x.no_presence {
        out.push_str(&format!("No node positions: {why}.\n"));
        return out;
    }
    if x.nodes.is_empty() {
        out.push_str("No node has reported its position.\n");
        return out;
    }
    let mut rows =
        vec![["NODE", "APPLIED", "STATE", "READY", "LAST SEEN", "VERDICT"].map(String::from)];
    for n in &x.nodes {
        let r = &n.status.report;
        rows.push([
            r.node.clone(),
            r.applied.to_string(),
            r.state.clone(),
            match (n.status.stale, r.ready) {
                (true, _) => "STALE".to_owned(),
                (false, true) => "yes".to_owned(),
                (false, false) => "no".to_owned(),
            },
            format!("{}s ago", n.status.seen_ago.as_secs()),
            match n.verdict {
                Verdict::Behind { newest } => {
                    format!("behind ({} to go)", newest.saturating_sub(r.applied))
                }
                v => v.as_str().replace('_', " "),
            },
        ]);
    }
    out.push_str(&table(&rows));
    out.push('\n');
    for n in &x.nodes {
        out.push_str(&n.sentence(q));
        out.push('\n');
    }
    out
}

fn table<const N: usize>(rows: &[[String; N]]) -> String {
    let rows: Vec<Vec<String>> = rows.iter().map(|row| row.to_vec()).collect();
    super::table(&rows, &[])
}
