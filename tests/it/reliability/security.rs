//! An agent whose NATS user has the permissions of docs/nats-connection.md
//! ("Least privilege") can read the log but cannot publish to it, purge it,
//! delete a message or delete the stream. (Publishing and consuming with
//! those permissions, TLS, mutual TLS and secrets in logs are covered in
//! `connect.rs`; the webhook signature in `appliers/webhook.rs`.)

use std::time::Duration;

use async_nats::jetstream;
use invalog::connect::{connect, NatsAuth, NatsSettings};
use invalog::secret::Secret;
use invalog::LogSettings;
use invalog_nats_server::NatsServer;

/// The agent user of docs/nats-connection.md, verbatim, plus an admin.
const CONFIG: &str = r#"authorization {
  users = [
    { user: admin, password: "admin-pw" }
    { user: agent-web-1, password: "agent-pw", permissions: {
        publish: { allow: [
          "$JS.API.STREAM.INFO.INVALOG",
          "$JS.API.CONSUMER.CREATE.INVALOG",
          "$JS.API.CONSUMER.CREATE.INVALOG.>",
          "$JS.API.CONSUMER.MSG.NEXT.INVALOG.>",
          "$JS.API.CONSUMER.INFO.INVALOG.>",
          "$JS.API.CONSUMER.DELETE.INVALOG.>",
          "$JS.API.DIRECT.GET.INVALOG",
          "$JS.API.STREAM.INFO.KV_invalog_checkpoints",
          "$JS.API.DIRECT.GET.KV_invalog_checkpoints.$KV.invalog_checkpoints.web-1",
          "$KV.invalog_checkpoints.web-1",
        ] }
        subscribe: { allow: ["_INBOX.>"] }
    } }
  ]
}"#;

async fn js_as(server: &NatsServer, user: &str, password: &str) -> jetstream::Context {
    let settings = NatsSettings {
        urls: vec![server.url()],
        auth: NatsAuth::UserPassword {
            user: user.into(),
            password: Secret::new(password.to_owned()),
        },
        request_timeout: Duration::from_millis(500),
        ..Default::default()
    };
    let client = connect(&settings).await.expect("connects");
    jetstream::context::ContextBuilder::new()
        .timeout(Duration::from_millis(500))
        .build(client)
}

#[tokio::test]
async fn a_consume_only_agent_cannot_publish_purge_or_delete() {
    let server = NatsServer::start_with_config(CONFIG).await.unwrap();
    let log = LogSettings::default();
    let admin = js_as(&server, "admin", "admin-pw").await;
    invalog::provision(&admin, &log).await.unwrap();
    for i in 0..3 {
        admin
            .publish("invalog.content", format!("{i}").into())
            .await
            .unwrap()
            .await
            .unwrap();
    }

    let agent = js_as(&server, "agent-web-1", "agent-pw").await;
    let mut stream = agent
        .get_stream("INVALOG")
        .await
        .expect("may read stream info");
    assert_eq!(stream.info().await.unwrap().state.messages, 3);
    let published = match agent.publish("invalog.content", "x".into()).await {
        Err(_) => false,
        Ok(ack) => ack.await.is_ok(),
    };
    assert!(!published, "the agent published");
    assert!(stream.purge().await.is_err(), "the agent purged the stream");
    assert!(
        stream.delete_message(1).await.is_err(),
        "the agent deleted a message"
    );
    assert!(
        agent.delete_stream("INVALOG").await.is_err(),
        "the agent deleted the stream"
    );

    let mut check = admin.get_stream("INVALOG").await.unwrap();
    let state = check.info().await.unwrap().state.clone();
    assert_eq!(
        (state.messages, state.first_sequence, state.last_sequence),
        (3, 1, 3),
        "untouched"
    );
    let log = std::fs::read_to_string(server.log_path()).unwrap_or_default();
    for denied in [
        "$JS.API.STREAM.PURGE.INVALOG",
        "$JS.API.STREAM.MSG.DELETE.INVALOG",
        "$JS.API.STREAM.DELETE.INVALOG",
    ] {
        assert!(
            log.lines()
                .any(|l| l.contains("Violation") && l.contains(denied)),
            "the server logged no violation for {denied}"
        );
    }
}
