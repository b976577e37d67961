//! The topology of docker-compose.yml as local processes: a three-node
//! JetStream cluster (`invalog_nats_server::NatsCluster`), the log as an R3
//! stream, and two app nodes, each an `invalog agent` (the real binary,
//! given all three server URLs as in config/compose/agent.toml) applying
//! through a webhook into its own app (a recording receiver). Both agents
//! become ready and a publish reaches both; with one server down (not the
//! stream leader) a publish is still acknowledged.

use std::time::Duration;

use async_nats::jetstream;
use invalog::{LogSettings, Publisher, PublisherSettings};
use invalog_nats_server::NatsCluster;

use crate::agent_support::{free_port, webhook, Agent, AgentConfig, Hook};
use crate::support::{defs, within};

/// One app node: its app's webhook receiver and its agent.
struct AppNode {
    hook: Hook,
    agent: Agent,
}

/// Starts the agent of `node` against every server of the cluster, with the
/// stream settings of the compose file (R3) from the environment, as a
/// container would set them.
async fn start_app_node(dir: &std::path::Path, urls: &[String], node: &str) -> AppNode {
    let (hook, hook_port) = Hook::start(Duration::ZERO).await;
    let http_port = free_port();
    let config = AgentConfig {
        dir,
        urls: urls.to_vec(),
        node,
        http_port,
        applier: webhook(hook_port),
        node_extra: "",
        tables_extra: "",
    }
    .write();
    let agent = Agent::spawn_env(&config, http_port, &[("INVALOG_STREAM__REPLICAS", "3")]);
    AppNode { hook, agent }
}

async fn ready(agent: &Agent) {
    while agent.get("/readyz").await.map(|(code, _)| code) != Some(200) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits (up to `secs` seconds) until the agent has applied `sequence`; on
/// failure the panic shows the agent's `/status`.
async fn applied(agent: &Agent, sequence: u64, secs: u64) {
    let path = format!("/applied?seq={sequence}&timeout={secs}s");
    let (code, body) = within(Duration::from_secs(secs + 2), agent.get(&path))
        .await
        .expect("the agent answers");
    if code != 200 {
        let status = agent.get("/status").await.map(|(_, s)| s);
        panic!(
            "sequence {sequence} not applied on {} within {secs} s: {code} {body}\nstatus: {status:?}",
            agent.base
        );
    }
}

#[tokio::test]
async fn three_servers_an_r3_stream_and_two_agents_as_in_docker_compose() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut cluster = NatsCluster::start(3).await.expect("cluster starts");
    cluster
        .wait_for_jetstream(Duration::from_secs(20))
        .await
        .expect("the cluster has a JetStream meta leader");
    let urls = cluster.urls();
    let client = async_nats::connect(urls.clone()).await.unwrap();
    let js = jetstream::new(client);
    let log = LogSettings {
        replicas: 3,
        ..LogSettings::default()
    };
    // The meta leader may exist before it knows all three peers ("no
    // suitable peers for placement"): retry until an R3 stream fits.
    within(Duration::from_secs(20), async {
        while let Err(e) = invalog::provision(&js, &log).await {
            eprintln!("compose topology: provisioning R3 not yet possible: {e}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    let stream = js.get_stream(&log.stream).await.unwrap();
    let info = stream.cached_info();
    assert_eq!(info.config.num_replicas, 3);
    let leader = info.cluster.as_ref().and_then(|c| c.leader.clone());

    let dir = tempfile::tempdir().unwrap();
    let nodes = [
        start_app_node(dir.path(), &urls, "web-1").await,
        start_app_node(dir.path(), &urls, "web-2").await,
    ];
    for node in &nodes {
        within(Duration::from_secs(15), ready(&node.agent)).await;
    }

    let publisher = Publisher::new(js, log, PublisherSettings::new("app-web-1"), defs());
    let first = publisher
        .refresh_ids("content", &[42])
        .await
        .unwrap()
        .sequence()
        .unwrap();
    for node in &nodes {
        applied(&node.agent, first, 10).await;
        let bodies = node.hook.bodies.lock().unwrap().clone();
        assert_eq!(bodies.len(), 1, "one batch on {}", node.agent.base);
        assert_eq!(bodies[0]["sequence"], first);
        assert_eq!(bodies[0]["origin"], "app-web-1");
        assert_eq!(bodies[0]["instructions"][0]["ids"], serde_json::json!([42]));
    }

    // One server down (not the stream's leader): two of three replicas
    // still form a quorum, so a publish is acknowledged, hence durable, and
    // both agents apply it (an agent whose consumer lived on the killed
    // server recreates it once it has been quiet for 3 s while messages
    // wait; one whose new consumer is placed on the dead server reads the
    // message directly once the creation has timed out).
    let follower = (0..cluster.size())
        .find(|&i| Some(cluster.nodes()[i].name()) != leader.as_deref())
        .unwrap();
    cluster.node(follower).kill().unwrap();
    let second = within(
        Duration::from_secs(10),
        publisher.refresh_ids("content", &[43]),
    )
    .await
    .expect("acknowledged by the remaining quorum")
    .sequence()
    .unwrap();
    assert_eq!(second, first + 1);
    // Up to 3 s of quiet, then a new consumer on a cluster that just lost
    // a server; generous on a loaded machine.
    for node in &nodes {
        applied(&node.agent, second, 30).await;
    }
    for node in &nodes {
        node.agent.terminate();
    }
}
