//! `invalog demo`: the whole story on one machine. Starts a local
//! nats-server with JetStream in a temporary directory, provisions the log,
//! runs three nodes in-process, publishes, stops one node, publishes more,
//! restarts it and shows it catching up from its stored sequence before it
//! reports ready, then prints the history. Cleans up and exits 0.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context as _};
use async_trait::async_trait;
use invalog::embedded::NatsServer;
use invalog::history;
use invalog::node::NewNodePolicy;
use invalog::{
    FileStore, LogSettings, Node, NodeId, NodeSettings, PayloadRefresher, Payloads, Publisher,
    PublisherSettings, RefreshResult, Refresher, RefresherDef, Registry,
};
use uuid::Uuid;

/// Arguments of `invalog demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// How many nodes to run (at least 2).
    #[arg(long, default_value_t = 3)]
    nodes: usize,
}

const CONTENT: Uuid = Uuid::from_u128(0x5f1c_94ad_3b2e_4c41_9d8e_0000_0000_0001);
const MEDIA: Uuid = Uuid::from_u128(0x5f1c_94ad_3b2e_4c41_9d8e_0000_0000_0002);

/// A toy cache: a map from content id to a version, plus a log of what
/// the refresher did, shared with the demo so it can print it.
#[derive(Default)]
struct ContentCache {
    entries: Mutex<BTreeMap<i64, u32>>,
    applied: Mutex<Vec<String>>,
}

#[async_trait]
impl Refresher for ContentCache {
    async fn refresh_all(&self) -> RefreshResult {
        self.entries.lock().unwrap().clear();
        self.applied.lock().unwrap().push("refresh_all".into());
        Ok(())
    }

    async fn refresh_ids(&self, ids: &[i64]) -> RefreshResult {
        let mut entries = self.entries.lock().unwrap();
        for id in ids {
            *entries.entry(*id).or_default() += 1;
        }
        self.applied
            .lock()
            .unwrap()
            .push(format!("refresh {ids:?}"));
        Ok(())
    }

    async fn remove_ids(&self, ids: &[i64]) -> RefreshResult {
        let mut entries = self.entries.lock().unwrap();
        for id in ids {
            entries.remove(id);
        }
        self.applied.lock().unwrap().push(format!("remove {ids:?}"));
        Ok(())
    }
}

/// A typed-payload refresher: media changes.
#[derive(serde::Deserialize, serde::Serialize, Debug)]
struct MediaChange {
    id: i64,
    path: String,
}

#[derive(Default)]
struct MediaCache {
    paths: Mutex<Vec<String>>,
}

#[async_trait]
impl PayloadRefresher for MediaCache {
    type Payload = MediaChange;

    async fn refresh_all(&self) -> RefreshResult {
        self.paths.lock().unwrap().clear();
        Ok(())
    }

    async fn refresh(&self, payloads: Vec<MediaChange>) -> RefreshResult {
        self.paths
            .lock()
            .unwrap()
            .extend(payloads.into_iter().map(|m| format!("{}:{}", m.id, m.path)));
        Ok(())
    }
}

struct DemoNode {
    node: Node,
    content: Arc<ContentCache>,
}

fn defs() -> anyhow::Result<Vec<RefresherDef>> {
    Ok(vec![
        RefresherDef::new(CONTENT, "content")?,
        RefresherDef::new(MEDIA, "media")?,
    ])
}

async fn start_node(
    js: &async_nats::jetstream::Context,
    log: &LogSettings,
    dir: &Path,
    name: &str,
) -> anyhow::Result<DemoNode> {
    let content = Arc::new(ContentCache::default());
    let mut registry = Registry::new();
    let [content_def, media_def]: [RefresherDef; 2] = defs()?.try_into().expect("two defs");
    registry.register_arc(content_def, content.clone())?;
    registry.register(media_def, Payloads(MediaCache::default()))?;
    let mut settings = NodeSettings::new(NodeId::new(name)?);
    settings.new_node = NewNodePolicy::ReplayAll;
    settings.flush_interval = Duration::from_millis(200);
    let store = FileStore::new(dir.join(format!("{name}.checkpoint.json")));
    let node = Node::start(js.clone(), log.clone(), settings, registry, store).await?;
    Ok(DemoNode { node, content })
}

async fn wait_all(nodes: &[(&str, &DemoNode)], sequence: u64) -> anyhow::Result<()> {
    for (name, n) in nodes {
        tokio::time::timeout(Duration::from_secs(10), n.node.wait_applied(sequence))
            .await
            .with_context(|| format!("{name} did not apply sequence {sequence} within 10 s"))??;
    }
    Ok(())
}

/// Runs the demo.
pub async fn run(args: DemoArgs) -> anyhow::Result<u8> {
    if args.nodes < 2 {
        bail!("--nodes must be at least 2 (one of them is stopped and restarted)");
    }
    println!("== starting a local nats-server with JetStream");
    let server = NatsServer::start().await.context("starting nats-server")?;
    println!(
        "   listening on {} (store in a temporary directory)",
        server.url()
    );
    let client = async_nats::connect(server.url()).await?;
    let js = async_nats::jetstream::new(client);
    let log = LogSettings::default();
    invalog::provision(&js, &log).await?;
    println!(
        "   stream {} on subjects {}",
        log.stream,
        log.all_subjects()
    );

    let dir = tempfile::tempdir()?;
    let names: Vec<String> = (1..=args.nodes).map(|i| format!("web-{i}")).collect();
    let mut nodes = Vec::new();
    for name in &names {
        nodes.push(start_node(&js, &log, dir.path(), name).await?);
    }
    for n in &nodes {
        n.node.ready().await?;
    }
    println!("== {} nodes ready: {}", nodes.len(), names.join(", "));

    let publisher = Publisher::new(
        js.clone(),
        log.clone(),
        PublisherSettings::new("editor"),
        defs()?,
    );
    let mut last = 0;
    for (what, receipt) in [
        (
            "refresh content [1, 2, 3]",
            publisher.refresh_ids("content", &[1, 2, 3]).await?,
        ),
        (
            "remove content [2]",
            publisher.remove_ids("content", &[2]).await?,
        ),
        (
            "refresh media payload",
            publisher
                .refresh_payloads(
                    "media",
                    &[MediaChange {
                        id: 7,
                        path: "/img/cat.png".into(),
                    }],
                )
                .await?,
        ),
    ] {
        last = receipt.sequence().unwrap_or(last);
        println!("   published {what:<28} -> sequence {last}");
    }
    let all: Vec<(&str, &DemoNode)> = names.iter().map(String::as_str).zip(nodes.iter()).collect();
    wait_all(&all, last).await?;
    println!("== every node applied up to sequence {last}");

    let stopped_name = names.last().expect("at least two nodes").clone();
    let stopped = nodes.pop().expect("at least two nodes");
    let applied_before = stopped.node.applied();
    stopped.node.shutdown().await?;
    println!("== stopped {stopped_name}; its stored sequence is {applied_before}");

    let mut uow = publisher.unit_of_work();
    uow.add(
        "content",
        vec![invalog::Instruction::RefreshIds((10..20).collect())],
    );
    uow.add(
        "content",
        vec![invalog::Instruction::RefreshIds(vec![10, 11, 42])],
    );
    uow.add("content", vec![invalog::Instruction::RemoveIds(vec![3])]);
    let receipt = uow.commit().await?;
    last = receipt.sequence().unwrap_or(last);
    let receipt = publisher.refresh_all("media").await?;
    last = receipt.sequence().unwrap_or(last);
    println!("   published a unit of work and a media refresh_all while it was down -> last sequence {last}");

    println!(
        "== restarting {stopped_name}: it replays from sequence {}",
        applied_before + 1
    );
    let restarted = start_node(&js, &log, dir.path(), &stopped_name).await?;
    println!("   state at start: {:?}", restarted.node.state());
    tokio::time::timeout(Duration::from_secs(10), restarted.node.ready())
        .await
        .context("the restarted node did not become ready within 10 s")??;
    println!(
        "   ready at sequence {} after applying {} messages: {}",
        restarted.node.applied(),
        restarted.node.stats().applied_messages,
        restarted.content.applied.lock().unwrap().join("; ")
    );
    let all: Vec<(&str, &DemoNode)> = names[..names.len() - 1]
        .iter()
        .map(String::as_str)
        .zip(nodes.iter())
        .collect();
    wait_all(&all, last).await?;

    println!("== history");
    for entry in history::read_range(&js, &log, 1, None, 100).await? {
        let when = super::history_cmd::millis(entry.stored_at);
        match entry.batch {
            Ok(batch) => {
                let what: Vec<String> =
                    batch.instructions.iter().map(ToString::to_string).collect();
                println!(
                    "   {:>4}  {}  {:<8} {:<8} {}",
                    entry.sequence,
                    when,
                    batch.origin,
                    batch.refresher.name,
                    what.join("; ")
                );
            }
            Err(e) => println!("   {:>4}  {}  undecodable: {e}", entry.sequence, when),
        }
    }
    restarted.node.shutdown().await?;
    for n in nodes {
        n.node.shutdown().await?;
    }
    println!("== done; the nats-server and temporary files are removed");
    Ok(super::EXIT_OK)
}
