//! Least privilege: an agent can write its own presence report and no
//! other; `invalog status` reads the fleet with read-only rights.

use std::sync::Arc;
use std::time::Duration;

use invalog::fleet::fleet_status;
use invalog::presence::{Presence, PresenceSettings};
use invalog::{LogSettings, Node};

use super::{until, INTERVAL};

/// The permissions docs/operations/status.md recommends, verbatim: an agent
/// writes only its own report; `invalog status` only reads.
fn least_privilege_config() -> String {
    r#"authorization {
  users = [
    { user: admin, password: "admin-pw" }
    { user: agent-web-1, password: "agent-pw", permissions: {
        publish: { allow: [
          "$JS.API.STREAM.INFO.KV_invalog_nodes",
          "$KV.invalog_nodes.web-1",
        ] }
        subscribe: { allow: ["_INBOX.>"] }
    } }
    { user: status, password: "status-pw", permissions: {
        publish: { allow: [
          "$JS.API.STREAM.INFO.INVALOG",
          "$JS.API.STREAM.INFO.KV_invalog_nodes",
          "$JS.API.CONSUMER.CREATE.KV_invalog_nodes",
          "$JS.API.DIRECT.GET.KV_invalog_nodes.>",
        ] }
        subscribe: { allow: ["_INBOX.>"] }
    } }
  ]
}"#
    .to_owned()
}

#[tokio::test]
async fn least_privilege_reporter_and_status() {
    let server = invalog_nats_server::NatsServer::start_with_config(&least_privilege_config())
        .await
        .unwrap();
    let js_as = |user: &'static str, password: &'static str| {
        let url = server.url();
        async move {
            let client =
                async_nats::ConnectOptions::with_user_and_password(user.into(), password.into())
                    .connect(url)
                    .await
                    .unwrap();
            async_nats::jetstream::context::ContextBuilder::new()
                .timeout(Duration::from_secs(2))
                .build(client)
        }
    };
    let violations = || {
        let log = std::fs::read_to_string(server.log_path()).unwrap_or_default();
        let denied = log.lines().filter(|l| l.contains("Violation"));
        denied.collect::<Vec<_>>().join("\n")
    };
    // An administrator provisions the stream and creates the bucket (as the
    // first agent would, with full rights).
    let admin = js_as("admin", "admin-pw").await;
    let log = LogSettings::default();
    invalog::provision(&admin, &log).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let start = |js: async_nats::jetstream::Context, id: &str| {
        let path = dir.path().join(format!("{id}.json"));
        let id = invalog::NodeId::new(id).unwrap();
        let log = log.clone();
        async move {
            let settings = invalog::NodeSettings::new(id);
            let store = invalog::FileStore::new(path);
            Node::start(js, log, settings, invalog::Registry::new(), store).await
        }
    };
    let admin_node = Arc::new(start(admin.clone(), "web-0").await.unwrap());
    let presence = PresenceSettings {
        interval: INTERVAL,
        ..PresenceSettings::default()
    };
    let first = Presence::start(
        admin.clone(),
        presence.clone(),
        &log.stream,
        admin_node.clone(),
        vec![],
    )
    .await
    .expect("the admin creates the bucket");

    // The agent reports under its own key only.
    let agent = js_as("agent-web-1", "agent-pw").await;
    let node = Arc::new(start(admin.clone(), "web-1").await.unwrap());
    let reporter = Presence::start(
        agent.clone(),
        presence.clone(),
        &log.stream,
        node.clone(),
        vec![],
    )
    .await
    .unwrap_or_else(|e| panic!("{e}; violations:\n{}", violations()));
    let other = Arc::new(start(admin.clone(), "web-2").await.unwrap());
    let refused = Presence::start(
        agent.clone(),
        presence.clone(),
        &log.stream,
        other.clone(),
        vec![],
    )
    .await;
    assert!(refused.is_err(), "another node's key is refused");

    // `invalog status` reads everything with read-only rights.
    let status_js = js_as("status", "status-pw").await;
    let fleet = until("both nodes report ready", || async {
        let fleet = fleet_status(&status_js, &log, &presence.bucket, Duration::from_secs(30))
            .await
            .unwrap_or_else(|e| panic!("{e}; violations:\n{}", violations()));
        fleet.healthy().then_some(fleet)
    })
    .await;
    let nodes: Vec<&str> = fleet.nodes.iter().map(|n| n.report.node.as_str()).collect();
    assert_eq!(nodes, ["web-0", "web-1"]);
    assert!(
        violations().contains("$KV.invalog_nodes.web-2"),
        "{}",
        violations()
    );
    assert_eq!(violations().lines().count(), 1, "{}", violations());
    reporter.stop().await.unwrap();
    first.stop().await.unwrap();
    for n in [admin_node, node, other] {
        n.shutdown().await.unwrap();
    }
}
