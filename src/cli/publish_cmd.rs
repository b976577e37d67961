//! `invalog publish`: publishes instructions from the command line, or JSON
//! lines from stdin, and prints the stream sequence of each message.

use std::path::PathBuf;

use anyhow::Context as _;
use invalog::{Instruction, Provenance, Publisher};
use tokio::io::AsyncBufReadExt;
use uuid::Uuid;

use super::{client_settings, jetstream};
use super::{EXIT_CONFIG, EXIT_FAILURE, EXIT_OK};

/// Arguments of `invalog publish`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  invalog publish -c config/publisher.toml content refresh-ids 1 2 3\n  invalog publish -c config/publisher.toml media refresh-all --reason 'bulk import'\n  echo '{\"refresher\":\"content\",\"instructions\":[{\"kind\":\"remove_keys\",\"keys\":[\"home\"]}]}' | invalog publish -c config/publisher.toml --stdin"
)]
pub struct PublishArgs {
    /// The configuration file (TOML; `INVALOG_…` environment variables override it).
    #[arg(long, short, default_value = "config/publisher.toml")]
    config: PathBuf,
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
        "{kind:?} needs at least one value"
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

/// Runs `invalog publish`.
pub async fn run(args: PublishArgs) -> anyhow::Result<u8> {
    let settings = match client_settings(&args.config) {
        Ok(settings) => settings,
        Err(code) => return Ok(code),
    };
    let provenance = Provenance {
        actor: args.actor.clone(),
        reason: args.reason.clone(),
        trace_id: args.trace_id.clone(),
    };
    let (client, js) = match jetstream(&settings.nats).await {
        Ok(connected) => connected,
        Err(code) => return Ok(code),
    };
    let publisher = Publisher::new(js, settings.log, settings.publisher, settings.refreshers);
    let outcome = if args.stdin {
        publish_lines(&publisher, &provenance).await
    } else {
        let refresher = args.refresher.as_deref().unwrap_or_default();
        let kind = args.kind.expect("clap requires a kind without --stdin");
        let instruction = match instruction(kind, &args.values) {
            Ok(instruction) => instruction,
            Err(error) => {
                eprintln!("invalog: {error:#}");
                return Ok(EXIT_CONFIG);
            }
        };
        publish_one(&publisher, refresher, vec![instruction], &provenance).await
    };
    client.flush().await.ok();
    match outcome {
        Ok(()) => Ok(EXIT_OK),
        Err(error) => {
            eprintln!("invalog: {error:#}");
            Ok(EXIT_FAILURE)
        }
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
        println!(
            "{}\t{}\t{}{}",
            message.sequence,
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

async fn publish_lines(publisher: &Publisher, defaults: &Provenance) -> anyhow::Result<()> {
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut number = 0;
    while let Some(line) = lines.next_line().await? {
        number += 1;
        if line.trim().is_empty() {
            continue;
        }
        let request = invalog::wire::decode_publish_request(line.as_bytes())
            .with_context(|| format!("stdin line {number}"))?;
        let provenance = Provenance {
            actor: request.provenance.actor.or_else(|| defaults.actor.clone()),
            reason: request
                .provenance
                .reason
                .or_else(|| defaults.reason.clone()),
            trace_id: request
                .provenance
                .trace_id
                .or_else(|| defaults.trace_id.clone()),
        };
        publish_one(
            publisher,
            &request.refresher,
            request.instructions,
            &provenance,
        )
        .await
        .with_context(|| format!("stdin line {number}"))?;
    }
    Ok(())
}
