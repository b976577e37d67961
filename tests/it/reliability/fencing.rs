//! Fencing through the real agent: cut off from NATS for longer than
//! `node.fence.max_disconnected`, `/readyz` answers 503 (the node keeps
//! its caches but says they may be stale); after NATS is back, the agent
//! catches up what was published and answers 200 again.

use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::agent_support::{free_port, publish_each, webhook, Agent, AgentConfig, Hook};
use crate::support::{within, Fixture};

async fn readyz(agent: &Agent) -> (u16, String) {
    agent.get("/readyz").await.unwrap_or((0, String::new()))
}

async fn wait_readyz(
    agent: &Agent,
    limit: Duration,
    what: &str,
    want: impl Fn(u16, &str) -> bool,
) -> (Duration, String) {
    let start = Instant::now();
    loop {
        let (code, body) = readyz(agent).await;
        if want(code, &body) {
            return (start.elapsed(), body);
        }
        assert!(
            start.elapsed() < limit,
            "{what}: not within {limit:?}; last answer {code} {body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_cut_off_longer_than_its_limit_is_unready_then_recovers() {
    let mut f = Fixture::new().await;
    let first = publish_each(&f, 20).await;
    let (hook, hook_port) = Hook::start(Duration::ZERO).await;
    let http_port = free_port();
    let config = AgentConfig {
        dir: f.dir.path(),
        urls: vec![f.server.url()],
        node: "fenced",
        http_port,
        applier: webhook(hook_port),
        node_extra: "",
        tables_extra: "[node.fence]\nmax_disconnected = \"2s\"",
    }
    .write();
    let mut agent = Agent::spawn_with_stderr(&config, http_port, Stdio::null());
    wait_readyz(
        &agent,
        Duration::from_secs(30),
        "ready after catch-up",
        |code, _| code == 200,
    )
    .await;
    assert_eq!(hook.max_sequence(), first);

    f.server.kill().unwrap();
    let cut = Instant::now();
    // Still ready before the limit (a blip is not a fence) ...
    let (code, body) = readyz(&agent).await;
    assert_eq!(code, 200, "ready right after the cut: {body}");
    // ... and unready once it is over.
    let (after, body) = wait_readyz(&agent, Duration::from_secs(20), "fenced", |code, body| {
        code == 503 && body.contains("fenced")
    })
    .await;
    let fenced_after = cut.elapsed();
    // The limit counts from the node's last contact with the stream, which
    // it refreshes at least every second, so the fence can come up to 1 s
    // earlier than the limit measured from the cut.
    assert!(
        fenced_after >= Duration::from_secs(1),
        "fenced only after the limit: {fenced_after:?}"
    );
    eprintln!("fencing: unready {fenced_after:?} after the cut (limit 2 s; seen {after:?} into polling): {body}");
    assert_eq!(agent.metric("invalog_ready").await, Some(0.0));
    let (code, _) = agent.get("/healthz").await.expect("HTTP still served");
    assert_eq!(code, 200, "alive, only unready");

    f.server.restart().await.unwrap();
    let back = Instant::now();
    // Publish after the restart (the publisher's client reconnects too).
    let p = f.publisher();
    within(Duration::from_secs(30), async {
        while p.refresh_ids("content", &[1000]).await.is_err() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let mut last = 0;
    for i in 1..30 {
        last = p
            .refresh_ids("content", &[1000 + i])
            .await
            .unwrap()
            .sequence()
            .unwrap();
    }
    let (code, _) = agent
        .get(&format!("/applied?seq={last}&timeout=30s"))
        .await
        .expect("HTTP answers");
    assert_eq!(code, 200, "caught up after reconnecting");
    let (ready_again, _) =
        wait_readyz(&agent, Duration::from_secs(30), "ready again", |code, _| {
            code == 200
        })
        .await;
    eprintln!(
        "fencing: ready again {:?} after the server came back ({ready_again:?} after catching up)",
        back.elapsed()
    );
    assert_eq!(
        hook.sequences(),
        (1..=last).collect::<Vec<_>>(),
        "every message applied once, in order"
    );
    agent.terminate();
    assert_eq!(agent.exit_code().await, 0);
}
