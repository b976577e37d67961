//! Command-line interface: the subcommands and their arguments. Each
//! subcommand lives in its own module and returns an exit code.

mod agent_cmd;
mod config_cmd;
mod demo;
mod explain_cmd;
mod history_cmd;
mod probe_cmd;
mod publish_cmd;
mod replay_cmd;
mod status_cmd;
mod stream_cmd;

use clap::{Parser, Subcommand};
use invalog::printable::printable;
use invalog_agent::LogFormat;

/// Exit code for success.
pub const EXIT_OK: u8 = 0;
/// Exit code for any failure not given its own code.
pub const EXIT_FAILURE: u8 = 1;
/// Exit code for an invalid configuration file, environment or arguments.
pub const EXIT_CONFIG: u8 = 2;
/// Exit code when NATS cannot be reached or refuses the credentials.
pub const EXIT_NATS: u8 = 3;
/// Exit code when the stream cannot be provisioned as configured.
pub const EXIT_STREAM: u8 = 4;

/// invalog: a cache-invalidation log for fleets of servers, on NATS JetStream.
#[derive(Debug, Parser)]
#[command(name = "invalog", version, about, long_about = None)]
pub struct Args {
    /// Log filter (as RUST_LOG), for example `info` or `invalog=debug`;
    /// overrides the configuration's `logging.level`.
    #[arg(long, global = true, env = "RUST_LOG", hide_env_values = true)]
    log: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs a self-contained demo: starts a local nats-server, three nodes,
    /// publishes, stops and restarts a node, and shows it catching up.
    Demo(demo::DemoArgs),
    /// Runs the sidecar beside one node: applies the log to the node's
    /// caches through the configured appliers; serves /healthz, /readyz,
    /// /metrics, /status and /applied.
    Agent(agent_cmd::AgentArgs),
    /// Publishes instructions (arguments, or JSON lines on stdin) and prints
    /// the sequence of each message.
    Publish(publish_cmd::PublishArgs),
    /// Validates a configuration file and prints the effective
    /// configuration, secrets redacted.
    #[command(subcommand_value_name = "ACTION")]
    Config(config_cmd::ConfigArgs),
    /// Shows what was invalidated, when, by whom: filtered by sequence,
    /// time, refresher, id, origin or actor; as a table or JSON lines;
    /// `--follow` tails the log.
    History(history_cmd::Args),
    /// Shows the stream and every node's position, lag and readiness; exits
    /// non-zero when a node is unready or stale.
    Status(status_cmd::Args),
    /// Explains why an entry may be stale: the last instructions that
    /// touched it and whether each node has applied them.
    Explain(explain_cmd::Args),
    /// Re-applies a range of the log through a node's appliers (or prints
    /// it with --dry-run); never moves a stored sequence.
    Replay(replay_cmd::Args),
    /// Publishes canary instructions and measures when every live node
    /// applied them.
    Probe(probe_cmd::Args),
    /// Owns the log's stream: `show` its settings next to a configuration's,
    /// `provision` it from a configuration, `edit` single settings; changes
    /// that delete messages need --allow-data-loss.
    #[command(subcommand_value_name = "ACTION")]
    Stream(stream_cmd::Args),
}

/// Runs the parsed command.
pub async fn run(args: Args) -> anyhow::Result<u8> {
    // The agent sets up logging from its configuration; the rest log text.
    if !matches!(args.command, Command::Agent(_)) {
        // The probe service logs its start and a summary a minute.
        let service = matches!(&args.command, Command::Probe(a) if a.is_service());
        let default = if service { "info" } else { "warn" };
        init_logging(args.log.as_deref().unwrap_or(default), LogFormat::Text);
    }
    match args.command {
        Command::Agent(a) => agent_cmd::run(a, args.log).await,
        Command::Demo(a) => demo::run(a).await,
        Command::Publish(a) => publish_cmd::run(a).await,
        Command::Config(a) => config_cmd::run(a).await,
        Command::History(a) => history_cmd::run(a).await,
        Command::Status(a) => status_cmd::run(a).await,
        Command::Explain(a) => explain_cmd::run(a).await,
        Command::Replay(a) => replay_cmd::run(a).await,
        Command::Probe(a) => probe_cmd::run(a).await,
        Command::Stream(a) => stream_cmd::run(a).await,
    }
}

/// Installs the log subscriber: text or JSON lines on stderr. Colours
/// (ANSI escape codes) only when stderr is a terminal, never in a file or
/// a pipe.
pub fn init_logging(filter: &str, format: LogFormat) {
    use std::io::IsTerminal as _;
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Loads a configuration file (and `INVALOG_…` environment overrides). A
/// missing file is said with the ways to name another.
pub fn load_config(path: &std::path::Path) -> anyhow::Result<invalog_agent::config::Config> {
    if !path.exists() {
        let relative = match (path.is_relative(), std::env::current_dir()) {
            (true, Ok(dir)) => format!(" (in {})", dir.display()),
            _ => String::new(),
        };
        anyhow::bail!(
            "{}: no such configuration file{relative}; name the file with `-c FILE` (`--config FILE`) or the INVALOG_CONFIG environment variable",
            path.display()
        );
    }
    Ok(invalog_agent::config::load(path)?)
}

/// Loads the client settings (`invalog publish`, `history`, `status`, ...)
/// of `path`; on failure prints why and gives [`EXIT_CONFIG`].
pub fn client_settings(
    path: &std::path::Path,
) -> Result<invalog_agent::config::ClientSettings, u8> {
    load_config(path)
        .and_then(|config| config.client().map_err(Into::into))
        .map_err(|error| {
            eprintln!("invalog: {error:#}");
            EXIT_CONFIG
        })
}

/// Connects and opens JetStream with the configured request timeout; on
/// failure prints why and gives [`EXIT_NATS`].
pub async fn jetstream(
    nats: &invalog::connect::NatsSettings,
) -> Result<(async_nats::Client, async_nats::jetstream::Context), u8> {
    let client = invalog::connect::connect(nats).await.map_err(|error| {
        eprintln!("invalog: {error}");
        EXIT_NATS
    })?;
    let js = async_nats::jetstream::context::ContextBuilder::new()
        .timeout(nats.request_timeout)
        .build(client.clone());
    Ok((client, js))
}

/// `-c FILE`: the configuration file a command reads.
#[derive(Debug, clap::Args)]
pub struct ConfigArg {
    /// The configuration file (TOML; `INVALOG_…` environment variables
    /// override it). Default: `config/agent.toml` for `agent`, `replay` and
    /// `stream`, else `config/publisher.toml`, from the current directory.
    #[arg(
        long = "config",
        short = 'c',
        env = "INVALOG_CONFIG",
        hide_env_values = true,
        value_name = "FILE"
    )]
    file: Option<std::path::PathBuf>,
}

impl ConfigArg {
    /// The file of a command that publishes or reads the log.
    pub fn publisher(&self) -> std::path::PathBuf {
        self.or("config/publisher.toml")
    }

    /// The file of a command that runs appliers or owns the stream
    /// (`agent`, `replay`, `stream`).
    pub fn agent(&self) -> std::path::PathBuf {
        self.or("config/agent.toml")
    }

    fn or(&self, default: &str) -> std::path::PathBuf {
        self.file.clone().unwrap_or_else(|| default.into())
    }
}

/// Where node reports are read, for `status`, `explain` and `probe`.
#[derive(Debug, clap::Args)]
pub struct PresenceArgs {
    /// The presence bucket (default: `presence.bucket`, else `invalog_nodes`).
    #[arg(long)]
    bucket: Option<String>,
    /// A node whose last report is older than this is stale (default:
    /// `presence.stale_after`, else 30s).
    #[arg(long, value_parser = humantime::parse_duration)]
    stale_after: Option<std::time::Duration>,
}

impl PresenceArgs {
    /// The bucket: the flag, else the configuration.
    pub fn bucket(&self, settings: &invalog_agent::config::ClientSettings) -> String {
        self.bucket
            .clone()
            .unwrap_or_else(|| settings.presence.bucket.clone())
    }

    /// The staleness limit: the flag, else the configuration.
    pub fn stale_after(
        &self,
        settings: &invalog_agent::config::ClientSettings,
    ) -> std::time::Duration {
        self.stale_after.unwrap_or(settings.stale_after)
    }
}

/// Aligns columns with two spaces between them; `right[i]` right-aligns
/// column `i`. The last column is not padded. Like [`Columns`], it prints
/// every cell made printable (see [`line`]).
pub fn table(rows: &[Vec<String>], right: &[bool]) -> String {
    let widths = widths(rows, &[]);
    rows.iter().map(|row| line(row, &widths, right)).collect()
}

/// A table printed while its rows arrive (`history`, `replay`, the demo):
/// the first [`Columns::render`] prints the header and fixes the widths
/// from it, `min` and the rows given; later rows keep those widths (a
/// longer cell shifts only its own line). Every column is left-aligned.
pub struct Columns {
    header: Vec<String>,
    min: Vec<usize>,
    widths: Option<Vec<usize>>,
}

impl Columns {
    /// Columns named `header`, each at least `min[i]` wide.
    pub fn new(header: &[&str], min: &[usize]) -> Self {
        Columns {
            header: header.iter().map(|h| h.to_string()).collect(),
            min: min.to_vec(),
            widths: None,
        }
    }

    /// Whether the header is out and the widths fixed.
    pub fn fixed(&self) -> bool {
        self.widths.is_some()
    }

    /// The lines of `rows`, after the header on the first call.
    pub fn render(&mut self, rows: &[Vec<String>]) -> String {
        let mut out = String::new();
        let widths = match &self.widths {
            Some(widths) => widths.clone(),
            None => {
                let mut all = vec![self.header.clone()];
                all.extend(rows.iter().cloned());
                let widths = widths(&all, &self.min);
                out.push_str(&line(&self.header, &widths, &[]));
                self.widths = Some(widths.clone());
                widths
            }
        };
        for row in rows {
            out.push_str(&line(row, &widths, &[]));
        }
        out
    }
}

/// Each column's width: its widest cell, at least `min`.
fn widths(rows: &[Vec<String>], min: &[usize]) -> Vec<usize> {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0).max(min.len());
    (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|cell| printable(cell).chars().count())
                .chain(min.get(c).copied())
                .max()
                .unwrap_or(0)
        })
        .collect()
}

/// One row: cells padded to `widths` (right-aligned where `right` says),
/// two spaces apart, the last cell not padded, no trailing spaces. Cells
/// are made printable (control characters escaped as `\u{1b}`): origins,
/// keys, actors, node ids and reasons come from publishers and nodes.
fn line(row: &[String], widths: &[usize], right: &[bool]) -> String {
    let mut line = String::new();
    for (c, cell) in row.iter().enumerate() {
        let cell = &*printable(cell);
        if c > 0 {
            line.push_str("  ");
        }
        let pad = widths
            .get(c)
            .copied()
            .unwrap_or(0)
            .saturating_sub(cell.chars().count());
        let last = c + 1 == row.len();
        if right.get(c).copied().unwrap_or(false) {
            line.push_str(&" ".repeat(pad));
            line.push_str(cell);
        } else {
            line.push_str(cell);
            if !last {
                line.push_str(&" ".repeat(pad));
            }
        }
    }
    let mut line = line.trim_end().to_owned();
    line.push('\n');
    line
}
