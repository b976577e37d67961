//! The soak on network-namespace hosts (`crate::netns`): the same canaries,
//! driver and report as the loopback soak, with every server, every agent
//! and the canary stream in a host of its own, so that the driver can also
//! partition a server from everyone (`FaultKind::Partition`) and heal it.
//! Needs root and `ip`; without them the test says why and passes.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use axum::{http::StatusCode, routing::post, Router};
use invalog::LogSettings;
use tokio::process::Child;
use tokio::sync::oneshot;

use super::canaries::{Canaries, Record};
use super::driver::{self, FaultKind, FaultWindow, Planned, Target};
use super::{report, EVERY, SETTLE};
use crate::agent_support::BIN;
use crate::netns::{Host, Net, NsCluster};
use crate::reliability::Rng;

/// The agent's HTTP port inside its host.
const HTTP_PORT: u16 = 9464;

/// An `invalog agent` in its host; its log appended to `<node>.log`.
struct NsAgent {
    host: Host,
    config: PathBuf,
    child: Child,
}

impl NsAgent {
    fn spawn(host: &Host, config: &Path) -> NsAgent {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(config.with_extension("log"))
            .unwrap();
        let child = host
            .command(BIN)
            .args(["agent", "--config"])
            .arg(config)
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("invalog agent starts");
        NsAgent {
            host: host.clone(),
            config: config.to_path_buf(),
            child,
        }
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.host.http_get(HTTP_PORT, "/readyz").await.map(|r| r.0) != Some(200) {
            assert!(
                Instant::now() < deadline,
                "{} not ready in 60 s",
                self.host.name()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn metric(&self, name: &str) -> Option<f64> {
        let (_, body) = self.host.http_get(HTTP_PORT, "/metrics").await?;
        body.lines().find_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            (key == name).then(|| value.parse().ok()).flatten()
        })
    }
}

/// Writes the agent configuration of `host` (every server, R3 stream and
/// presence, a webhook applier on a receiver inside the host).
fn agent_config(host: &Host, dir: &Path, urls: &[String]) -> PathBuf {
    let listener = host.listen(0);
    let port = listener.local_addr().unwrap().port();
    let app = Router::new().route("/invalidate", post(|| async { StatusCode::NO_CONTENT }));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let node = host.name();
    let urls: Vec<String> = urls.iter().map(|u| format!("\"{u}\"")).collect();
    let text = format!(
        "[node]\nid = \"{node}\"\nnew_node = \"replay_all\"\nflush_interval = \"100ms\"\n\n\
         [nats]\nurls = [{urls}]\n\n[stream]\nreplicas = 3\n\n[presence]\nreplicas = 3\n\n\
         [checkpoint]\nstore = \"file\"\npath = \"{checkpoint}\"\n\n\
         [http]\nlisten = \"127.0.0.1:{HTTP_PORT}\"\n\n\
         [logging]\nformat = \"json\"\nlevel = \"info\"\n\n\
         [[refreshers]]\nname = \"content\"\nid = \"00000000-0000-0000-0000-000000000001\"\n\n\
         [refreshers.applier]\nkind = \"webhook\"\nurl = \"http://127.0.0.1:{port}/invalidate\"\n",
        urls = urls.join(", "),
        checkpoint = dir.join(format!("{node}.checkpoint.json")).display(),
    );
    let config = dir.join(format!("{node}.toml"));
    std::fs::write(&config, text).unwrap();
    config
}

/// The fleet on namespace hosts.
struct NetFleet {
    net: Net,
    cluster: NsCluster,
    servers: Vec<String>,
    agents: Vec<NsAgent>,
    /// The host the canaries and the driver's requests come from.
    probe: Host,
    log: LogSettings,
}

impl NetFleet {
    async fn inject_here(&mut self, planned: &Planned) -> FaultWindow {
        let start = Instant::now();
        match planned.kind {
            FaultKind::KillAgent(n) => {
                let agent = &mut self.agents[n];
                agent.child.start_kill().unwrap();
                agent.child.wait().await.unwrap();
                let (host, config) = (agent.host.clone(), agent.config.clone());
                tokio::time::sleep(planned.hold).await;
                self.agents[n] = NsAgent::spawn(&host, &config);
                self.agents[n].wait_ready().await;
            }
            FaultKind::KillServer(n) => {
                self.cluster.kill(n);
                tokio::time::sleep(planned.hold).await;
                self.cluster.restart(n).await;
                self.cluster.healthy_leader(&self.probe, &self.log).await;
            }
            FaultKind::LeaderStepdown => {
                let (urls, stream) = (self.cluster.urls(), self.log.stream.clone());
                let text = self
                    .probe
                    .run(move || async move {
                        let js = NsCluster::js(urls).await;
                        let subject = format!("$JS.API.STREAM.LEADER.STEPDOWN.{stream}");
                        let answer = js.client().request(subject, "".into()).await;
                        answer.map(|a| String::from_utf8_lossy(&a.payload).into_owned())
                    })
                    .await
                    .expect("the stepdown request is answered");
                assert!(text.contains("\"success\":true"), "stepdown: {text}");
                self.cluster.healthy_leader(&self.probe, &self.log).await;
            }
            FaultKind::Partition(n) => {
                self.net.isolate(&self.servers[n]);
                tokio::time::sleep(planned.hold).await;
                self.net.heal();
                self.cluster.healthy_leader(&self.probe, &self.log).await;
            }
        }
        FaultWindow {
            kind: planned.kind,
            start,
            healed: Instant::now(),
        }
    }
}

impl Target for NetFleet {
    fn inject(&mut self, planned: &Planned) -> impl std::future::Future<Output = FaultWindow> {
        self.inject_here(planned)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_with_partitions_on_namespace_hosts() {
    let chaos = super::chaos_time();
    let mut rng = Rng::from_time("soak (namespaces)");
    let names = [
        "s0", "s1", "s2", "web-0", "web-1", "web-2", "web-3", "probe",
    ];
    let net = match Net::new(&names) {
        Ok(net) => net,
        Err(why) => {
            eprintln!("soak (namespaces): skipped: {why}");
            return;
        }
    };
    let servers: Vec<String> = names[..3].iter().map(|s| s.to_string()).collect();
    let nodes: Vec<String> = names[3..7].iter().map(|s| s.to_string()).collect();
    let server_hosts: Vec<&Host> = names[..3].iter().map(|n| net.host(n)).collect();
    let cluster = NsCluster::start(&server_hosts).await;
    let probe = net.host("probe").clone();
    let log = LogSettings {
        replicas: 3,
        ..LogSettings::default()
    };
    cluster.provision(&probe, &log).await;
    let dir = tempfile::tempdir().unwrap();
    let urls = cluster.urls();
    let mut agents = Vec::new();
    for node in &nodes {
        let host = net.host(node);
        agents.push(NsAgent::spawn(host, &agent_config(host, dir.path(), &urls)));
    }
    for agent in &agents {
        agent.wait_ready().await;
    }
    let schedule = driver::plan(&mut rng, chaos, nodes.len(), servers.len(), |_| true);
    let version = std::process::Command::new(invalog_nats_server::find_binary().unwrap())
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    eprintln!(
        "soak (namespaces): {version}; {} faults planned for {chaos:?} of chaos, partitions included",
        schedule.len()
    );
    let mut fleet = NetFleet {
        net,
        cluster,
        servers,
        agents,
        probe: probe.clone(),
        log: log.clone(),
    };
    // The canaries live on a runtime inside the probe host, until told to
    // stop; then they drain and hand over what they recorded.
    let (stop, stopped) = oneshot::channel::<()>();
    let (canary_urls, canary_log, canary_nodes) = (urls.clone(), log.clone(), nodes.clone());
    let recorded = probe.run(move || async move {
        let mut canaries = Canaries::start(&canary_urls, &canary_log, EVERY, &canary_nodes).await;
        let _ = stopped.await;
        canaries.stop_publishing().await;
        let drain = Instant::now();
        while canaries.unanswered() > 0 && drain.elapsed() < Duration::from_secs(60) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        canaries.finish()
    });
    let started = Instant::now();
    let (sampler, load) = super::sample_load();
    let windows = driver::run(&mut fleet, &schedule, started + chaos).await;
    tokio::time::sleep(SETTLE + Duration::from_secs(5)).await;
    let _ = stop.send(());
    let (record, copies): (Record, u64) = recorded.await;
    sampler.abort();
    let load = load.lock().unwrap().clone();
    eprintln!(
        "soak (namespaces): 1-min load sampled every 10 s: min {:.2}, mean {:.2}, max {:.2}",
        load.iter().copied().fold(f64::INFINITY, f64::min),
        load.iter().sum::<f64>() / load.len().max(1) as f64,
        load.iter().copied().fold(0.0, f64::max)
    );
    let mut applied_through = Vec::new();
    for agent in &fleet.agents {
        let applied = agent.metric("invalog_applied_sequence").await;
        let skips = agent
            .metric("invalog_cold_boots_total")
            .await
            .unwrap_or(1.0)
            + agent.metric("invalog_gaps_total").await.unwrap_or(1.0);
        applied_through.push(applied.filter(|_| skips == 0.0).map(|a| a as u64));
    }
    for w in &windows {
        eprintln!(
            "soak (namespaces): window {:>7.1}–{:>7.1} s {}",
            report::offset(started, w.start),
            report::offset(started, w.healed),
            w.kind.label()
        );
    }
    let report = report::build(&record, &nodes, &applied_through, &windows, SETTLE);
    eprintln!(
        "soak (namespaces): {} faults; settle {SETTLE:?}; answer copies {copies}; applied through {applied_through:?}\n{}",
        windows.len(),
        report::render(&report)
    );
    // Every round of the schedule has each kind once: four faults or more
    // include a partition.
    assert!(
        windows.len() < 4
            || windows
                .iter()
                .any(|w| matches!(w.kind, FaultKind::Partition(_))),
        "a partition was injected"
    );
    assert_eq!(record.strangers, 0, "answers only from the fleet's nodes");
    assert_eq!(report.never(), 0, "canaries some node never applied");
    assert!(report.answers_lost() <= report.acknowledged / 1000);
}
