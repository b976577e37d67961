//! `invalog::connect` against real nats-server processes, one configured
//! for each way to authenticate (user/password, token, nkey, creds file in
//! operator mode with JWTs made here) and for TLS (server-only and mutual,
//! certificates made with rcgen); several URLs with dead ones; reconnecting
//! the same client after the server is killed and restarted in place; and
//! that neither errors nor captured tracing output ever contain a secret.
//!
//! nkeys and JWTs are built without the `nkeys` crate (not a dependency):
//! ed25519 keys and signatures come from rcgen (ring), and the small
//! encoders (base32, CRC-16/XMODEM, base64url) are written out below.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, message::PublishMessage, stream};
use invalog::connect::{connect, ConnectError, NatsAuth, NatsSettings, TlsSettings};
use invalog::secret::Secret;
use invalog_nats_server::NatsServer;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SigningKey,
};
use serde_json::json;

use crate::support::{eventually, within};

const LIMIT: Duration = Duration::from_secs(60);

fn settings(urls: Vec<String>, auth: NatsAuth) -> NatsSettings {
    NatsSettings {
        urls,
        auth,
        name: Some("invalog-connect-test".into()),
        ..NatsSettings::default()
    }
}

/// Creates a stream named `name` and publishes one acknowledged message.
async fn jetstream_works(client: &async_nats::Client, name: &str) {
    let js = jetstream::new(client.clone());
    js.get_or_create_stream(stream::Config {
        name: name.into(),
        subjects: vec![format!("{name}.>")],
        ..Default::default()
    })
    .await
    .expect("creates a stream");
    let ack = js
        .publish(format!("{name}.x"), "hello".into())
        .await
        .expect("publishes")
        .await
        .expect("acknowledged");
    assert_eq!(ack.stream, name);
}

/// Connecting fails; returns the error's text (Display and Debug).
async fn refused(settings: &NatsSettings) -> String {
    let err = connect(settings).await.expect_err("must not connect");
    format!("{err} | {err:?}")
}

fn assert_hides(text: &str, secrets: &[&str]) {
    for secret in secrets {
        assert!(!text.contains(secret), "`{secret}` leaked into: {text}");
    }
}

fn dead_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("nats://127.0.0.1:{port}")
}

// ---------------------------------------------------------------- auth kinds

const PASSWORD: &str = "pw-Secret-3141";
const WRONG_PASSWORD: &str = "wrong-Secret-2718";
const TOKEN: &str = "tok-Secret-1618";
const WRONG_TOKEN: &str = "tok-Wrong-1414";

fn user_password(user: &str, password: &str) -> NatsAuth {
    NatsAuth::UserPassword {
        user: user.into(),
        password: Secret::new(password),
    }
}

#[tokio::test]
async fn user_and_password() {
    let server = NatsServer::start_with_config(&format!(
        r#"authorization {{ users = [ {{ user: "alice", password: "{PASSWORD}" }} ] }}"#
    ))
    .await
    .unwrap();
    let url = server.url();
    let good = settings(vec![url.clone()], user_password("alice", PASSWORD));
    let client = within(LIMIT, connect(&good)).await.expect("connects");
    jetstream_works(&client, "USERPASS").await;

    let bad = settings(vec![url.clone()], user_password("alice", WRONG_PASSWORD));
    let text = refused(&bad).await;
    assert!(text.contains("authorization violation"), "{text}");
    assert!(text.contains("check nats.user/nats.password"), "{text}");
    assert_hides(&text, &[PASSWORD, WRONG_PASSWORD]);

    let text = refused(&settings(vec![url.clone()], NatsAuth::None)).await;
    assert!(text.contains("requires authentication"), "{text}");

    // Credentials in the URL are used (async-nats alone would ignore them)
    // and never shown.
    let port = server.port();
    let in_url = |password: &str| vec![format!("nats://alice:{password}@127.0.0.1:{port}")];
    let client = connect(&settings(in_url(PASSWORD), NatsAuth::None))
        .await
        .expect("connects with the URL's credentials");
    jetstream_works(&client, "USERPASS").await;
    let text = refused(&settings(in_url(WRONG_PASSWORD), NatsAuth::None)).await;
    assert!(text.contains("nats://[redacted]@127.0.0.1"), "{text}");
    assert_hides(&text, &[WRONG_PASSWORD]);
    let both = settings(in_url(PASSWORD), user_password("alice", PASSWORD));
    let text = refused(&both).await;
    assert!(text.contains("authenticate one way only"), "{text}");
    assert_hides(&text, &[PASSWORD]);
}

#[tokio::test]
async fn token() {
    let config = format!(r#"authorization {{ token: "{TOKEN}" }}"#);
    let server = NatsServer::start_with_config(&config).await.unwrap();
    let good = settings(vec![server.url()], NatsAuth::Token(Secret::new(TOKEN)));
    let client = within(LIMIT, connect(&good)).await.expect("connects");
    jetstream_works(&client, "TOKEN").await;

    let bad = settings(
        vec![server.url()],
        NatsAuth::Token(Secret::new(WRONG_TOKEN)),
    );
    let text = refused(&bad).await;
    assert!(
        text.contains("authorization violation: check nats.token"),
        "{text}"
    );
    assert_hides(&text, &[TOKEN, WRONG_TOKEN]);
}

#[tokio::test]
async fn nkey_seed() {
    let user = NKey::new(PREFIX_USER);
    let stranger = NKey::new(PREFIX_USER);
    let config = format!(
        r#"authorization {{ users = [ {{ nkey: "{}" }} ] }}"#,
        user.public()
    );
    let server = NatsServer::start_with_config(&config).await.unwrap();
    let good = settings(
        vec![server.url()],
        NatsAuth::NkeySeed(Secret::new(user.seed())),
    );
    let client = within(LIMIT, connect(&good)).await.expect("connects");
    jetstream_works(&client, "NKEY").await;

    let seed = stranger.seed();
    let bad = settings(vec![server.url()], NatsAuth::NkeySeed(Secret::new(&seed)));
    let text = refused(&bad).await;
    assert!(text.contains("check nats.nkey_seed"), "{text}");
    assert_hides(&text, &[&seed, &user.seed()]);

    let garbage = "SUnot-a-valid-seed-at-all";
    let bad = settings(vec![server.url()], NatsAuth::NkeySeed(Secret::new(garbage)));
    let text = refused(&bad).await;
    assert!(text.contains("nats.nkey_seed"), "{text}");
    assert_hides(&text, &[garbage]);
}

#[tokio::test]
async fn creds_file_in_operator_mode() {
    let dir = tempfile::tempdir().unwrap();
    let trust = Operator::new();
    let server = NatsServer::start_with_config(&trust.server_config())
        .await
        .unwrap();

    let creds = dir.path().join("user.creds");
    let user = NKey::new(PREFIX_USER);
    std::fs::write(
        &creds,
        creds_file(&trust.user_jwt(&trust.account, &user), &user),
    )
    .unwrap();
    let good = settings(vec![server.url()], NatsAuth::CredsFile(creds.clone()));
    let client = within(LIMIT, connect(&good)).await.expect("connects");
    jetstream_works(&client, "CREDS").await;

    // A user of an account the operator never signed.
    let stranger_account = NKey::new(PREFIX_ACCOUNT);
    let stranger = NKey::new(PREFIX_USER);
    let jwt = trust.user_jwt(&stranger_account, &stranger);
    let bad_creds = dir.path().join("stranger.creds");
    std::fs::write(&bad_creds, creds_file(&jwt, &stranger)).unwrap();
    let text = refused(&settings(
        vec![server.url()],
        NatsAuth::CredsFile(bad_creds),
    ))
    .await;
    assert!(text.contains("authorization violation"), "{text}");
    assert!(text.contains("stranger.creds"), "{text}");
    assert_hides(&text, &[&stranger.seed(), &user.seed()]);

    let missing = dir.path().join("missing.creds");
    let err = connect(&settings(vec![server.url()], NatsAuth::CredsFile(missing)))
        .await
        .unwrap_err();
    assert!(matches!(err, ConnectError::CredsFile { .. }), "{err:?}");
    assert!(err.to_string().contains("missing.creds"), "{err}");
}

// ------------------------------------------------------------------------ TLS

/// A CA, a server certificate for `127.0.0.1`/`localhost` and a client
/// certificate, as PEM files in a temporary directory.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let ca = new_ca(dir.path(), "ca");
        leaf(
            dir.path(),
            "server",
            &ca,
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        leaf(
            dir.path(),
            "client",
            &ca,
            ExtendedKeyUsagePurpose::ClientAuth,
        );
        // A second CA that signed nothing the server uses.
        new_ca(dir.path(), "other-ca");
        Pki { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn server_tls(&self, verify_clients: bool) -> String {
        let (cert, key, ca) = (
            self.path("server.pem"),
            self.path("server-key.pem"),
            self.path("ca.pem"),
        );
        let verify = if verify_clients {
            format!("ca_file: \"{}\"\n  verify: true", ca.display())
        } else {
            String::new()
        };
        format!(
            "tls {{\n  cert_file: \"{}\"\n  key_file: \"{}\"\n  {verify}\n}}\n",
            cert.display(),
            key.display()
        )
    }

    fn trusting(&self, ca: &str) -> TlsSettings {
        TlsSettings {
            ca_file: Some(self.path(ca)),
            ..TlsSettings::default()
        }
    }

    fn with_client_cert(&self) -> TlsSettings {
        TlsSettings {
            cert_file: Some(self.path("client.pem")),
            key_file: Some(self.path("client-key.pem")),
            ..self.trusting("ca.pem")
        }
    }
}

fn new_ca(dir: &Path, name: &str) -> Issuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, format!("invalog test {name}"));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).unwrap();
    Issuer::new(params, key)
}

fn leaf(dir: &Path, name: &str, ca: &Issuer<'static, KeyPair>, usage: ExtendedKeyUsagePurpose) {
    let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
    let mut params = CertificateParams::new(names).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, format!("invalog test {name}"));
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![usage];
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, ca).unwrap();
    std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).unwrap();
    std::fs::write(dir.join(format!("{name}-key.pem")), key.serialize_pem()).unwrap();
}

fn with_tls(urls: Vec<String>, tls: TlsSettings) -> NatsSettings {
    NatsSettings {
        tls: Some(tls),
        ..settings(urls, NatsAuth::None)
    }
}

#[tokio::test]
async fn tls_with_a_private_ca() {
    let pki = Pki::new();
    let server = NatsServer::start_with_config(&pki.server_tls(false))
        .await
        .unwrap();
    let tls_url = format!("tls://127.0.0.1:{}", server.port());
    for url in [server.url(), tls_url.clone()] {
        let client = within(LIMIT, connect(&with_tls(vec![url], pki.trusting("ca.pem"))))
            .await
            .expect("connects over TLS");
        jetstream_works(&client, "TLS").await;
    }
    let required = TlsSettings {
        required: true,
        ..pki.trusting("ca.pem")
    };
    connect(&with_tls(vec![server.url()], required))
        .await
        .expect("connects with TLS required");

    // No CA: the system roots do not know ours.
    let text = refused(&settings(vec![tls_url.clone()], NatsAuth::None)).await;
    assert!(
        text.contains("not signed by a CA of the system roots"),
        "{text}"
    );
    assert!(text.contains("nats.tls.ca_file"), "{text}");

    // The wrong CA is named.
    let text = refused(&with_tls(
        vec![tls_url.clone()],
        pki.trusting("other-ca.pem"),
    ))
    .await;
    assert!(
        text.contains("not signed by the CA in nats.tls.ca_file"),
        "{text}"
    );
    assert!(text.contains("other-ca.pem"), "{text}");

    // A missing or non-PEM CA file is reported before connecting.
    let err = connect(&with_tls(vec![tls_url.clone()], pki.trusting("nope.pem")))
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, ConnectError::TlsFile { .. }), "{err:?}");
    assert!(
        text.contains("nope.pem") && text.contains("nats.tls.ca_file"),
        "{text}"
    );
    std::fs::write(pki.path("junk.pem"), "not a certificate").unwrap();
    let text = refused(&with_tls(vec![tls_url], pki.trusting("junk.pem"))).await;
    assert!(
        text.contains("junk.pem") && text.contains("no PEM certificate"),
        "{text}"
    );
}

#[tokio::test]
async fn mutual_tls() {
    let pki = Pki::new();
    let server = NatsServer::start_with_config(&pki.server_tls(true))
        .await
        .unwrap();
    let client = within(
        LIMIT,
        connect(&with_tls(vec![server.url()], pki.with_client_cert())),
    )
    .await
    .expect("connects with a client certificate");
    jetstream_works(&client, "MTLS").await;

    let text = refused(&with_tls(vec![server.url()], pki.trusting("ca.pem"))).await;
    assert!(text.contains("client certificate"), "{text}");

    let half = TlsSettings {
        key_file: None,
        ..pki.with_client_cert()
    };
    let text = refused(&with_tls(vec![server.url()], half)).await;
    assert!(
        text.contains("nats.tls.cert_file needs nats.tls.key_file"),
        "{text}"
    );

    // A key file without a key is named, and its content is not quoted.
    let junk = "not-a-key-but-could-be-secret";
    std::fs::write(pki.path("junk-key.pem"), junk).unwrap();
    let junk_key = TlsSettings {
        key_file: Some(pki.path("junk-key.pem")),
        ..pki.with_client_cert()
    };
    let text = refused(&with_tls(vec![server.url()], junk_key)).await;
    assert!(
        text.contains("junk-key.pem") && text.contains("no PEM private key"),
        "{text}"
    );
    assert_hides(&text, &[junk]);
}

// ------------------------------------------------------- URLs and reconnect

#[tokio::test]
async fn several_urls_with_dead_ones_still_connect() {
    let server = NatsServer::start().await.unwrap();
    // The order is shuffled per attempt; with two dead URLs out of three
    // the live one is reached in any order.
    let urls = vec![dead_url(), dead_url(), server.url()];
    let client = within(LIMIT, connect(&settings(urls, NatsAuth::None)))
        .await
        .expect("connects");
    jetstream_works(&client, "URLS").await;

    let text = refused(&settings(vec![dead_url(), dead_url()], NatsAuth::None)).await;
    assert!(
        text.contains("connecting to NATS at nats://127.0.0.1:"),
        "{text}"
    );
}

#[tokio::test]
async fn the_same_client_publishes_again_after_the_server_restarts() {
    // Authenticated, so that the restart also proves that `-c` is kept.
    let server_config = format!(r#"authorization {{ token: "{TOKEN}" }}"#);
    let mut server = NatsServer::start_with_config(&server_config).await.unwrap();
    let auth = NatsAuth::Token(Secret::new(TOKEN));
    let client = within(LIMIT, connect(&settings(vec![server.url()], auth)))
        .await
        .expect("connects");
    jetstream_works(&client, "RECONNECT").await;
    let js = jetstream::new(client.clone());

    server.kill().unwrap();
    eventually(LIMIT, "the client notices", || {
        client.connection_state() != async_nats::connection::State::Connected
    })
    .await;
    server.restart().await.unwrap();

    within(LIMIT, async {
        loop {
            let publish = PublishMessage::build()
                .payload("again".into())
                .message_id("again-1");
            let attempt = tokio::time::timeout(Duration::from_secs(2), async {
                js.send_publish("RECONNECT.y", publish).await?.await
            });
            match attempt.await {
                Ok(Ok(_)) => break,
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    })
    .await;
    let mut stream = js.get_stream("RECONNECT").await.unwrap();
    assert_eq!(stream.info().await.unwrap().state.messages, 2);
    assert_eq!(
        client.connection_state(),
        async_nats::connection::State::Connected
    );
    let connects = client
        .statistics()
        .connects
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(connects >= 2, "connects: {connects}");
}

// ------------------------------------------------------ least privilege

const BUCKET: &str = "invalog_checkpoints";

/// The permissions docs/nats-connection.md recommends, verbatim.
fn least_privilege_config() -> String {
    format!(
        r#"authorization {{
  users = [
    {{ user: admin, password: "admin-pw" }}
    {{ user: publisher, password: "publisher-pw", permissions: {{
        publish: {{ allow: ["invalog.>", "$JS.API.STREAM.INFO.INVALOG"] }}
        subscribe: {{ allow: ["_INBOX.>"] }}
    }} }}
    {{ user: agent-web-1, password: "agent-pw", permissions: {{
        publish: {{ allow: [
          "$JS.API.STREAM.INFO.INVALOG",
          "$JS.API.CONSUMER.CREATE.INVALOG",
          "$JS.API.CONSUMER.CREATE.INVALOG.>",
          "$JS.API.CONSUMER.MSG.NEXT.INVALOG.>",
          "$JS.API.CONSUMER.INFO.INVALOG.>",
          "$JS.API.CONSUMER.DELETE.INVALOG.>",
          "$JS.API.DIRECT.GET.INVALOG",
          "$JS.API.STREAM.INFO.KV_{BUCKET}",
          "$JS.API.DIRECT.GET.KV_{BUCKET}.$KV.{BUCKET}.web-1",
          "$KV.{BUCKET}.web-1",
        ] }}
        subscribe: {{ allow: ["_INBOX.>"] }}
    }} }}
  ]
}}"#
    )
}

#[tokio::test]
async fn least_privilege_publisher_and_agent() {
    use invalog::{KvStore, LogSettings, Node, NodeId, NodeSettings, Publisher};
    use invalog::{PublisherSettings, Registry};

    let mut server = NatsServer::start_with_config(&least_privilege_config())
        .await
        .unwrap();
    let (url, log_path) = (server.url(), server.log_path().to_owned());
    let as_user = |user: &str, password: &str| {
        let mut settings = settings(vec![url.clone()], user_password(user, password));
        settings.request_timeout = Duration::from_secs(2);
        settings
    };
    let js_of = |client: &async_nats::Client| {
        jetstream::context::ContextBuilder::new()
            .timeout(Duration::from_secs(2))
            .build(client.clone())
    };
    let log = LogSettings::default();
    let node_id = NodeId::new("web-1").unwrap();

    // An administrator provisions the stream and the checkpoint bucket.
    let admin = js_of(&connect(&as_user("admin", "admin-pw")).await.unwrap());
    invalog::provision(&admin, &log).await.expect("provisions");
    KvStore::open(&admin, BUCKET, 1, node_id.clone())
        .await
        .expect("creates the bucket");

    let publisher_js = js_of(
        &connect(&as_user("publisher", "publisher-pw"))
            .await
            .unwrap(),
    );
    let publisher = Publisher::new(
        publisher_js.clone(),
        log.clone(),
        PublisherSettings::new("least-privilege"),
        crate::support::defs(),
    );
    let first = publisher.refresh_ids("content", &[1, 2]).await.unwrap();

    let agent_js = js_of(&connect(&as_user("agent-web-1", "agent-pw")).await.unwrap());
    let store = KvStore::open(&agent_js, BUCKET, 1, node_id.clone())
        .await
        .expect("the agent opens the existing bucket");
    let content = Arc::new(crate::support::Recorder::default());
    let mut registry = Registry::new();
    registry
        .register_arc(crate::support::defs()[0].clone(), content.clone())
        .unwrap();
    let mut node_settings = NodeSettings::new(node_id.clone());
    node_settings.new_node = invalog::node::NewNodePolicy::ReplayAll;
    node_settings.flush_interval = Duration::from_millis(50);
    let node = Node::start(
        agent_js.clone(),
        log.clone(),
        node_settings,
        registry,
        store,
    )
    .await
    .expect("the agent starts its node");
    // A denied request shows up as a timeout; the server log says which.
    let violations = || {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        let denied = log.lines().filter(|l| l.contains("Violation"));
        denied.collect::<Vec<_>>().join("\n")
    };
    let explained = |what: &str| format!("{what}; violations:\n{}", violations());
    tokio::time::timeout(Duration::from_secs(20), node.ready())
        .await
        .unwrap_or_else(|_| panic!("{}", explained("not ready")))
        .expect("ready");
    let second = publisher.refresh_ids("content", &[3]).await.unwrap();
    tokio::time::timeout(
        Duration::from_secs(20),
        node.wait_applied(second.sequence().unwrap()),
    )
    .await
    .unwrap_or_else(|_| panic!("{}", explained("not applied")))
    .expect("applied");
    assert_eq!(
        content.calls(),
        vec![
            crate::support::Call::Ids(vec![1, 2]),
            crate::support::Call::Ids(vec![3])
        ]
    );

    // The server restarts: every client reconnects, and the agent's ordered
    // consumer is recreated (named, after deleting the old one).
    server.kill().unwrap();
    server.restart().await.unwrap();
    let third = within(LIMIT, async {
        loop {
            match publisher.refresh_ids("content", &[4]).await {
                Ok(receipt) => break receipt,
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    })
    .await;
    tokio::time::timeout(LIMIT, node.wait_applied(third.sequence().unwrap()))
        .await
        .unwrap_or_else(|_| panic!("{}", explained("not applied after a restart")))
        .expect("applied");
    assert_eq!(
        content.calls().last(),
        Some(&crate::support::Call::Ids(vec![4]))
    );
    assert_eq!(violations(), "", "no permission was missing");
    node.shutdown().await.expect("stores its checkpoint");
    let bucket = admin.get_key_value(BUCKET).await.unwrap();
    let stored = bucket
        .entry("web-1")
        .await
        .unwrap()
        .expect("checkpoint stored");
    assert!(stored.revision >= 1);
    assert!(second.sequence() > first.sequence());

    // And nothing more: the agent cannot publish, the publisher cannot read
    // the log (its stream info, for tokens, is all it may ask).
    // A denied request gets no answer, so these wait for a short timeout.
    let (mut agent_js, mut publisher_js) = (agent_js, publisher_js);
    agent_js.set_timeout(Duration::from_millis(500));
    publisher_js.set_timeout(Duration::from_millis(500));
    let denied = agent_js.publish("invalog.content", "x".into()).await;
    assert!(
        denied.is_err() || denied.unwrap().await.is_err(),
        "the agent published"
    );
    assert!(
        publisher_js.get_stream("INVALOG").await.is_ok(),
        "the publisher reads the stream's info for its tokens"
    );
    let consumer = publisher_js
        .get_stream_no_info("INVALOG")
        .await
        .unwrap()
        .create_consumer(jetstream::consumer::pull::OrderedConfig::default())
        .await;
    assert!(consumer.is_err(), "the publisher read the log");
    let other_key = agent_js.get_key_value(BUCKET).await.unwrap();
    assert!(
        other_key.put("web-2", "x".into()).await.is_err(),
        "the agent wrote another node's checkpoint"
    );
}

// ------------------------------------------------------------------- logging

/// Collects everything a `tracing` subscriber writes.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Capture {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

// Single-threaded, so that the thread-local subscriber sees the client's
// background tasks too.
#[tokio::test(flavor = "current_thread")]
async fn tracing_during_failed_authentication_shows_no_secret() {
    let capture = Capture::default();
    let writer = capture.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .finish();
    let capturing = tracing::Dispatch::new(subscriber);
    // With a single registered dispatcher tracing-core takes it for the
    // global one and caches callsite interest from whichever thread hits a
    // callsite first: another test's thread, without a subscriber, would
    // switch async-nats's events off for us. A second dispatcher makes it
    // ask every registered one.
    let _second = tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default());
    let _guard = tracing::dispatcher::set_default(&capturing);

    let user = NKey::new(PREFIX_USER);
    let stranger = NKey::new(PREFIX_USER);
    let users = format!(
        r#"authorization {{ users = [ {{ user: "alice", password: "{PASSWORD}" }}, {{ nkey: "{}" }} ] }}"#,
        user.public()
    );
    let server = NatsServer::start_with_config(&users).await.unwrap();
    let token_server =
        NatsServer::start_with_config(&format!(r#"authorization {{ token: "{TOKEN}" }}"#))
            .await
            .unwrap();
    let port = server.port();
    let failures = [
        settings(vec![server.url()], user_password("alice", WRONG_PASSWORD)),
        settings(
            vec![format!("nats://alice:{WRONG_PASSWORD}@127.0.0.1:{port}")],
            NatsAuth::None,
        ),
        settings(
            vec![server.url()],
            NatsAuth::NkeySeed(Secret::new(stranger.seed())),
        ),
        settings(
            vec![token_server.url()],
            NatsAuth::Token(Secret::new(WRONG_TOKEN)),
        ),
    ];
    for failing in &failures {
        tracing::debug!(settings = ?failing, "trying");
        let err = connect(failing).await.expect_err("refused");
        tracing::error!(error = %err, "refused");
    }
    // A successful connection logs its CONNECT (at trace) too.
    let good = settings(vec![server.url()], user_password("alice", PASSWORD));
    let client = connect(&good).await.expect("connects");
    client.flush().await.unwrap();
    drop(client);

    let text = capture.text();
    assert!(text.contains("authorization violation"), "{text}");
    assert!(text.contains("write operation: CONNECT"), "{text}");
    assert_hides(
        &text,
        &[
            PASSWORD,
            WRONG_PASSWORD,
            WRONG_TOKEN,
            TOKEN,
            &stranger.seed(),
        ],
    );
}

// ------------------------------------------------- nkeys, JWTs, creds files

const PREFIX_SEED: u8 = 18 << 3;
const PREFIX_OPERATOR: u8 = 14 << 3;
const PREFIX_ACCOUNT: u8 = 0;
const PREFIX_USER: u8 = 20 << 3;

/// An ed25519 nkey of one kind (operator, account or user).
struct NKey {
    pair: KeyPair,
    prefix: u8,
}

impl NKey {
    fn new(prefix: u8) -> NKey {
        let pair = KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        NKey { pair, prefix }
    }

    /// `O…`, `A…` or `U…`.
    fn public(&self) -> String {
        nkey_encode(&[self.prefix], self.pair.public_key_raw())
    }

    /// `SO…`, `SA…` or `SU…`. ring writes ed25519 keys as PKCS#8 v2: a
    /// SEQUENCE header, version 1, the ed25519 OID and the 32-byte seed in
    /// an OCTET STRING in an OCTET STRING (16 bytes in all), then the public key.
    fn seed(&self) -> String {
        const AFTER_SEQUENCE: [u8; 14] = [
            0x02, 0x01, 0x01, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
        ];
        let der = self.pair.serialized_der();
        assert_eq!(der[0], 0x30, "PKCS#8 is a SEQUENCE");
        assert_eq!(der[2..16], AFTER_SEQUENCE, "unexpected PKCS#8 layout");
        let prefix = [PREFIX_SEED | self.prefix >> 5, (self.prefix & 31) << 3];
        nkey_encode(&prefix, &der[16..48])
    }

    fn sign(&self, message: &[u8]) -> Vec<u8> {
        self.pair.sign(message).unwrap()
    }
}

fn nkey_encode(prefix: &[u8], key: &[u8]) -> String {
    let mut raw = [prefix, key].concat();
    let crc = crc16(&raw);
    raw.extend(crc.to_le_bytes());
    base32(&raw)
}

/// CRC-16/XMODEM, as nkeys use it.
fn crc16(data: &[u8]) -> u16 {
    let mut crc = 0u16;
    for byte in data {
        crc ^= u16::from(*byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// RFC 4648 base32 without padding.
fn base32(data: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    encode_bits(data, 5, ALPHABET)
}

/// RFC 4648 base64url without padding.
fn base64url(data: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    encode_bits(data, 6, ALPHABET)
}

fn encode_bits(data: &[u8], width: u32, alphabet: &[u8]) -> String {
    let (mut out, mut buffer, mut bits) = (String::new(), 0u32, 0u32);
    for byte in data {
        buffer = (buffer << 8) | u32::from(*byte);
        bits += 8;
        while bits >= width {
            bits -= width;
            out.push(alphabet[((buffer >> bits) & ((1 << width) - 1)) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(alphabet[((buffer << (width - bits)) & ((1 << width) - 1)) as usize] as char);
    }
    out
}

/// A NATS v2 JWT: `{sub, name, nats}` claims issued and signed by `issuer`.
fn jwt(issuer: &NKey, subject: &str, name: &str, nats: serde_json::Value) -> String {
    let header = base64url(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = json!({
        "jti": base32(&now.to_be_bytes()) + &subject[..8],
        "iat": now,
        "iss": issuer.public(),
        "name": name,
        "sub": subject,
        "nats": nats,
    });
    let signed = format!("{header}.{}", base64url(claims.to_string().as_bytes()));
    let signature = base64url(&issuer.sign(signed.as_bytes()));
    format!("{signed}.{signature}")
}

/// An operator with a system account and one JetStream-enabled account.
struct Operator {
    operator: NKey,
    system: NKey,
    account: NKey,
}

impl Operator {
    fn new() -> Operator {
        Operator {
            operator: NKey::new(PREFIX_OPERATOR),
            system: NKey::new(PREFIX_ACCOUNT),
            account: NKey::new(PREFIX_ACCOUNT),
        }
    }

    fn account_jwt(&self, account: &NKey, name: &str, jetstream: bool) -> String {
        let mut limits = json!({
            "subs": -1, "data": -1, "payload": -1,
            "imports": -1, "exports": -1, "wildcards": true, "conn": -1, "leaf": -1,
        });
        if jetstream {
            let js = json!({"mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1});
            limits
                .as_object_mut()
                .unwrap()
                .extend(js.as_object().unwrap().clone());
        }
        let nats = json!({"limits": limits, "type": "account", "version": 2});
        jwt(&self.operator, &account.public(), name, nats)
    }

    /// A user of `account`, signed by `account`.
    fn user_jwt(&self, account: &NKey, user: &NKey) -> String {
        let nats = json!({
            "pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1,
            "type": "user", "version": 2,
        });
        jwt(account, &user.public(), "invalog-user", nats)
    }

    fn server_config(&self) -> String {
        let operator_nats = json!({
            "system_account": self.system.public(),
            "type": "operator",
            "version": 2,
        });
        let operator_jwt = jwt(
            &self.operator,
            &self.operator.public(),
            "invalog-test",
            operator_nats,
        );
        format!(
            "operator: \"{operator_jwt}\"\nsystem_account: \"{sys}\"\nresolver: MEMORY\n\
             resolver_preload: {{\n  {sys}: \"{sys_jwt}\"\n  {acc}: \"{acc_jwt}\"\n}}\n",
            sys = self.system.public(),
            sys_jwt = self.account_jwt(&self.system, "SYS", false),
            acc = self.account.public(),
            acc_jwt = self.account_jwt(&self.account, "INVALOG", true),
        )
    }
}

fn creds_file(jwt: &str, user: &NKey) -> String {
    format!(
        "-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n\
         ************************* IMPORTANT *************************\n\
         NKEY Seed printed below can be used to sign and prove identity.\n\n\
         -----BEGIN USER NKEY SEED-----\n{}\n------END USER NKEY SEED------\n",
        user.seed()
    )
}

#[test]
fn encoders_match_known_vectors() {
    assert_eq!(base32(b"foobar"), "MZXW6YTBOI");
    assert_eq!(base64url(b"foob\xfb\xff"), "Zm9vYvv_");
    assert_eq!(crc16(b"123456789"), 0x31C3);
    let user = NKey::new(PREFIX_USER);
    assert!(user.public().starts_with('U') && user.public().len() == 56);
    assert!(user.seed().starts_with("SU") && user.seed().len() == 58);
    assert!(NKey::new(PREFIX_OPERATOR).public().starts_with('O'));
    assert!(NKey::new(PREFIX_ACCOUNT).seed().starts_with("SA"));
}

/// No server answering is worth retrying (the agent waits for it at start);
/// refused credentials are not.
#[tokio::test]
async fn unreachable_is_transient_and_refused_is_not() {
    let err = connect(&settings(vec![dead_url()], NatsAuth::None))
        .await
        .expect_err("nothing listens");
    assert!(err.is_transient(), "{err}");

    let config = format!(r#"authorization {{ token: "{TOKEN}" }}"#);
    let server = NatsServer::start_with_config(&config).await.unwrap();
    let wrong = settings(
        vec![server.url()],
        NatsAuth::Token(Secret::new(WRONG_TOKEN)),
    );
    let err = connect(&wrong).await.expect_err("refused");
    assert!(!err.is_transient(), "{err}");
}
