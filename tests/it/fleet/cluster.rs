//! A 3-server cluster with an R3 stream: the fleet view shows the stream's
//! leader and its three replicas, in the library and in `invalog status`.

use std::sync::Arc;
use std::time::Duration;

use invalog::fleet::fleet_status;
use invalog::presence::Presence;
use invalog::{LogSettings, Node};
use invalog_nats_server::NatsCluster;
use serde_json::Value;

use super::{invalog_status, settings, status_config, until, BUCKET, LIMIT};

#[tokio::test]
async fn a_cluster_shows_the_leader_and_three_replicas() {
    let cluster = NatsCluster::start(3).await.expect("cluster starts");
    cluster
        .wait_for_jetstream(LIMIT)
        .await
        .expect("JetStream on the cluster");
    let client = async_nats::connect(cluster.urls()[0].clone())
        .await
        .unwrap();
    let js = async_nats::jetstream::new(client);
    let log = LogSettings {
        replicas: 3,
        ..LogSettings::default()
    };
    until("the R3 stream is provisioned", || async {
        invalog::provision(&js, &log).await.ok()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(
        js.clone(),
        log.clone(),
        invalog::NodeSettings::new(invalog::NodeId::new("web-1").unwrap()),
        invalog::Registry::new(),
        invalog::FileStore::new(dir.path().join("c.json")),
    )
    .await
    .unwrap();
    let node = Arc::new(node);
    let presence = until("presence starts with an R3 bucket", || async {
        Presence::start(js.clone(), settings(3), &log.stream, node.clone(), vec![])
            .await
            .ok()
    })
    .await;

    let fleet = until("every replica is current", || async {
        let fleet = fleet_status(&js, &log, BUCKET, Duration::from_secs(10))
            .await
            .ok()?;
        let cluster = fleet.stream.cluster.as_ref()?;
        (cluster.replicas.len() == 3 && cluster.replicas.iter().all(|r| r.healthy()))
            .then_some(fleet)
    })
    .await;
    assert_eq!(fleet.stream.replicas, 3);
    let c = fleet.stream.cluster.as_ref().unwrap();
    let leader = c.leader.clone().expect("a leader");
    assert_eq!(c.replicas.iter().filter(|r| r.leader).count(), 1);
    assert_eq!(c.replicas[0].name, leader, "the leader comes first");
    let mut names: Vec<&str> = c.replicas.iter().map(|r| r.name.as_str()).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 3, "three distinct servers");

    let config = status_config(dir.path(), &cluster.urls(), "[stream]\nreplicas = 3\n");
    let (code, stdout, stderr) = invalog_status(&config, &["--json"]).await;
    assert_eq!(code, 0, "{stderr}");
    let doc: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(doc["stream"]["replicas"], 3);
    assert_eq!(
        doc["stream"]["cluster"]["replicas"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    assert!(doc["stream"]["cluster"]["leader"].is_string());
    let (code, table, _) = invalog_status(&config, &[]).await;
    assert_eq!(code, 0);
    assert!(
        table.contains("LEADER") && table.contains("follower"),
        "{table}"
    );
    presence.stop().await.unwrap();
    node.shutdown().await.unwrap();
}
