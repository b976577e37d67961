//! The shipped deploy/nats/least-privilege.conf, loaded as it is (only the
//! passwords, which it reads from the server's environment, written in):
//! an agent answers `invalog probe` under it, and each role is refused what
//! it must not do — an agent may not publish to the log, another node's
//! keys, other clients' inboxes or outside `_INVALOG.probe.*`; a publisher
//! may do nothing a node may besides appending to the log; the probe user
//! runs the probe service and may do nothing else.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use invalog::node::NewNodePolicy;
use invalog::probe::ProbeSettings;
use invalog::{KvStore, LogSettings, Node, NodeId, NodeSettings, PublisherSettings, Registry};

use crate::support::{defs, eventually, within, Recorder};

const LIMIT: Duration = Duration::from_secs(20);

/// The shipped file with literal passwords in place of `$INVALOG_…`.
fn shipped_config() -> String {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/nats/least-privilege.conf"
    );
    let mut text = std::fs::read_to_string(path).unwrap();
    for (variable, password) in [
        ("$INVALOG_ADMIN_PASSWORD", "\"admin-pw\""),
        ("$INVALOG_PUBLISHER_PASSWORD", "\"publisher-pw\""),
        ("$INVALOG_PROBE_PASSWORD", "\"probe-pw\""),
        ("$INVALOG_AGENT_WEB_1_PASSWORD", "\"agent-1-pw\""),
        ("$INVALOG_AGENT_WEB_2_PASSWORD", "\"agent-2-pw\""),
    ] {
        assert!(text.contains(variable), "{variable} no longer in {path}");
        text = text.replace(variable, password);
    }
    text
}

async fn client_as(
    server: &invalog_nats_server::NatsServer,
    user: &str,
    password: &str,
) -> async_nats::Client {
    async_nats::ConnectOptions::with_user_and_password(user.into(), password.into())
        .connect(server.url())
        .await
        .unwrap()
}

fn js_of(client: &async_nats::Client) -> jetstream::Context {
    jetstream::context::ContextBuilder::new()
        .timeout(Duration::from_secs(2))
        .build(client.clone())
}

#[tokio::test]
async fn the_shipped_permissions_let_each_role_do_only_its_part() {
    let server = invalog_nats_server::NatsServer::start_with_config(&shipped_config())
        .await
        .unwrap();
    let violations = || {
        let log = std::fs::read_to_string(server.log_path()).unwrap_or_default();
        let denied = log.lines().filter(|l| l.contains("Violation"));
        denied.map(str::to_owned).collect::<Vec<_>>()
    };
    let log = LogSettings::default();
    let admin = js_of(&client_as(&server, "admin", "admin-pw").await);
    invalog::provision(&admin, &log).await.unwrap();
    let web_1 = NodeId::new("web-1").unwrap();
    KvStore::open(&admin, "invalog_checkpoints", 1, web_1.clone())
        .await
        .expect("the admin creates the bucket");
    // The cold-boot bucket as a node creates it (history 1, max_age = TTL).
    admin
        .create_key_value(jetstream::kv::Config {
            bucket: invalog::node::COLD_BOOT_BUCKET.into(),
            history: 1,
            max_age: invalog::node::ColdBootLimit::default().lease_ttl,
            ..Default::default()
        })
        .await
        .expect("the admin creates the cold-boot bucket");

    // The agent of web-1 cold boots (taking a cold-boot slot), follows the
    // log and answers a probe.
    let agent = client_as(&server, "agent-web-1", "agent-1-pw").await;
    let agent_js = js_of(&agent);
    let store = KvStore::open(&agent_js, "invalog_checkpoints", 1, web_1.clone())
        .await
        .unwrap();
    let mut registry = Registry::new();
    registry
        .register_arc(defs()[0].clone(), Arc::new(Recorder::default()))
        .unwrap();
    let mut settings = NodeSettings::new(web_1);
    settings.new_node = NewNodePolicy::ColdBoot;
    let node = Node::start(agent_js, log.clone(), settings, registry, store)
        .await
        .unwrap_or_else(|e| panic!("{e}; violations: {:?}", violations()));
    within(LIMIT, node.ready()).await.unwrap();
    let probe = ProbeSettings {
        rate: 50.0,
        count: 3,
        within: Duration::from_secs(5),
        timeout: Duration::from_secs(10),
        expected_nodes: vec!["web-1".into()],
    };
    let report = invalog::probe::run(&admin, &log, PublisherSettings::new("probe"), &probe)
        .await
        .unwrap();
    assert!(report.is_ok(), "{report:?}; violations: {:?}", violations());
    assert_eq!(
        violations(),
        Vec::<String>::new(),
        "nothing the agent needs is missing"
    );

    // A presence report the probe reads (a node that stopped cleanly).
    let presence = admin
        .create_key_value(jetstream::kv::Config {
            bucket: "invalog_nodes".into(),
            history: 1,
            ..Default::default()
        })
        .await
        .expect("the admin creates the presence bucket");
    let stopped = invalog::presence::NodeReport {
        node: "web-7".into(),
        stream: Some(log.stream.clone()),
        version: "0".into(),
        applied: 0,
        stored: 0,
        stream_last: 0,
        lag: 0,
        state: "stopped".into(),
        ready: false,
        reason: None,
        started_at: std::time::SystemTime::now(),
        last_seen: std::time::SystemTime::now(),
        refreshers: vec![],
        instance: String::new(),
        stream_created: None,
        duplicate: None,
    };
    let report = invalog::presence::encode_node_report(&stopped);
    presence.put("web-7", report.into()).await.unwrap();

    // The probe service as the probe user counts web-1's answers.
    let prober = client_as(&server, "probe", "probe-pw").await;
    probe_service_counts(&js_of(&prober), &log, "web-1")
        .await
        .unwrap_or_else(|e| panic!("{e}; violations: {:?}", violations()));
    assert_eq!(
        violations(),
        Vec::<String>::new(),
        "nothing the probe needs is missing"
    );

    let publisher = client_as(&server, "publisher", "publisher-pw").await;
    let agent_denied = [
        "invalog.content",
        "invalog._probe",
        "$KV.invalog_checkpoints.web-2",
        "$KV.invalog_nodes.web-2",
        "$JS.API.STREAM.PURGE.INVALOG",
        "$JS.API.STREAM.DELETE.INVALOG",
        "_INBOX.someone-else",
        "_INVALOG.probe.run.extra",
        "_INVALOG.other",
    ];
    let publisher_denied = [
        "_INVALOG.probe.run-1",
        "$KV.invalog_checkpoints.web-1",
        "$KV.invalog_nodes.web-1",
        "$JS.API.CONSUMER.CREATE.INVALOG",
        "$JS.API.DIRECT.GET.INVALOG",
        "_INBOX.someone-else",
    ];
    let probe_denied = [
        "invalog.content",
        "_INVALOG.probe.run-1",
        "$KV.invalog_nodes.web-1",
        "$JS.API.STREAM.DELETE.INVALOG",
    ];
    for subject in agent_denied {
        agent.publish(subject, "x".into()).await.unwrap();
    }
    for subject in probe_denied {
        prober.publish(subject, "x".into()).await.unwrap();
    }
    prober.flush().await.unwrap();
    for subject in publisher_denied {
        publisher.publish(subject, "x".into()).await.unwrap();
    }
    // Allowed, for contrast: no violation.
    agent
        .publish("_INVALOG.probe.run-1", "x".into())
        .await
        .unwrap();
    agent.flush().await.unwrap();
    publisher.flush().await.unwrap();
    // 2.11+ logs `"$G/user:<user>" - Publish Violation - Subject "<s>"`,
    // 2.10 `Publish Violation - User "<user>", Subject "<s>"`.
    let by = |user: &str, line: &str| {
        line.contains(&format!("user:{user}\"")) || line.contains(&format!("User \"{user}\""))
    };
    let denied = |user: &str, subject: &str| {
        violations().iter().any(|l| {
            l.contains("Publish Violation") && by(user, l) && l.contains(&format!("\"{subject}\""))
        })
    };
    for subject in agent_denied {
        eventually(LIMIT, &format!("agent-web-1 refused {subject}"), || {
            denied("agent-web-1", subject)
        })
        .await;
    }
    for subject in publisher_denied {
        eventually(LIMIT, &format!("publisher refused {subject}"), || {
            denied("publisher", subject)
        })
        .await;
    }
    for subject in probe_denied {
        eventually(LIMIT, &format!("probe refused {subject}"), || {
            denied("probe", subject)
        })
        .await;
    }
    assert!(
        !violations()
            .iter()
            .any(|l| by("agent-web-1", l) && l.contains("\"_INVALOG.probe.run-1\"")),
        "{:?}",
        violations()
    );
    assert_eq!(
        violations().len(),
        agent_denied.len() + publisher_denied.len() + probe_denied.len(),
        "{:?}",
        violations()
    );
    node.shutdown().await.unwrap();
}

/// Runs `invalog_agent::probe_service::serve` on `js` until its `/metrics` counts two
/// canaries applied by `node`, then stops it.
async fn probe_service_counts(
    js: &jetstream::Context,
    log: &LogSettings,
    node: &str,
) -> Result<(), String> {
    // reqwest needs a TLS provider installed (see `support::Fixture`).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/metrics", listener.local_addr().unwrap());
    let settings = invalog_agent::probe_service::ServiceSettings {
        every: Duration::from_millis(50),
        timeout: Duration::from_secs(5),
        forget_after: Duration::from_secs(60),
        nodes: vec![node.into()],
        presence: Some(invalog_agent::probe_service::PresenceSource {
            bucket: "invalog_nodes".into(),
            stale_after: Duration::from_secs(30),
        }),
    };
    let stop = tokio_util::sync::CancellationToken::new();
    let service = invalog_agent::probe_service::serve(
        js,
        log,
        PublisherSettings::new("probe"),
        &settings,
        listener,
        stop.clone().cancelled_owned(),
    );
    let applied = format!("invalog_probe_applied_total{{node=\"{node}\"}} ");
    let watch = async {
        let counted = within(LIMIT, async {
            loop {
                let text = match reqwest::get(&url).await {
                    Ok(answer) => answer.text().await.unwrap_or_default(),
                    Err(_) => String::new(),
                };
                let value = text.lines().find_map(|l| l.strip_prefix(applied.as_str()));
                if value.and_then(|v| v.parse::<f64>().ok()) >= Some(2.0) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        counted.await;
        stop.cancel();
    };
    let (served, ()) = tokio::join!(service, watch);
    served.map_err(|e| e.to_string())
}
