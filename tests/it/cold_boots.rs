//! Fleet-wide cold-boot control (`node.cold_boot`): when the stream is
//! recreated, at most K nodes of its fleet run their refresh-all at the same
//! time — 10 library nodes and 4 real agents (webhook receivers record when
//! each refresh-all starts and ends); a waiting node is unready with the
//! reason `waiting for a cold-boot slot`; a holder dropped mid-refresh frees
//! its slot within the lease TTL. `INVALOG_COLD_BOOT_FIGURES=1` prints the
//! time to all-ready for K = 1, 2 and unlimited (BENCHMARKS.md).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use invalog::node::{ColdBootLimit, NewNodePolicy};
use invalog::{FileStore, Node, NodeId, NodeSettings, RefreshResult, Refresher, Registry};

use crate::agent_support::{free_port, webhook, Agent, AgentConfig, Hook};
use crate::support::{defs, eventually, within, Fixture};

/// When one refresh-all ran: which node, from when to when.
type Spans = Arc<Mutex<Vec<(String, Instant, Instant)>>>;

/// A refresher whose refresh-all takes `delay` and is recorded in `spans`;
/// a `delay` of `Duration::MAX` fails at once instead (a broken database).
struct Timed {
    node: String,
    delay: Duration,
    spans: Spans,
}

#[async_trait]
impl Refresher for Timed {
    async fn refresh_all(&self) -> RefreshResult {
        if self.delay == Duration::MAX {
            return Err(invalog::RefreshError::msg("the database is down"));
        }
        let start = Instant::now();
        tokio::time::sleep(self.delay).await;
        let span = (self.node.clone(), start, Instant::now());
        self.spans.lock().unwrap().push(span);
        Ok(())
    }
}

/// The most spans that overlap at one moment.
fn max_overlap(spans: &[(Instant, Instant)]) -> usize {
    let mut events: Vec<(Instant, i32)> = spans
        .iter()
        .flat_map(|(start, end)| [(*start, 1), (*end, -1)])
        .collect();
    // At equal instants an end comes before a start: touching is no overlap.
    events.sort();
    let (mut now, mut most) = (0i32, 0i32);
    for (_, change) in events {
        now += change;
        most = most.max(now);
    }
    most as usize
}

/// A library node hosting one `Timed` refresher (`content`).
async fn timed_node(
    f: &Fixture,
    name: &str,
    delay: Duration,
    spans: &Spans,
    limit: &ColdBootLimit,
    new_node: NewNodePolicy,
) -> Node {
    let mut registry = Registry::new();
    let timed = Timed {
        node: name.to_owned(),
        delay,
        spans: spans.clone(),
    };
    registry.register(defs()[0].clone(), timed).unwrap();
    let mut settings = NodeSettings::new(NodeId::new(name).unwrap());
    settings.new_node = new_node;
    settings.flush_interval = Duration::from_millis(50);
    settings.retry.attempts = 1;
    settings.retry.initial_backoff = Duration::from_millis(20);
    settings.retry.max_backoff = Duration::from_millis(100);
    settings.cold_boot = limit.clone();
    let store = FileStore::new(f.checkpoint_path(name));
    Node::start(f.js.clone(), f.log.clone(), settings, registry, store)
        .await
        .expect("node starts")
}

/// A limit of `k` slots with quick retries (a lease TTL of `ttl`).
fn limit(k: u32, ttl: Duration) -> ColdBootLimit {
    ColdBootLimit {
        max_concurrent: k,
        lease_ttl: ttl,
        retry_interval: Duration::from_millis(50),
        ..ColdBootLimit::default()
    }
}

/// Starts `count` nodes, recreates the stream and waits until every node
/// cold booted into the new one and is ready. Returns the refresh-all spans,
/// the reasons nodes gave for being unready meanwhile, and the time from
/// the recreation to all-ready.
async fn recreate_under_limit(
    count: usize,
    limit: ColdBootLimit,
    delay: Duration,
) -> (Vec<(String, Instant, Instant)>, Vec<String>, Duration) {
    let f = Fixture::new().await;
    let spans = Spans::default();
    let mut nodes = Vec::new();
    for i in 0..count {
        let name = format!("n{i}");
        nodes.push(timed_node(&f, &name, delay, &spans, &limit, NewNodePolicy::Tail).await);
    }
    for node in &nodes {
        within(Duration::from_secs(10), node.ready()).await.unwrap();
    }
    let old = nodes[0].position().incarnation;
    let began = Instant::now();
    f.recreate_stream().await;
    let mut reasons = Vec::new();
    eventually(
        Duration::from_secs(60),
        "every node cold boots and is ready",
        || {
            let mut done = true;
            for node in &nodes {
                let position = node.position();
                match node.readiness() {
                    invalog::node::Readiness::NotReady(reason) => {
                        if !reasons.contains(&reason) {
                            reasons.push(reason);
                        }
                        done = false;
                    }
                    _ => done = done && position.incarnation != old,
                }
            }
            done
        },
    )
    .await;
    let took = began.elapsed();
    let spans = spans.lock().unwrap().clone();
    for node in &nodes {
        node.shutdown().await.unwrap();
    }
    (spans, reasons, took)
}

#[tokio::test]
async fn ten_nodes_cold_boot_at_most_k_at_a_time_after_the_stream_is_recreated() {
    let (spans, reasons, _) = recreate_under_limit(
        10,
        limit(2, Duration::from_secs(30)),
        Duration::from_millis(200),
    )
    .await;
    let nodes: std::collections::BTreeSet<_> = spans.iter().map(|(n, _, _)| n.clone()).collect();
    assert_eq!(nodes.len(), 10, "every node ran its refresh-all: {spans:?}");
    let overlap = max_overlap(&spans.iter().map(|(_, s, e)| (*s, *e)).collect::<Vec<_>>());
    assert!(overlap <= 2, "{overlap} refresh-alls ran at once, K = 2");
    assert!(
        reasons
            .iter()
            .any(|r| r.starts_with("waiting for a cold-boot slot (2 of 2 busy) before a cold boot: the stream was created again")),
        "a waiting node says why it is not ready: {reasons:?}"
    );
}

#[tokio::test]
async fn a_holder_dropped_mid_refresh_frees_its_slot_within_the_lease_ttl() {
    let f = Fixture::new().await;
    let ttl = Duration::from_secs(2);
    let spans = Spans::default();
    let cold = NewNodePolicy::ColdBoot;
    let slow = timed_node(
        &f,
        "slow",
        Duration::from_secs(600),
        &spans,
        &limit(1, ttl),
        cold,
    )
    .await;
    let js = f.js.clone();
    let holder = || async {
        let kv = js
            .get_key_value(invalog::node::COLD_BOOT_BUCKET)
            .await
            .ok()?;
        kv.get("INVALOG.slot-0").await.ok()?
    };
    let held = within(Duration::from_secs(10), async {
        loop {
            if let Some(holder) = holder().await {
                return holder;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    assert_eq!(
        held.await,
        "slow".as_bytes(),
        "the new node holds the only slot"
    );

    let quick = timed_node(
        &f,
        "quick",
        Duration::from_millis(10),
        &spans,
        &limit(1, ttl),
        cold,
    )
    .await;
    eventually(Duration::from_secs(10), "the second node waits for the slot", || {
        quick.readiness()
            == invalog::node::Readiness::NotReady(
                "waiting for a cold-boot slot (1 of 1 busy) before a cold boot: new node (no stored sequence)".into(),
            )
    })
    .await;
    // The holder renews its lease: twice the TTL later the slot is still its.
    let waited = tokio::time::timeout(2 * ttl, quick.ready()).await;
    assert!(
        waited.is_err(),
        "the waiting node cold booted while the slot was held"
    );
    assert_eq!(quick.state().name(), "waiting_for_slot");

    let crashed = Instant::now();
    drop(slow);
    within(ttl + Duration::from_secs(3), quick.ready())
        .await
        .unwrap();
    let freed = crashed.elapsed();
    println!("slot of a dropped holder taken again after {freed:?} (lease TTL {ttl:?})");
    assert_eq!(
        spans.lock().unwrap().len(),
        1,
        "only the second node's refresh-all completed"
    );
}

#[tokio::test]
async fn four_agents_run_one_refresh_all_at_a_time_with_one_slot() {
    let f = Fixture::new().await;
    let mut agents = Vec::new();
    for i in 0..4 {
        let (hook, hook_port) = Hook::start(Duration::from_millis(200)).await;
        let http_port = free_port();
        let node = format!("agent-{i}");
        let config = AgentConfig {
            dir: f.dir.path(),
            urls: vec![f.server.url()],
            node: &node,
            http_port,
            applier: webhook(hook_port),
            node_extra: "",
            tables_extra: "[node.cold_boot]\nmax_concurrent = 1\nretry_interval = \"50ms\"",
        }
        .write();
        agents.push((Agent::spawn(&config, http_port), hook));
    }
    for (agent, _) in &agents {
        within(Duration::from_secs(30), async {
            while agent.get("/readyz").await.map(|(code, _)| code) != Some(200) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
    }
    f.recreate_stream().await;

    // Each agent refreshes both its refreshers (two requests to its hook).
    let refreshed = |hook: &Hook| {
        let bodies = hook.bodies.lock().unwrap();
        bodies
            .iter()
            .filter(|b| b["trigger"] == "refresh_all")
            .count()
    };
    let (mut waiting, mut statuses) = (Vec::new(), Vec::new());
    within(Duration::from_secs(60), async {
        loop {
            let mut done = true;
            for (agent, hook) in &agents {
                match agent.get("/readyz").await {
                    Some((200, _)) => done = done && refreshed(hook) == 2,
                    Some((_, body)) => {
                        if body.contains("waiting for a cold-boot slot (1 of 1 busy)") {
                            waiting.push(body);
                            if let Some((_, status)) = agent.get("/status").await {
                                statuses.push(status);
                            }
                        }
                        done = false;
                    }
                    None => done = false,
                }
            }
            if done {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let spans: Vec<_> = agents
        .iter()
        .flat_map(|(_, hook)| hook.spans.lock().unwrap().clone())
        .collect();
    assert_eq!(spans.len(), 8, "two refresh-alls per agent");
    assert_eq!(
        max_overlap(&spans),
        1,
        "refresh-alls of different agents overlapped with one slot"
    );
    assert!(!waiting.is_empty(), "no agent was seen waiting on /readyz");
    let readyz: serde_json::Value = serde_json::from_str(&waiting[0]).unwrap();
    assert_eq!(readyz["state"], "waiting_for_slot", "{readyz}");
    assert!(
        statuses
            .iter()
            .any(|s| s.contains("waiting for a cold-boot slot (1 of 1 busy)")),
        "/status of a waiting agent gives the reason: {statuses:?}"
    );
}

#[tokio::test]
async fn a_holder_that_stalls_gives_up_its_slot() {
    let f = Fixture::new().await;
    let ttl = Duration::from_secs(2);
    let spans = Spans::default();
    let (cold, limit) = (NewNodePolicy::ColdBoot, limit(1, ttl));
    let broken = timed_node(&f, "broken", Duration::MAX, &spans, &limit, cold).await;
    eventually(
        Duration::from_secs(10),
        "the first node stalls in its cold boot",
        || broken.state().name() == "stalled",
    )
    .await;
    let healthy = timed_node(
        &f,
        "healthy",
        Duration::from_millis(10),
        &spans,
        &limit,
        cold,
    )
    .await;
    // Within the TTL of the broken node's last renewal, plus retries.
    within(ttl + Duration::from_secs(3), healthy.ready())
        .await
        .unwrap();
    assert_eq!(broken.state().name(), "stalled", "still broken");
}

/// Prints the time from a stream's recreation to all 10 nodes ready (each
/// refresh-all 200 ms) for K = 1, 2 and unlimited, for BENCHMARKS.md; runs
/// only with `INVALOG_COLD_BOOT_FIGURES=1` (it measures, asserts no timing).
#[tokio::test]
async fn time_to_all_ready_for_k_1_2_and_unlimited() {
    if std::env::var("INVALOG_COLD_BOOT_FIGURES").is_err() {
        return;
    }
    let retries = [
        Duration::from_millis(50),
        ColdBootLimit::default().retry_interval,
    ];
    for (k, retry_interval) in [1, 2, 0].into_iter().flat_map(|k| retries.map(|r| (k, r))) {
        let limit = ColdBootLimit {
            retry_interval,
            ..limit(k, Duration::from_secs(30))
        };
        let (spans, _, took) = recreate_under_limit(10, limit, Duration::from_millis(200)).await;
        let overlap = max_overlap(&spans.iter().map(|(_, s, e)| (*s, *e)).collect::<Vec<_>>());
        assert!(
            k == 0 || overlap <= k as usize,
            "{overlap} at once, K = {k}"
        );
        println!(
            "K = {}, retry_interval {retry_interval:?}: 10 nodes ready {:.2} s after the stream was recreated (most refresh-alls at once: {overlap})",
            if k == 0 { "unlimited".to_owned() } else { k.to_string() },
            took.as_secs_f64()
        );
    }
}

/// A `MakeWriter` collecting log lines in memory.
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Lines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Lines {
    type Writer = Lines;
    fn make_writer(&'a self) -> Lines {
        self.clone()
    }
}

#[tokio::test]
async fn without_a_usable_bucket_a_node_warns_and_cold_boots_uncoordinated() {
    let f = Fixture::new().await;
    // Logs of this test's thread (the runtime is single-threaded: the
    // nodes' tasks run here too).
    let lines = Lines::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(lines.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    // A bucket someone created without max_age: a dead holder's slot would
    // never free itself.
    f.js.create_key_value(async_nats::jetstream::kv::Config {
        bucket: "ageless".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let spans = Spans::default();
    let cold = NewNodePolicy::ColdBoot;
    let mut nodes = Vec::new();
    for (name, bucket) in [("ageless", "ageless"), ("nameless", "not a bucket")] {
        let limit = ColdBootLimit {
            bucket: bucket.into(),
            ..limit(1, Duration::from_secs(30))
        };
        let delay = Duration::from_millis(10);
        nodes.push(timed_node(&f, name, delay, &spans, &limit, cold).await);
    }
    for node in &nodes {
        within(Duration::from_secs(10), node.ready()).await.unwrap();
    }
    assert_eq!(spans.lock().unwrap().len(), 2, "both cold booted");
    let log = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
    assert!(
        log.contains("WARN") && log.contains("the cold-boot bucket has no max_age"),
        "{log}"
    );
    assert!(
        log.contains(
            "cannot open or create the cold-boot bucket; cold booting without coordination"
        ),
        "{log}"
    );
}
