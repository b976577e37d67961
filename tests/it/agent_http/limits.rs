//! The agent's HTTP limits (`invalog_agent::server`) as attacks from raw
//! TCP clients on 127.0.0.1: a half-sent request neither delays the node's
//! start once NATS is back (real binary) nor holds the shutdown beyond the
//! grace; more idle connections than the cap queue a new `/healthz` only
//! until the header timeout closes them; an idle keep-alive connection is
//! closed after the same timeout.

use std::time::{Duration, Instant};

use invalog_agent::server::{HEADER_READ_TIMEOUT, MAX_CONNECTIONS, SHUTDOWN_GRACE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::kit::{start_node, Api};
use crate::agent_support::{agent_config, free_port, publish_each, webhook, Agent, Hook};
use crate::support::{within, Fixture, Recorder};

/// The request line and one header, without the blank line that ends them.
const HALF_SENT: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: x\r\n";

async fn connect(base: &str) -> TcpStream {
    TcpStream::connect(base.trim_start_matches("http://"))
        .await
        .expect("connects")
}

async fn half_sent(base: &str) -> TcpStream {
    let mut stream = connect(base).await;
    stream.write_all(HALF_SENT).await.unwrap();
    stream
}

/// A node and its API on 127.0.0.1:0 (keep all three while testing).
async fn served() -> (Fixture, std::sync::Arc<invalog::Node>, Api) {
    let f = Fixture::new().await;
    let node = start_node(
        &f,
        "web-1",
        std::sync::Arc::new(Recorder::default()),
        |_| {},
    )
    .await;
    let api = Api::serve(&f, &node).await;
    (f, node, api)
}

/// A keep-alive connection that was answered once (`/healthz`), now idle.
async fn answered_once(base: &str) -> TcpStream {
    let mut stream = connect(base).await;
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buffer = [0u8; 512];
    let n = within(Duration::from_secs(10), stream.read(&mut buffer))
        .await
        .unwrap();
    assert!(buffer[..n].starts_with(b"HTTP/1.1 200"));
    stream
}

/// Sends a whole `GET /healthz` that closes the connection; the answer.
async fn healthz_closing(stream: &mut TcpStream) -> String {
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

/// Waits until the server closes `stream` (end of file or reset).
async fn closed_by_server(stream: &mut TcpStream) {
    let mut buffer = [0u8; 256];
    loop {
        match stream.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

#[tokio::test]
async fn a_half_sent_request_does_not_delay_the_start_once_nats_is_back() {
    let mut f = Fixture::new().await;
    let last = publish_each(&f, 2).await;
    f.server.stop().await.expect("server stops");
    let (hook, hook_port) = Hook::start(Duration::ZERO).await;
    let http_port = free_port();
    let config = agent_config(&f, "held", http_port, &webhook(hook_port));
    let mut agent = Agent::spawn(&config, http_port);
    within(Duration::from_secs(30), async {
        while agent.get("/readyz").await.map(|(c, _)| c) != Some(503) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let mut held = half_sent(&agent.base).await;

    f.server.restart().await.expect("server starts again");
    // Before the limits, the starting server's graceful shutdown waited for
    // this connection, so the node never started while it stayed open.
    within(Duration::from_secs(30), async {
        while agent.get("/readyz").await.map(|(c, _)| c) != Some(200) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert_eq!(hook.max_sequence(), last);
    within(
        HEADER_READ_TIMEOUT + Duration::from_secs(5),
        closed_by_server(&mut held),
    )
    .await;
    agent.terminate();
    assert_eq!(agent.exit_code().await, 0);
}

#[tokio::test]
async fn shutdown_with_half_sent_and_idle_connections_ends_within_the_grace() {
    let (_f, _node, mut api) = served().await;
    let _half = half_sent(&api.base).await;
    // A keep-alive connection that was answered once and stays idle; its
    // answer also shows that the half-sent one was accepted before it.
    let _idle = answered_once(&api.base).await;

    let started = Instant::now();
    api.stop.take().unwrap().send(()).unwrap();
    let served = within(SHUTDOWN_GRACE + Duration::from_secs(10), &mut api.server).await;
    served.unwrap().unwrap();
    let took = started.elapsed();
    assert!(
        took < SHUTDOWN_GRACE + Duration::from_secs(2),
        "the shutdown took {took:?}"
    );
}

#[tokio::test]
async fn more_idle_connections_than_the_cap_queue_healthz_until_they_time_out() {
    let (_f, _node, api) = served().await;
    let mut idle = Vec::with_capacity(MAX_CONNECTIONS);
    for _ in 0..MAX_CONNECTIONS {
        idle.push(connect(&api.base).await);
    }
    let opened = Instant::now();
    let mut late = connect(&api.base).await;
    let answer = tokio::spawn(async move { healthz_closing(&mut late).await });

    // Over the cap, the new connection waits to be accepted ...
    let early = tokio::time::timeout(Duration::from_secs(1), async {
        while !answer.is_finished() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(early.is_err(), "answered while the cap was reached");
    // ... until the header timeout closes the idle ones.
    let answer = within(HEADER_READ_TIMEOUT + Duration::from_secs(10), answer)
        .await
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("ok"), "{answer}");
    assert!(opened.elapsed() >= HEADER_READ_TIMEOUT - Duration::from_millis(500));
    within(Duration::from_secs(5), closed_by_server(&mut idle[0])).await;
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_header_timeout() {
    let (_f, _node, api) = served().await;
    let mut idle = answered_once(&api.base).await;
    let answered = Instant::now();
    within(
        HEADER_READ_TIMEOUT + Duration::from_secs(5),
        closed_by_server(&mut idle),
    )
    .await;
    assert!(answered.elapsed() >= HEADER_READ_TIMEOUT - Duration::from_millis(500));
}
