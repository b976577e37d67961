//! `invalog demo`: the whole story on one machine. Starts a local
//! nats-server with JetStream in a temporary directory, provisions the log,
//! runs three nodes in-process, publishes, stops one node, publishes more,
//! restarts it and shows it catching up from its stored sequence before it
//! reports ready, then prints the history as `invalog history` does. Each
//! step says in plain words what happened; the end says what to run next
//! (the installed nats-server, `config/demo.toml`, the agent). Cleans up
//! and exits 0.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context as _};
use async_trait::async_trait;
use invalog::history;
use invalog::node::NewNodePolicy;
use invalog::{
    FileStore, LogSettings, Node, NodeId, NodeSettings, PayloadRefresher, Payloads, Publisher,
    PublisherSettings, RefreshResult, Refresher, RefresherDef, Registry,
};
use invalog_nats_server::NatsServer;
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
        self.applied
            .lock()
            .unwrap()
            .push("emptied the cache".into());
        Ok(())
    }

    async fn refresh_ids(&self, ids: &[i64]) -> RefreshResult {
        let mut entries = self.entries.lock().unwrap();
        for id in ids {
            *entries.entry(*id).or_default() += 1;
        }
        let what = format!("reloaded {}", id_list(ids));
        self.applied.lock().unwrap().push(what);
        Ok(())
    }

    async fn remove_ids(&self, ids: &[i64]) -> RefreshResult {
        let mut entries = self.entries.lock().unwrap();
        for id in ids {
            entries.remove(id);
        }
        let what = format!("dropped {}", id_list(ids));
        self.applied.lock().unwrap().push(what);
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

/// Ids in ascending order: `id 3`, `ids 1, 2, 3`.
fn id_list(ids: &[i64]) -> String {
    let mut ids = ids.to_vec();
    ids.sort_unstable();
    let list: Vec<String> = ids.iter().map(ToString::to_string).collect();
    let word = if ids.len() == 1 { "id" } else { "ids" };
    format!("{word} {}", list.join(", "))
}

/// Runs the demo.
pub async fn run(args: DemoArgs) -> anyhow::Result<u8> {
    if args.nodes < 2 {
        bail!("--nodes must be at least 2 (one of them is stopped and restarted)");
    }
    println!(
        "invalog demo: {} web servers cache the same content. An editor changes it;",
        args.nodes
    );
    println!("every server must drop its stale copies, even one that is down at the time.");
    println!();
    println!("1. A local NATS server with JetStream holds the log");
    let server = NatsServer::start().await.context("starting nats-server")?;
    let client = async_nats::connect(server.url()).await?;
    let js = async_nats::jetstream::new(client);
    let log = LogSettings::default();
    invalog::provision(&js, &log).await?;
    println!(
        "   nats-server listens on {}; its data is in a temporary directory.",
        server.url()
    );
    println!(
        "   The log is the JetStream stream {} (subjects {}): each change is one message, numbered.",
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
    println!();
    println!("2. {} nodes start: {}", nodes.len(), names.join(", "));
    println!(
        "   Each is a web server's cache with invalog's replayer: it reads the log in order and"
    );
    println!("   applies each message to its cache (`content` by id, `media` by a typed payload).");
    println!("   All are ready: they have applied everything in the log (nothing yet).");

    let publisher = Publisher::new(
        js.clone(),
        log.clone(),
        PublisherSettings::new("editor"),
        defs()?,
    );
    println!();
    println!("3. The editor publishes three changes; each publish returns the message's sequence");
    let mut last = 0;
    for (what, receipt) in [
        (
            "content: reload ids 1, 2, 3",
            publisher.refresh_ids("content", &[1, 2, 3]).await?,
        ),
        (
            "content: drop id 2",
            publisher.remove_ids("content", &[2]).await?,
        ),
        (
            "media: reload image 7 at /img/cat.png (a typed payload)",
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
        println!("   sequence {last}  {what}");
    }
    let all: Vec<(&str, &DemoNode)> = names.iter().map(String::as_str).zip(nodes.iter()).collect();
    wait_all(&all, last).await?;
    println!("   Every node has applied up to sequence {last}: their caches agree.");

    let stopped_name = names.last().expect("at least two nodes").clone();
    let stopped = nodes.pop().expect("at least two nodes");
    let applied_before = stopped.node.applied();
    stopped.node.shutdown().await?;
    println!();
    println!("4. {stopped_name} stops (a deploy, a crash). It has stored the last sequence it applied: {applied_before}.");
    println!(
        "   While it is down, the editor saves a page (one unit of work) and replaces all media:"
    );
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
    println!(
        "   sequence {last}  content: reload ids 10 to 19 and 42, drop id 3 (ids 10 and 11 were"
    );
    println!("               added twice; a unit of work sends each id once, in one message)");
    let receipt = publisher.refresh_all("media").await?;
    last = receipt.sequence().unwrap_or(last);
    println!("   sequence {last}  media: refresh everything");

    println!();
    println!(
        "5. {stopped_name} starts again and replays from its stored sequence + 1 = {}",
        applied_before + 1
    );
    let restarted = start_node(&js, &log, dir.path(), &stopped_name).await?;
    if !restarted.node.is_ready() {
        println!(
            "   At start it is {}: not ready, so it should get no traffic yet.",
            restarted.node.state()
        );
    }
    tokio::time::timeout(Duration::from_secs(10), restarted.node.ready())
        .await
        .context("the restarted node did not become ready within 10 s")??;
    println!(
        "   Ready at sequence {} after applying the {} messages it missed, in order:",
        restarted.node.applied(),
        restarted.node.stats().applied_messages,
    );
    for what in restarted.content.applied.lock().unwrap().iter() {
        println!("     content: {what}");
    }
    println!("     media: emptied its cache");
    println!(
        "   Nothing was lost or skipped, and it said it was not ready until it had caught up."
    );
    let all: Vec<(&str, &DemoNode)> = names[..names.len() - 1]
        .iter()
        .map(String::as_str)
        .zip(nodes.iter())
        .collect();
    wait_all(&all, last).await?;

    println!();
    println!("6. The log, as `invalog history` shows it:");
    let rows: Vec<Vec<String>> = history::read_range(&js, &log, 1, None, 100)
        .await?
        .iter()
        .map(super::history_cmd::row)
        .collect();
    print!("{}", super::history_cmd::columns().render(&rows));
    restarted.node.shutdown().await?;
    for n in nodes {
        n.node.shutdown().await?;
    }
    let binary = server.binary().to_owned();
    drop(server);
    drop(dir);
    print!("{}", next_steps(&binary));
    Ok(super::EXIT_OK)
}

/// What to run next: a server of one's own, the agent with
/// config/demo.toml, a publish and a look at the agent's status.
fn next_steps(nats_server: &Path) -> String {
    let invalog = match std::env::current_exe() {
        Ok(exe) if exe.components().any(|c| c.as_os_str() == "target") => "cargo run --",
        _ => "invalog",
    };
    let from = if Path::new("config/demo.toml").is_file() {
        ""
    } else {
        ", from the invalog repository"
    };
    format!(
        r#"
Done: the demo's nats-server and temporary files are removed.

Next: the agent, the sidecar any app uses (no Rust needed). It applies the log
to your caches through a webhook, Redis or a command (docs/appliers.md).
  1. Start a NATS server with JetStream. The one this demo used is installed at
       {server} -js -a 127.0.0.1
  2. In another terminal{from}, start an agent with config/demo.toml. It follows
     the stream INVALOG_DEMO; `content` goes to a webhook at 127.0.0.1:8080/invalidate
     (your app's endpoint); `media` to /bin/cat (the agent logs each batch it prints):
       {invalog} agent -c config/demo.toml
  3. Publish, and look at what the agent applied:
       {invalog} publish -c config/demo.toml media refresh-all
       curl -s 127.0.0.1:9464/status
       {invalog} history -c config/demo.toml
README.md has the rest: publishing from your app, Redis, deployment.
"#,
        server = nats_server.display(),
    )
}
