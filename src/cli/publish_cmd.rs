//! `invalog publish`: publishes instructions from the command line, or JSON
//! lines from stdin, and prints each message's read-your-writes token
//! (`<sequence>@<incarnation>`; the bare sequence when the stream's
//! incarnation could not be read), refresher and batch id.

use anyhow::Context as _;
use invalog::{Instruction, Provenance, PublishError, Publisher};
use tokio::io::AsyncBufReadExt;
use uuid::Uuid;

use super::ConfigArg;
use super::{client_settings, jetstream};
use super::{EXIT_CONFIG, EXIT_FAILURE, EXIT_OK};

/// Arguments of `invalog publish`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "--stdin reads and checks every line before publishing any: an invalid line publishes nothing.\n\nExit codes: 0 published; 1 publishing failed (the messages stored before the failure are printed); 2 invalid configuration, arguments or input line, or an unknown refresher; 3 NATS unreachable or credentials refused.\n\nExamples:\n  invalog publish -c config/publisher.toml content refresh-ids 1 2 3\n  invalog publish -c config/publisher.toml media refresh-all --reason 'bulk import'\n  echo '{\"refresher\":\"content\",\"instructions\":[{\"kind\":\"remove_keys\",\"keys\":[\"home\"]}]}' | invalog publish -c config/publisher.toml --stdin"
)]
pub struct PublishArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Read JSON lines from stdin: {"refresher":…,"instructions":[…],"actor":…}.
    #[arg(long, conflicts_with_all = ["refresher", "kind"])]
    stdin: bool,
    /// Who asked for it (provenance).
    #[arg(long)]
    actor: Option<String>,
    /// Why (provenance).
    #[arg(long)]
    reason: Option<String>,
    /// A trace id (provenance).
    #[arg(long)]
    trace_id: Option<String>,
    /// The refresher's name.
    #[arg(required_unless_present = "stdin")]
    refresher: Option<String>,
    /// What to do.
    #[arg(value_enum, required_unless_present = "stdin")]
    kind: Option<Kind>,
    /// Ids, UUIDs, keys, a JSON document, or JSON payloads, as the kind needs.
    values: Vec<String>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Kind {
    RefreshAll,
    RefreshIds,
    RefreshUuids,
    RefreshKeys,
    RemoveIds,
    RemoveUuids,
    RemoveKeys,
    RefreshJson,
    RefreshPayloads,
}

impl Kind {
    /// The name as typed: `refresh-ids`.
    fn name(self) -> String {
        clap::ValueEnum::to_possible_value(&self)
            .map_or_else(String::new, |v| v.get_name().to_owned())
    }

    /// What its values are, for messages.
    fn values(self) -> &'static str {
        match self {
            Kind::RefreshAll => "none",
            Kind::RefreshIds | Kind::RemoveIds => "integer ids, as in `refresh-ids 1 2 3`",
            Kind::RefreshUuids | Kind::RemoveUuids => "UUIDs",
            Kind::RefreshKeys | Kind::RemoveKeys => "keys, as in `remove-keys home`",
            Kind::RefreshJson => "one JSON document",
            Kind::RefreshPayloads => "JSON payloads, one per argument",
        }
    }
}

fn instruction(kind: Kind, values: &[String]) -> anyhow::Result<Instruction> {
    let ids = || -> anyhow::Result<Vec<i64>> {
        values
            .iter()
            .map(|v| {
                v.parse()
                    .with_context(|| format!("`{v}` is not an integer id"))
            })
            .collect()
    };
    let uuids = || -> anyhow::Result<Vec<Uuid>> {
        values
            .iter()
            .map(|v| v.parse().with_context(|| format!("`{v}` is not a UUID")))
            .collect()
    };
    let json = |v: &String| -> anyhow::Result<serde_json::Value> {
        serde_json::from_str(v).with_context(|| format!("`{v}` is not JSON"))
    };
    let needs_values = !matches!(kind, Kind::RefreshAll);
    anyhow::ensure!(
        !needs_values || !values.is_empty(),
        "`{}` needs at least one value: {}",
        kind.name(),
        kind.values()
    );
    anyhow::ensure!(
        needs_values || values.is_empty(),
        "refresh-all takes no values"
    );
    Ok(match kind {
        Kind::RefreshAll => Instruction::RefreshAll,
        Kind::RefreshIds => Instruction::RefreshIds(ids()?),
        Kind::RemoveIds => Instruction::RemoveIds(ids()?),
        Kind::RefreshUuids => Instruction::RefreshUuids(uuids()?),
        Kind::RemoveUuids => Instruction::RemoveUuids(uuids()?),
        Kind::RefreshKeys => Instruction::RefreshKeys(values.to_vec()),
        Kind::RemoveKeys => Instruction::RemoveKeys(values.to_vec()),
        Kind::RefreshJson => {
            anyhow::ensure!(values.len() == 1, "refresh-json takes one JSON document");
            Instruction::RefreshJson(json(&values[0])?)
        }
        Kind::RefreshPayloads => {
            Instruction::RefreshPayloads(values.iter().map(json).collect::<Result<_, _>>()?)
        }
    })
}

/// Runs `invalog publish`. Everything is checked before anything is
/// published: the arguments, or every line of stdin, and each refresher's
/// name against the configuration; invalid input exits 2 and publishes
/// nothing.
pub async fn run(args: PublishArgs) -> anyhow::Result<u8> {
    let settings = match client_settings(&args.config.publisher()) {
        Ok(settings) => settings,
        Err(code) => return Ok(code),
    };
    let defaults = Provenance {
        actor: args.actor.clone(),
        reason: args.reason.clone(),
        trace_id: args.trace_id.clone(),
    };
    let requests = if args.stdin {
        read_lines(&defaults).await?
    } else {
        let kind = args.kind.expect("clap requires a kind without --stdin");
        instruction(kind, &args.values).map(|instruction| {
            vec![Request {
                line: None,
                refresher: args.refresher.clone().unwrap_or_default(),
                instructions: vec![instruction],
                provenance: defaults.clone(),
            }]
        })
    };
    let known: Vec<&str> = settings
        .refreshers
        .iter()
        .map(|d| d.name.as_str())
        .collect();
    let checked = requests.and_then(|requests| {
        match requests
            .iter()
            .find(|r| !known.contains(&r.refresher.as_str()))
        {
            None => Ok(requests),
            Some(r) => Err(anyhow::anyhow!(
                "{}{} (the refreshers of {})",
                r.at(),
                PublishError::unknown_refresher(&r.refresher, known.iter().copied()),
                args.config.publisher().display()
            )),
        }
    });
    let requests = match checked {
        Ok(requests) => requests,
        Err(error) => {
            eprintln!("invalog: {error:#}; nothing was published");
            return Ok(EXIT_CONFIG);
        }
    };
    let (client, js) = match jetstream(&settings.nats).await {
        Ok(connected) => connected,
        Err(code) => return Ok(code),
    };
    let publisher = Publisher::new(js, settings.log, settings.publisher, settings.refreshers);
    let mut outcome = Ok(());
    for r in requests {
        let at = r.at();
        if let Err(error) =
            publish_one(&publisher, &r.refresher, r.instructions, &r.provenance).await
        {
            let after = if r.line.is_some() {
                "; the lines before it were published (their sequences are printed above), none after it"
            } else {
                ""
            };
            outcome = Err(format!("{at}{error:#}{after}"));
            break;
        }
    }
    client.flush().await.ok();
    match outcome {
        Ok(()) => Ok(EXIT_OK),
        Err(message) => {
            eprintln!("invalog: {message}");
            Ok(EXIT_FAILURE)
        }
    }
}

/// One thing to publish: from the arguments, or from a line of stdin.
struct Request {
    /// The stdin line it came from.
    line: Option<usize>,
    refresher: String,
    instructions: Vec<Instruction>,
    provenance: Provenance,
}

impl Request {
    /// "stdin line N: " for a line of stdin, else nothing.
    fn at(&self) -> String {
        self.line
            .map_or_else(String::new, |n| format!("stdin line {n}: "))
    }
}

async fn publish_one(
    publisher: &Publisher,
    refresher: &str,
    instructions: Vec<Instruction>,
    provenance: &Provenance,
) -> anyhow::Result<()> {
    let receipt = publisher
        .publish(refresher, instructions, provenance)
        .await?;
    for message in &receipt.messages {
        let token = match receipt.incarnation {
            Some(incarnation) => invalog::ReadToken {
                sequence: message.sequence,
                incarnation,
            }
            .to_string(),
            None => message.sequence.to_string(),
        };
        println!(
            "{}\t{}\t{}{}",
            token,
            message.refresher,
            message.batch_id,
            if message.duplicate { "\tduplicate" } else { "" }
        );
    }
    if receipt.messages.is_empty() {
        eprintln!("invalog: nothing to publish (empty list)");
    }
    Ok(())
}

/// Reads and decodes every line of stdin (blank lines are skipped); the
/// outer error is reading stdin, the inner one the first invalid line.
async fn read_lines(defaults: &Provenance) -> anyhow::Result<anyhow::Result<Vec<Request>>> {
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut requests = Vec::new();
    let mut number = 0;
    while let Some(line) = lines.next_line().await.context("reading stdin")? {
        number += 1;
        if line.trim().is_empty() {
            continue;
        }
        let request = match invalog::wire::decode_publish_request(line.as_bytes()) {
            Ok(request) => request,
            Err(error) => return Ok(Err(anyhow::anyhow!("stdin line {number}, {error}"))),
        };
        let p = request.provenance;
        requests.push(Request {
            line: Some(number),
            refresher: request.refresher,
            instructions: request.instructions,
            provenance: Provenance {
                actor: p.actor.or_else(|| defaults.actor.clone()),
                reason: p.reason.or_else(|| defaults.reason.clone()),
                trace_id: p.trace_id.or_else(|| defaults.trace_id.clone()),
            },
        });
    }
    Ok(Ok(requests))
}
