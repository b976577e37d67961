//! `invalog stream show | provision | edit`: the one place that owns the
//! log's stream. Agents only create a missing stream and warn when its
//! settings differ from theirs (`[stream] provision = "create"`); these
//! commands show the difference and change the stream on purpose. Changes
//! that delete messages need `--allow-data-loss`.

use std::path::Path;
use std::time::Duration;

use invalog::stream::{self, Change, ProvisionError, Provisioned};
use invalog::LogSettings;

use super::{client_settings, jetstream, table, ConfigArg, EXIT_OK, EXIT_STREAM};

/// Arguments of `invalog stream`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Exit codes: 0 done (`show`: the stream exists, whether or not it differs); 2 invalid configuration or arguments; 3 NATS unreachable or credentials refused; 4 the stream does not exist (`show`, `edit`), or the change was refused (it would delete messages without --allow-data-loss, the server cannot make it in place, or the server applied something else).\n\nExamples:\n  invalog stream show -c config/agent.toml\n  invalog stream provision -c config/agent.toml\n  invalog stream provision -c config/agent.toml --allow-data-loss\n  invalog stream edit -c config/agent.toml --max-age 30d --max-bytes unlimited\n  invalog stream edit -c config/agent.toml --max-age 1d --allow-data-loss"
)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
}

#[derive(Debug, clap::Subcommand)]
enum Action {
    /// Shows every setting invalog gives the stream: the stream's value on
    /// the server next to the configuration's, and which differ.
    Show {
        #[command(flatten)]
        file: ConfigArg,
    },
    /// Creates the stream, or updates it to the configuration's [stream].
    /// Refuses changes that delete messages unless --allow-data-loss.
    Provision {
        #[command(flatten)]
        file: ConfigArg,
        /// Apply changes that delete messages (shorter retention, lower
        /// limits, another subject prefix).
        #[arg(long)]
        allow_data_loss: bool,
    },
    /// Changes the settings given here and keeps the stream's others (the
    /// configuration names the server and the stream only). Refuses changes
    /// that delete messages unless --allow-data-loss.
    Edit {
        #[command(flatten)]
        file: ConfigArg,
        #[command(flatten)]
        changes: Edits,
        /// Apply changes that delete messages.
        #[arg(long)]
        allow_data_loss: bool,
    },
}

/// The settings `edit` can change; "unlimited" lifts a limit.
#[derive(Debug, clap::Args)]
struct Edits {
    /// Oldest message kept, like `7d` or `12h`, or `unlimited`.
    #[arg(long, value_parser = unlimited_or(|s| humantime::parse_duration(s).map_err(|e| e.to_string())))]
    max_age: Option<Limit<Duration>>,
    /// Most messages kept, or `unlimited`.
    #[arg(long, value_parser = unlimited_or(|s| s.parse::<u64>().map_err(|e| e.to_string())))]
    max_messages: Option<Limit<u64>>,
    /// Most bytes kept, like `10GiB`, or `unlimited`.
    #[arg(long, value_parser = unlimited_or(bytes))]
    max_bytes: Option<Limit<u64>>,
    /// Largest message accepted, like `1MiB`.
    #[arg(long, value_parser = bytes)]
    max_message_size: Option<u64>,
    /// How long a batch id is remembered, like `2m`.
    #[arg(long, value_parser = humantime::parse_duration)]
    duplicate_window: Option<Duration>,
    /// Copies of each message, 1 to 5.
    #[arg(long, value_parser = clap::value_parser!(u8).range(1..=5))]
    replicas: Option<u8>,
}

/// A limit: a value, or none.
#[derive(Debug, Clone, Copy)]
struct Limit<T>(Option<T>);

fn unlimited_or<T: Clone + Send + Sync + 'static>(
    parse: impl Fn(&str) -> Result<T, String> + Clone + Send + Sync + 'static,
) -> impl Fn(&str) -> Result<Limit<T>, String> + Clone + Send + Sync + 'static {
    move |s| match s {
        "unlimited" => Ok(Limit(None)),
        _ => parse(s).map(|v| Limit(Some(v))),
    }
}

fn bytes(s: &str) -> Result<u64, String> {
    s.parse::<bytesize::ByteSize>()
        .map(|b| b.as_u64())
        .map_err(|_| format!("`{s}` is not a size; write bytes (`1048576`) or a number and a unit (`512KiB`, `10GiB`)"))
}

/// Runs `invalog stream`.
pub async fn run(args: Args) -> anyhow::Result<u8> {
    let file = match &args.action {
        Action::Show { file } | Action::Provision { file, .. } | Action::Edit { file, .. } => {
            file.agent()
        }
    };
    let file = file.as_path();
    let settings = match client_settings(file) {
        Ok(settings) => settings,
        Err(code) => return Ok(code),
    };
    let (_client, js) = match jetstream(&settings.nats).await {
        Ok(connected) => connected,
        Err(code) => return Ok(code),
    };
    let log = &settings.log;
    let result = match args.action {
        Action::Show { .. } => return show(&js, log, file).await,
        Action::Provision {
            allow_data_loss, ..
        } => provision(&js, log, allow_data_loss).await,
        Action::Edit {
            ref changes,
            allow_data_loss,
            ..
        } => match stream::inspect(&js, log).await {
            Ok(Some(info)) => {
                let edited = changes.apply(LogSettings::of_stream(&info.config));
                match provision(&js, &edited, allow_data_loss).await {
                    Err(ProvisionError::WouldLoseData { stream, changes }) => {
                        eprintln!(
                            "invalog: stream `{stream}`: refusing a change that can delete messages ({}); run the same command with --allow-data-loss to apply it on purpose",
                            Change::list(&changes)
                        );
                        return Ok(EXIT_STREAM);
                    }
                    result => result,
                }
            }
            Ok(None) => return Ok(missing(log, file)),
            Err(e) => Err(e),
        },
    };
    match result {
        Ok(Provisioned::Created(_)) => println!("stream {}: created", log.stream),
        Ok(Provisioned::Unchanged(_)) => println!("stream {}: unchanged", log.stream),
        Ok(Provisioned::Updated(_, changes) | Provisioned::Differs(_, changes)) => {
            println!(
                "stream {}: updated: {}\nAgents whose [stream] differs keep running and warn at start; `invalog stream show -c FILE` compares a file with the stream.",
                log.stream,
                Change::list(&changes)
            );
        }
        Err(error) => {
            eprintln!("invalog: {}", in_file(&error, file));
            return Ok(EXIT_STREAM);
        }
    }
    Ok(EXIT_OK)
}

async fn provision(
    js: &async_nats::jetstream::Context,
    log: &LogSettings,
    allow_data_loss: bool,
) -> Result<Provisioned, ProvisionError> {
    if allow_data_loss {
        stream::provision_allowing_data_loss(js, log).await
    } else {
        stream::provision(js, log).await
    }
}

impl Edits {
    fn apply(&self, mut log: LogSettings) -> LogSettings {
        if let Some(Limit(age)) = self.max_age {
            log.max_age = age;
        }
        if let Some(Limit(n)) = self.max_messages {
            log.max_messages = n;
        }
        if let Some(Limit(n)) = self.max_bytes {
            log.max_bytes = n;
        }
        if let Some(size) = self.max_message_size {
            log.max_message_size = u32::try_from(size).unwrap_or(u32::MAX);
        }
        if let Some(window) = self.duplicate_window {
            log.duplicate_window = window;
        }
        if let Some(replicas) = self.replicas {
            log.replicas = replicas.into();
        }
        log
    }
}

/// The stream's settings next to the file's, one row per setting.
async fn show(
    js: &async_nats::jetstream::Context,
    log: &LogSettings,
    file: &Path,
) -> anyhow::Result<u8> {
    let info = match stream::inspect(js, log).await {
        Ok(Some(info)) => info,
        Ok(None) => return Ok(missing(log, file)),
        Err(error) => {
            eprintln!("invalog: {error}");
            return Ok(EXIT_STREAM);
        }
    };
    let state = &info.state;
    println!(
        "stream {}: {} messages, {} (first sequence {}, last {}), created {}",
        log.stream,
        state.messages,
        invalog::units::size(state.bytes),
        state.first_sequence,
        state.last_sequence,
        humantime::format_rfc3339_seconds(info.created.into()),
    );
    let wanted = stream::fields(&log.stream_config());
    let mut rows = vec![vec![
        "SETTING".to_string(),
        "ON THE SERVER".to_string(),
        "IN THE FILE".to_string(),
        String::new(),
    ]];
    let mut differ = 0;
    for ((field, current), (_, asked)) in stream::fields(&info.config).into_iter().zip(wanted) {
        let mark = if current == asked {
            ""
        } else {
            differ += 1;
            "differs"
        };
        rows.push(vec![field.to_string(), current, asked, mark.to_string()]);
    }
    println!("the file: {}\n", file.display());
    print!("{}", table(&rows, &[]));
    if differ == 0 {
        println!("\nThe stream has the settings of {}.", file.display());
    } else {
        println!(
            "\n{differ} setting(s) differ. Agents with this file keep running and warn at start. To make the stream follow the file: `invalog stream provision -c {0}` (changes that delete messages also need --allow-data-loss); or copy the stream's values into the file's [stream].",
            file.display()
        );
    }
    Ok(EXIT_OK)
}

/// Prints that the stream does not exist and how to create it.
fn missing(log: &LogSettings, file: &Path) -> u8 {
    eprintln!(
        "invalog: stream `{}` does not exist on this server; create it: `invalog stream provision -c {}` (agents with `[stream] provision = \"create\"`, the default, also create it)",
        log.stream,
        file.display()
    );
    EXIT_STREAM
}

/// The error with `<file>` replaced by the file it concerns.
fn in_file(error: &ProvisionError, file: &Path) -> String {
    error
        .to_string()
        .replace("<file>", &file.display().to_string())
}
