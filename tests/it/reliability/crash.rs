//! Crash consistency of the real binary: `kill -9` of `invalog agent` at
//! random moments while it applies a backlog through a webhook.

use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::agent_support::{free_port, publish_pipelined, webhook, Agent, AgentConfig, Hook};
use crate::support::{eventually, Fixture};

use super::{check_in_order_nothing_lost, slow, Rng};

/// The stored sequence in the agent's checkpoint file (0 when none yet).
fn stored_sequence(path: &std::path::Path) -> u64 {
    match std::fs::read(path) {
        Ok(bytes) => {
            let json: serde_json::Value = serde_json::from_slice(&bytes)
                .unwrap_or_else(|e| panic!("checkpoint file is JSON (written atomically): {e}"));
            json["sequence"].as_u64().expect("a numeric `sequence`")
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => panic!("reading the checkpoint: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_moments_loses_nothing_and_never_stores_ahead() {
    let (backlog, kills) = if slow() { (100_000, 40) } else { (20_000, 20) };
    let mut rng = Rng::from_time("crash");
    let f = Fixture::new().await;
    let started = Instant::now();
    let last = publish_pipelined(&f, backlog).await;
    eprintln!(
        "crash: published {backlog} messages in {:?}",
        started.elapsed()
    );
    assert_eq!(last, backlog as u64);

    let (hook, hook_port) = Hook::start(Duration::ZERO).await;
    let http_port = free_port();
    let settings = AgentConfig {
        dir: f.dir.path(),
        urls: vec![f.server.url()],
        node: "crashy",
        http_port,
        applier: webhook(hook_port),
        node_extra: "",
        tables_extra: "",
    };
    let config = settings.write();
    let checkpoint = settings.checkpoint_path();

    // Progress between kills averages 3/4 of the backlog over all kills, so
    // the last kill still lands mid-backlog.
    let span = (backlog as u64 * 3 / 2 / kills).max(2);
    let mut stored_before = 0;
    let mut at_startup = 0;
    let applying = Instant::now();
    for k in 0..kills {
        let before = hook.max_sequence();
        let requests_before = hook.sequences().len();
        let mut agent = Agent::spawn_with_stderr(&config, http_port, Stdio::null());
        if k % 4 == 3 {
            // A random moment shortly after the start: often while the agent
            // connects, reads its checkpoint or starts its consumer.
            // Half of these within 40 ms of the spawn (usually before the
            // first request), half within 300 ms.
            let within_ms = if k % 8 == 3 { 40 } else { 300 };
            tokio::time::sleep(Duration::from_millis(rng.below(within_ms))).await;
        } else {
            let target = (before + 1 + rng.below(span)).min(last - 1);
            eventually(
                Duration::from_secs(60),
                &format!("kill {k}: the agent reaches sequence {target}"),
                || hook.max_sequence() >= target,
            )
            .await;
            // Plus a random jitter of up to 3 ms: anywhere between two
            // requests, inside one, or inside a checkpoint write.
            tokio::time::sleep(Duration::from_micros(rng.below(3000))).await;
        }
        agent.kill().await;
        let received = hook.max_sequence();
        if hook.sequences().len() == requests_before {
            at_startup += 1;
        }
        let stored = stored_sequence(&checkpoint);
        eprintln!("crash: kill {k}: received up to {received}, stored {stored}");
        assert!(
            stored <= received,
            "kill {k}: stored sequence {stored} is ahead of the highest applied {received}"
        );
        assert!(
            stored >= stored_before,
            "kill {k}: stored sequence went back from {stored_before} to {stored}"
        );
        stored_before = stored;
    }
    assert!(
        hook.max_sequence() < last,
        "every kill landed before the end of the backlog"
    );

    let mut agent = Agent::spawn_with_stderr(&config, http_port, Stdio::null());
    eventually(
        Duration::from_secs(if slow() { 600 } else { 120 }),
        "the whole backlog applied after the last restart",
        || hook.max_sequence() >= last,
    )
    .await;
    let elapsed = applying.elapsed();
    let (code, _) = agent.get("/readyz").await.expect("HTTP answers");
    assert_eq!(code, 200);
    agent.terminate();
    assert_eq!(agent.exit_code().await, 0);
    assert_eq!(
        stored_sequence(&checkpoint),
        last,
        "a clean stop stores the end"
    );

    let applied = hook.sequences();
    let again = check_in_order_nothing_lost(&applied, 1..=last);
    // Each crash re-applies what came after the last store (about one
    // flush interval's worth), not the whole backlog again.
    assert!(
        again <= backlog as usize / 2,
        "{again} re-applications for a backlog of {backlog}: the stored sequence lags far behind"
    );
    eprintln!(
        "crash: backlog {backlog}, {kills} kills ({at_startup} before the first request), \
         {} requests, {again} applied twice, {:?} from the first start to the end",
        applied.len(),
        elapsed
    );
}

/// While catching up a backlog the agent stores its sequence every
/// `flush_interval` (100 ms here), not only when the backlog runs dry: a
/// crash-looping agent must not start from the beginning again every time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_catching_up_stores_its_sequence_every_flush_interval() {
    let f = Fixture::new().await;
    let last = publish_pipelined(&f, 3000).await;
    // 1 ms per request: the backlog takes at least 3 s, 30 flush intervals.
    let (hook, hook_port) = Hook::start(Duration::from_millis(1)).await;
    let http_port = free_port();
    let settings = AgentConfig {
        dir: f.dir.path(),
        urls: vec![f.server.url()],
        node: "flushing",
        http_port,
        applier: webhook(hook_port),
        node_extra: "",
        tables_extra: "",
    };
    let config = settings.write();
    let mut agent = Agent::spawn_with_stderr(&config, http_port, Stdio::null());
    let checkpoint = settings.checkpoint_path();
    let mut stored_while_catching_up = 0;
    eventually(Duration::from_secs(60), "backlog applied", || {
        if hook.max_sequence() < last * 2 / 3 {
            stored_while_catching_up = stored_sequence(&checkpoint);
        }
        hook.max_sequence() >= last
    })
    .await;
    agent.kill().await;
    assert!(
        stored_while_catching_up >= last / 3,
        "after applying two thirds of the backlog ({} of {last}) the stored sequence was only {stored_while_catching_up}",
        last * 2 / 3
    );
}
