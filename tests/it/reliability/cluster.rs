//! A three-node JetStream cluster with an R3 stream: the stream leader is
//! killed while publishing, and again while a node catches up; a follower
//! is frozen (SIGSTOP) and thawed. No acknowledged instruction is lost and
//! the time to recover is measured.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use invalog::connect::{connect, NatsSettings};
use invalog::node::NewNodePolicy;
use invalog::{
    FileStore, LogSettings, Node, NodeId, NodeSettings, PublishErrorKind, Publisher,
    PublisherSettings, Registry,
};
use invalog_nats_server::NatsCluster;

use crate::support::{defs, eventually, within, Call, Recorder};

use super::{check_in_order_nothing_lost, slow, time_until};

/// (id, sequence, when the publish started, when it was acknowledged)
type Acks = Arc<Mutex<Vec<(i64, u64, Instant, Instant)>>>;

async fn js_for(cluster: &NatsCluster) -> jetstream::Context {
    let settings = NatsSettings {
        urls: cluster.urls(),
        request_timeout: Duration::from_secs(2),
        ..Default::default()
    };
    let client = connect(&settings).await.expect("connects to the cluster");
    jetstream::context::ContextBuilder::new()
        .timeout(Duration::from_secs(2))
        .build(client)
}

struct ClusterNode {
    node: Node,
    content: Arc<Recorder>,
}

async fn start_node(
    js: jetstream::Context,
    log: &LogSettings,
    name: &str,
    dir: &std::path::Path,
) -> ClusterNode {
    let content = Arc::new(Recorder::default());
    let mut registry = Registry::new();
    registry
        .register_arc(defs()[0].clone(), content.clone())
        .unwrap();
    let mut settings = NodeSettings::new(NodeId::new(name).unwrap());
    settings.new_node = NewNodePolicy::ReplayAll;
    settings.flush_interval = Duration::from_millis(100);
    let store = FileStore::new(dir.join(format!("{name}.json")));
    let node = within(Duration::from_secs(30), async {
        loop {
            match Node::start(
                js.clone(),
                log.clone(),
                settings.clone(),
                registry.clone(),
                store.clone(),
            )
            .await
            {
                Ok(node) => break node,
                Err(e) => {
                    eprintln!("cluster: node {name} not started yet: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    })
    .await;
    ClusterNode { node, content }
}

/// The index of the node leading the stream, and whether every replica is
/// current.
async fn leader(
    js: &jetstream::Context,
    log: &LogSettings,
    cluster: &NatsCluster,
) -> Option<(usize, bool)> {
    let mut stream = js.get_stream(&log.stream).await.ok()?;
    let info = stream.info().await.ok()?;
    let cluster_info = info.cluster.clone()?;
    let name = cluster_info.leader?;
    let index = cluster.nodes().iter().position(|n| n.name() == name)?;
    let current = cluster_info.replicas.len() == cluster.size() - 1
        && cluster_info
            .replicas
            .iter()
            .all(|r| r.current && !r.offline);
    Some((index, current))
}

/// Waits for a stream leader with all replicas current.
async fn healthy_leader(
    js: &jetstream::Context,
    log: &LogSettings,
    cluster: &NatsCluster,
) -> usize {
    within(Duration::from_secs(60), async {
        loop {
            if let Some((index, true)) = leader(js, log, cluster).await {
                break index;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
}

/// Kills the stream leader; returns the time from the kill to the next
/// acknowledged publish, and to `nodes` applying that publish.
async fn kill_leader(
    cluster: &mut NatsCluster,
    js: &jetstream::Context,
    log: &LogSettings,
    acks: &Acks,
    nodes: &[&ClusterNode],
    what: &str,
) -> (usize, Duration, Duration) {
    let index = healthy_leader(js, log, cluster).await;
    let acked_before = acks.lock().unwrap().len();
    cluster.node(index).kill().unwrap();
    let killed = Instant::now();
    // The first publish started after the kill (an acknowledgement in
    // flight at the kill does not count).
    let started_after = || {
        acks.lock()
            .unwrap()
            .iter()
            .skip(acked_before)
            .find(|(_, _, started, _)| *started > killed)
            .map(|(_, seq, _, acked)| (*seq, *acked))
    };
    time_until(
        Duration::from_secs(60),
        &format!("{what}: a publish acknowledged after the kill"),
        || started_after().is_some(),
    )
    .await;
    let (first_seq, first_at) = started_after().unwrap();
    let publish = first_at - killed;
    time_until(
        Duration::from_secs(90),
        &format!("{what}: nodes apply after the kill"),
        || nodes.iter().all(|n| n.node.applied() >= first_seq),
    )
    .await;
    let apply = killed.elapsed();
    eprintln!("cluster: {what}: killed leader node{index}; next publish acknowledged after {publish:?}, applied by every node after {apply:?}");
    (index, publish, apply)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r3_stream_survives_leader_kills_and_a_frozen_follower() {
    let backlog_target: usize = if slow() { 20_000 } else { 2_000 };
    if let Ok(filter) = std::env::var("INVALOG_TEST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    }
    let mut cluster = NatsCluster::start(3).await.expect("cluster starts");
    cluster
        .wait_for_jetstream(Duration::from_secs(60))
        .await
        .expect("JetStream cluster ready");
    let js = js_for(&cluster).await;
    let log = LogSettings {
        replicas: 3,
        ..LogSettings::default()
    };
    within(Duration::from_secs(60), async {
        loop {
            match invalog::provision(&js, &log).await {
                Ok(_) => break,
                Err(e) => {
                    eprintln!("cluster: provisioning not yet possible: {e}");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            }
        }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let first = start_node(js_for(&cluster).await, &log, "first", dir.path()).await;
    within(Duration::from_secs(30), first.node.ready())
        .await
        .unwrap();

    // One publisher, its own connection to all three servers, publishing
    // one message at a time until told to stop.
    let acks: Acks = Arc::default();
    let failures = Arc::new(Mutex::new(Vec::<(i64, PublishErrorKind, String)>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let publisher_task = {
        let mut settings = PublisherSettings::new("cluster-test");
        settings.ack_timeout = Duration::from_millis(500);
        settings.attempts = 120;
        let publisher = Publisher::new(js_for(&cluster).await, log.clone(), settings, defs());
        let (acks, failures, stop) = (acks.clone(), failures.clone(), stop.clone());
        tokio::spawn(async move {
            let mut id = 0;
            while !stop.load(Ordering::SeqCst) {
                id += 1;
                let started = Instant::now();
                match publisher.refresh_ids("content", &[id]).await {
                    Ok(receipt) => {
                        acks.lock().unwrap().push((
                            id,
                            receipt.sequence().unwrap(),
                            started,
                            Instant::now(),
                        ));
                    }
                    // Not acknowledged, perhaps stored: no promise, but
                    // counted and reported. (Calling again would publish a
                    // new batch id and could store the instruction twice.)
                    Err(e) => failures
                        .lock()
                        .unwrap()
                        .push((id, e.kind.clone(), e.to_string())),
                }
                // Pacing (at most about 1,000 publishes a second), not a wait.
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
    };
    let acked = || acks.lock().unwrap().len();

    // 1. The leader dies while publishing.
    eventually(Duration::from_secs(60), "some publishes", || {
        acked() >= backlog_target / 4
    })
    .await;
    let (killed, publish1, apply1) = kill_leader(
        &mut cluster,
        &js,
        &log,
        &acks,
        &[&first],
        "while publishing",
    )
    .await;
    cluster.node(killed).restart().await.unwrap();

    // 2. The leader dies while a late node catches up the log.
    eventually(Duration::from_secs(120), "a backlog", || {
        acked() >= backlog_target
    })
    .await;
    let late = start_node(js_for(&cluster).await, &log, "late", dir.path()).await;
    eventually(
        Duration::from_secs(30),
        "the late node started applying",
        || late.node.applied() > 0,
    )
    .await;
    let late_at_kill = late.node.applied();
    let (killed, publish2, apply2) = kill_leader(
        &mut cluster,
        &js,
        &log,
        &acks,
        &[&first, &late],
        "while a node catches up",
    )
    .await;
    eprintln!("cluster: the late node had applied {late_at_kill} shortly before the kill");
    cluster.node(killed).restart().await.unwrap();
    within(Duration::from_secs(60), late.node.ready())
        .await
        .unwrap();

    // 3. A follower freezes for 3 s, then thaws. Clients whose connection
    // goes to the frozen server stall until the thaw (nothing tells them it
    // is gone: no ping fails that soon), the others carry on.
    let leader_index = healthy_leader(&js, &log, &cluster).await;
    let follower = (leader_index + 1) % cluster.size();
    let frozen_at = acked();
    cluster.node(follower).freeze().unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await; // the fault's duration
    let during = acked() - frozen_at;
    cluster.node(follower).thaw().unwrap();
    let thawed = Instant::now();
    let thawed_at = acked();
    time_until(
        Duration::from_secs(60),
        "50 publishes after the thaw",
        || acked() >= thawed_at + 50,
    )
    .await;
    let publishing_again = thawed.elapsed();
    let last_after_thaw = acks.lock().unwrap().last().unwrap().1;
    within(
        Duration::from_secs(60),
        first.node.wait_applied(last_after_thaw),
    )
    .await
    .unwrap();
    within(
        Duration::from_secs(60),
        late.node.wait_applied(last_after_thaw),
    )
    .await
    .unwrap();
    let applying_again = thawed.elapsed();
    healthy_leader(&js, &log, &cluster).await;
    eprintln!(
        "cluster: node{follower} frozen 3 s: {during} publishes acknowledged meanwhile; after the thaw \
         50 more within {publishing_again:?}, applied by both nodes within {applying_again:?}, \
         all replicas current within {:?}",
        thawed.elapsed()
    );

    stop.store(true, Ordering::SeqCst);
    within(Duration::from_secs(120), publisher_task)
        .await
        .unwrap();
    let acks = acks.lock().unwrap().clone();
    let failures = failures.lock().unwrap().clone();
    let mut failed_kinds: HashMap<String, usize> = HashMap::new();
    for (_, kind, _) in &failures {
        *failed_kinds.entry(format!("{kind:?}")).or_default() += 1;
    }
    eprintln!(
        "cluster: {} publish calls failed (not acknowledged) by kind: {failed_kinds:?}; first: {:?}",
        failures.len(),
        failures.first()
    );
    let highest = acks.iter().map(|a| a.1).max().unwrap();
    within(Duration::from_secs(60), first.node.wait_applied(highest))
        .await
        .unwrap();
    within(Duration::from_secs(60), late.node.wait_applied(highest))
        .await
        .unwrap();

    // No acknowledged instruction lost, none stored twice: a fresh node
    // replaying the whole stream sees every acknowledged id exactly once.
    let seq_of: HashMap<i64, u64> = acks.iter().map(|(id, seq, _, _)| (*id, *seq)).collect();
    let check = start_node(js_for(&cluster).await, &log, "check", dir.path()).await;
    within(Duration::from_secs(60), check.node.wait_applied(highest))
        .await
        .unwrap();
    let ids = |n: &ClusterNode| -> Vec<i64> {
        n.content
            .calls()
            .into_iter()
            .flat_map(|c| match c {
                Call::Ids(ids) => ids,
                other => panic!("unexpected {other:?}"),
            })
            .collect()
    };
    let replayed = ids(&check);
    let mut sorted = replayed.clone();
    sorted.sort_unstable();
    let twice: Vec<i64> = sorted
        .windows(2)
        .filter(|w| w[0] == w[1])
        .map(|w| w[0])
        .collect();
    sorted.dedup();
    assert!(twice.is_empty(), "ids stored twice: {twice:?}");
    // Every acknowledged id is in the stream; the only others are ids whose
    // publish failed (they may or may not have been stored).
    let failed: std::collections::HashSet<i64> = failures.iter().map(|f| f.0).collect();
    let stored: std::collections::HashSet<i64> = sorted.iter().copied().collect();
    let lost: Vec<i64> = seq_of
        .keys()
        .filter(|id| !stored.contains(id))
        .copied()
        .collect();
    assert!(
        lost.is_empty(),
        "acknowledged but not in the stream: {lost:?}"
    );
    let strangers: Vec<i64> = sorted
        .iter()
        .filter(|id| !seq_of.contains_key(id) && !failed.contains(id))
        .copied()
        .collect();
    assert!(
        strangers.is_empty(),
        "in the stream but never published: {strangers:?}"
    );
    let failed_but_stored = sorted.len() - seq_of.len();
    // The stream holds only these messages, so the n-th replayed is at
    // sequence n; acknowledged sequences must agree.
    let stream_seq: HashMap<i64, u64> = replayed
        .iter()
        .enumerate()
        .map(|(i, id)| (*id, i as u64 + 1))
        .collect();
    for (id, seq) in &seq_of {
        assert_eq!(stream_seq[id], *seq, "id {id} acknowledged at {seq}");
    }
    let to_seqs = |ids: Vec<i64>| {
        ids.into_iter()
            .map(|id| stream_seq[&id])
            .collect::<Vec<_>>()
    };
    let expected_seqs: Vec<u64> = stream_seq.values().copied().collect();
    let first_again =
        check_in_order_nothing_lost(&to_seqs(ids(&first)), expected_seqs.iter().copied());
    let late_again =
        check_in_order_nothing_lost(&to_seqs(ids(&late)), expected_seqs.iter().copied());
    eprintln!(
        "cluster: {} publishes acknowledged, 0 lost, 0 stored twice; applied again: first {first_again}, late {late_again}; \
         leader kill while publishing: publish resumed {publish1:?}, applied {apply1:?}; \
         while catching up: publish resumed {publish2:?}, applied {apply2:?}; \
         {failed_but_stored} of {} failed publishes were stored nevertheless",
        acks.len(),
        failures.len()
    );
    for bound in [publish1, apply1, publish2, apply2] {
        assert!(
            bound < Duration::from_secs(60),
            "recovery bounded by 60 s: {bound:?}"
        );
    }
}
