//! (a) A follower server cut off from the other two, then (b) the stream
//! leader isolated, while a publisher publishes and two agents apply. After
//! each heal the publisher is acknowledged again; at the end every
//! acknowledged publish was applied by both agents, in order, and both are
//! ready. Then the old leader is killed and restarted: it rejoins and
//! every replica is current again.

use std::time::{Duration, Instant};

use invalog::LogSettings;

use super::fleet::{NsAgent, NsPublisher};
use super::{check_applied, cut_length, failed_but_stored, net_or_skip, FENCE};
use crate::netns::{Net, NsCluster};
use crate::reliability::time_until;

const SERVERS: [&str; 3] = ["s0", "s1", "s2"];

/// Isolates `server` for the cut length while `publisher` runs, sampling
/// each agent's `/readyz` every 100 ms meanwhile, and waits for every agent
/// to be ready after the heal; returns (acknowledged
/// during the cut, per agent: the server it was connected to and when it
/// first was unready, counted from the cut).
async fn cut_server(
    net: &Net,
    server: &str,
    publisher: &NsPublisher,
    agents: &[NsAgent],
    what: &str,
) -> (usize, Vec<(String, Option<Duration>)>) {
    let mut seen = Vec::new();
    // Whether each agent, unready during the cut, was ready again before
    // its end (its connection moved to a reachable server).
    let mut back = vec![None; agents.len()];
    for agent in agents {
        seen.push((agent.server().await, None));
    }
    let before = publisher.acked();
    let connected = publisher.record().server;
    net.isolate(server);
    let cut_at = Instant::now();
    // The fault's duration, spent sampling readiness.
    while cut_at.elapsed() < cut_length() {
        for (i, (agent, (_, unready))) in agents.iter().zip(seen.iter_mut()).enumerate() {
            let ready = agent.readyz().await.0 == 200;
            if unready.is_none() && !ready {
                *unready = Some(cut_at.elapsed());
            } else if unready.is_some() && back[i].is_none() && ready {
                back[i] = Some(cut_at.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let during = publisher.acked() - before;
    let moved = publisher
        .record()
        .switches
        .into_iter()
        .find(|(at, _)| *at > cut_at)
        .map(|(at, to)| format!("moved to {to} {:?} into the cut", at - cut_at))
        .unwrap_or_else(|| "stayed".into());
    net.heal();
    let healed = Instant::now();
    let at_heal = publisher.acked();
    time_until(
        Duration::from_secs(90),
        &format!("{what}: 20 publishes acknowledged after the heal"),
        || publisher.acked() >= at_heal + 20,
    )
    .await;
    let again = healed.elapsed();
    let mut ready = Vec::new();
    for agent in agents {
        agent
            .wait_readyz(Duration::from_secs(60), "ready after the heal", |c, _| {
                c == 200
            })
            .await;
        ready.push(healed.elapsed());
    }
    eprintln!(
        "partitions: {what}: {server} isolated {:?}: {during} publishes acknowledged meanwhile \
         (the publisher's connection went to {connected}, {moved}); 20 more within {again:?} of the heal; \
         agents (connected to, first unready): {seen:?}, ready again during the cut: {back:?}, \
         ready again {ready:?} after the heal",
        cut_length()
    );
    (during, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_off_server_and_an_isolated_leader_lose_no_acknowledged_publish() {
    let test = "partitions::servers";
    let Some(net) = net_or_skip(test, &["s0", "s1", "s2", "a0", "a1", "p"]) else {
        return;
    };
    let mut cluster = NsCluster::start(&SERVERS.map(|s| net.host(s))).await;
    let log = LogSettings {
        replicas: 3,
        ..LogSettings::default()
    };
    let p = net.host("p");
    cluster.provision(p, &log).await;
    let dir = tempfile::tempdir().unwrap();
    let agents: Vec<NsAgent> = ["a0", "a1"]
        .iter()
        .map(|a| NsAgent::start(net.host(a), dir.path(), &cluster.urls(), FENCE))
        .collect();
    for agent in &agents {
        agent
            .wait_readyz(Duration::from_secs(60), "ready at start", |c, _| c == 200)
            .await;
    }
    let publisher = NsPublisher::start(p, cluster.urls(), &log, 1, Duration::from_millis(500), 6);
    time_until(Duration::from_secs(60), "50 publishes acknowledged", || {
        publisher.acked() >= 50
    })
    .await;

    // (a) A follower cut off from the other two servers and every client;
    // not the publisher's server, so that publishing must carry on.
    let leader = cluster.healthy_leader(p, &log).await;
    let publishers_server = publisher.record().server;
    let follower = SERVERS
        .iter()
        .find(|s| **s != leader && **s != publishers_server)
        .unwrap();
    let (during, agents_seen) = cut_server(
        &net,
        follower,
        &publisher,
        &agents,
        "(a) a follower cut off",
    )
    .await;
    assert!(
        during > 0,
        "publishing through {publishers_server} carries on while {follower} is cut off"
    );
    // An agent on a server of the majority stays ready; one on the cut-off
    // server cannot reach the stream and fences itself.
    for (agent, (on, unready)) in agents.iter().zip(&agents_seen) {
        let name = agent.host.name();
        if on == follower {
            let after = unready.expect("an agent on the cut-off server goes unready");
            assert!(
                after <= FENCE + Duration::from_millis(1500),
                "{name} unready after {after:?}"
            );
        } else {
            assert_eq!(*unready, None, "{name}, connected to {on}, stays ready");
        }
    }

    // (b) The stream leader isolated: the other two elect a new one.
    let leader = cluster.healthy_leader(p, &log).await;
    cut_server(
        &net,
        &leader,
        &publisher,
        &agents,
        "(b) the stream leader isolated",
    )
    .await;
    let new_leader = cluster.healthy_leader(p, &log).await;
    eprintln!("partitions: (b) leader before the cut {leader}, after the heal {new_leader}");
    // The old leader, just back, crashes and restarts: it still rejoins.
    let index = cluster.names().iter().position(|n| *n == leader).unwrap();
    cluster.restart(index).await;
    let at_restart = publisher.acked();
    time_until(Duration::from_secs(90), "publishes after a restart", || {
        publisher.acked() >= at_restart + 20
    })
    .await;
    cluster.healthy_leader(p, &log).await;

    let record = publisher.stop().await;
    let mut again = Vec::new();
    for agent in &agents {
        again.push(check_applied(agent, &[&record], test).await);
        let (took, _) = agent
            .wait_readyz(Duration::from_secs(60), "ready after the heals", |c, _| {
                c == 200
            })
            .await;
        eprintln!(
            "{test}: {} ready ({took:?} after the check)",
            agent.host.name()
        );
    }
    eprintln!(
        "{test}: {} acknowledged, 0 lost; {} failed (not acknowledged), of which {} stored anyway; \
         applied again: {again:?}; first failure: {:?}",
        record.acks.len(),
        record.failures.len(),
        failed_but_stored(&agents[0], &record),
        record.failures.first().map(|f| &f.2)
    );
}
