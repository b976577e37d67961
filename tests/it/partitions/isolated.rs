//! (c) An agent cut off from every server: `/readyz` stays 200 for a blip,
//! turns 503 `fenced` within `max_disconnected` (plus the node's 1 s
//! contact check), and after the heal the agent catches up and is ready.
//! (d) The stream leader and a publisher on one side of a partition, the
//! other two servers, the agent and a second publisher on the other: the
//! minority publisher (the library and `invalog publish`) gets errors and
//! never an acknowledgement, the majority carries on.

use std::time::{Duration, Instant};

use invalog::LogSettings;

use super::fleet::{NsAgent, NsPublisher, Record};
use super::{check_applied, cut_length, failed_but_stored, net_or_skip, FENCE};
use crate::agent_support::BIN;
use crate::netns::{Net, NsCluster};
use crate::reliability::time_until;

/// Ids of the minority publisher start here (the majority's start at 1).
const MINORITY_IDS: i64 = 1_000_000;

/// (c): returns when the agent was fenced, counted from the cut.
async fn cut_agent(net: &Net, agent: &NsAgent, publisher: &NsPublisher) -> Duration {
    let test = "partitions::isolated (c)";
    net.isolate(agent.host.name());
    let cut = Instant::now();
    let (code, body) = agent.readyz().await;
    assert_eq!(
        code, 200,
        "ready right after the cut (a blip is no fence): {body}"
    );
    let (_, body) = agent
        .wait_readyz(FENCE + Duration::from_secs(5), "fenced", |c, b| {
            c == 503 && b.contains("fenced")
        })
        .await;
    let fenced = cut.elapsed();
    // The limit counts from the last successful contact, refreshed every
    // second: fenced no earlier than limit - 1 s, no later than limit + 1 s
    // (+ 0.5 s for polling and a busy machine).
    assert!(
        fenced >= FENCE - Duration::from_secs(1) && fenced <= FENCE + Duration::from_millis(1500),
        "fenced {fenced:?} after the cut, limit {FENCE:?}: {body}"
    );
    let at_cut = publisher.acked();
    tokio::time::sleep(cut_length().saturating_sub(cut.elapsed())).await; // the fault's duration
    let during = publisher.acked() - at_cut;
    let applied_before = agent.hook.sequences().len();
    net.heal();
    let healed = Instant::now();
    let wanted = publisher.record();
    let (ready, _) = agent
        .wait_readyz(Duration::from_secs(60), "ready after the heal", |c, _| {
            c == 200
        })
        .await;
    check_applied(agent, &[&wanted], test).await;
    eprintln!(
        "{test}: fenced {fenced:?} after the cut (limit {FENCE:?}): {body}; {during} publishes \
         acknowledged during the {:?} cut ({applied_before} applied by then); ready {ready:?} \
         after the heal, every publish acknowledged before the heal applied {:?} after it",
        cut_length(),
        healed.elapsed()
    );
    fenced
}

/// `invalog publish` from `host` with a client configuration naming every
/// server; returns (exit code, stdout, stderr).
async fn cli_publish(
    net: &Net,
    host: &str,
    urls: &[String],
    dir: &std::path::Path,
) -> (i32, String, String) {
    let urls: Vec<String> = urls.iter().map(|u| format!("\"{u}\"")).collect();
    let config = dir.join(format!("{host}-client.toml"));
    let text = format!(
        "[nats]\nurls = [{}]\n\n[publisher]\norigin = \"cli-{host}\"\nack_timeout = \"500ms\"\nattempts = 4\n\n\
         [[refreshers]]\nname = \"content\"\nid = \"00000000-0000-0000-0000-000000000001\"\n",
        urls.join(", ")
    );
    std::fs::write(&config, text).unwrap();
    let run = net
        .host(host)
        .command(BIN)
        .args(["publish", "--config"])
        .arg(&config)
        .args(["content", "refresh-ids", &(MINORITY_IDS - 1).to_string()])
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("invalog publish ends")
        .unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).trim().to_owned();
    (
        out.status.code().unwrap_or(-1),
        text(&out.stdout),
        text(&out.stderr),
    )
}

/// (d): returns what the minority publisher saw.
async fn minority_publisher(
    net: &Net,
    cluster: &NsCluster,
    log: &LogSettings,
    dir: &std::path::Path,
) -> Record {
    let test = "partitions::isolated (d)";
    let leader = cluster.healthy_leader(net.host("p"), log).await;
    net.partition(&[&leader, "q"]);
    let cut = Instant::now();
    let minority = NsPublisher::start(
        net.host("q"),
        cluster.urls(),
        log,
        MINORITY_IDS,
        Duration::from_millis(500),
        4,
    );
    let (code, stdout, stderr) = cli_publish(net, "q", &cluster.urls(), dir).await;
    assert_ne!(
        code, 0,
        "invalog publish on the minority side must fail: {stdout} {stderr}"
    );
    assert!(stdout.is_empty(), "nothing reported as published: {stdout}");
    // Warnings of the retries come first; the error is the last line.
    let error = stderr.lines().last().unwrap_or_default().to_owned();
    assert!(error.starts_with("invalog: "), "a clear error: {stderr}");
    tokio::time::sleep(cut_length().saturating_sub(cut.elapsed())).await; // the fault's duration
                                                                          // Stopped before the heal: anything acknowledged was acknowledged by
                                                                          // the minority side.
    let record = minority.stop().await;
    net.heal();
    assert!(
        record.acks.is_empty(),
        "the minority side acknowledged {} publishes, first {:?}",
        record.acks.len(),
        record.acks.first().map(|a| (a.0, a.1))
    );
    assert!(!record.failures.is_empty(), "the minority publisher tried");
    eprintln!(
        "{test}: {leader} (the stream leader) and q cut off {:?}: q's library publisher got {} errors, \
         0 acknowledgements (first: {}); `invalog publish` exited {code}: {error}",
        cut.elapsed(),
        record.failures.len(),
        record.failures[0].2
    );
    record
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_off_agent_fences_and_a_minority_publisher_gets_no_acknowledgement() {
    let test = "partitions::isolated";
    let Some(net) = net_or_skip(test, &["s0", "s1", "s2", "a0", "p", "q"]) else {
        return;
    };
    let servers = ["s0", "s1", "s2"].map(|s| net.host(s));
    let cluster = NsCluster::start(&servers).await;
    let log = LogSettings {
        replicas: 3,
        ..LogSettings::default()
    };
    let p = net.host("p");
    cluster.provision(p, &log).await;
    let dir = tempfile::tempdir().unwrap();
    let agent = NsAgent::start(net.host("a0"), dir.path(), &cluster.urls(), FENCE);
    agent
        .wait_readyz(Duration::from_secs(60), "ready at start", |c, _| c == 200)
        .await;
    let publisher = NsPublisher::start(p, cluster.urls(), &log, 1, Duration::from_millis(500), 6);
    time_until(Duration::from_secs(60), "50 publishes acknowledged", || {
        publisher.acked() >= 50
    })
    .await;

    cut_agent(&net, &agent, &publisher).await;
    let minority = minority_publisher(&net, &cluster, &log, dir.path()).await;

    let at_heal = publisher.acked();
    time_until(
        Duration::from_secs(90),
        "20 publishes after the heal",
        || publisher.acked() >= at_heal + 20,
    )
    .await;
    let record = publisher.stop().await;
    let again = check_applied(&agent, &[&record], test).await;
    agent
        .wait_readyz(Duration::from_secs(60), "ready at the end", |c, _| c == 200)
        .await;
    eprintln!(
        "{test}: majority: {} acknowledged, 0 lost, {} failed ({} stored anyway); minority: \
         {} failed, {} stored anyway after the heal; applied again: {again}",
        record.acks.len(),
        record.failures.len(),
        failed_but_stored(&agent, &record),
        minority.failures.len(),
        failed_but_stored(&agent, &minority),
    );
}
