//! The chaos driver: a schedule of faults drawn from a seeded PRNG (the
//! same seed gives the same schedule), carried out one after the other
//! against a [`Fleet`] — a 3-server cluster and `invalog agent` processes —
//! each fault recorded as a [`FaultWindow`] from its start to the moment it
//! is healed (the process is back and ready, the stream has a leader with
//! every replica current).
//!
//! Fault kinds are a [`FaultKind`] enum; a partition is one more kind. The
//! loopback fleet cannot cut links (that needs the network-namespace hosts
//! of the partition tests), so [`Fleet::supports`] leaves it out of
//! schedules until such a fleet exists.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use invalog::LogSettings;
use invalog_nats_server::NatsCluster;

use crate::agent_support::Agent;
use crate::reliability::Rng;

/// One kind of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// `kill -9` of agent `n`, restarted after the hold.
    KillAgent(usize),
    /// `kill -9` of server `n`, restarted in place after the hold.
    KillServer(usize),
    /// `$JS.API.STREAM.LEADER.STEPDOWN.<stream>`: a forced leader election.
    LeaderStepdown,
    /// Server `n` cut off from the other servers and every client, healed
    /// after the hold (needs network-namespace hosts).
    Partition(usize),
}

impl FaultKind {
    /// A short label for the report.
    pub fn label(&self) -> String {
        match self {
            FaultKind::KillAgent(n) => format!("kill -9 agent web-{n}"),
            FaultKind::KillServer(n) => format!("kill -9 server {n}"),
            FaultKind::LeaderStepdown => "stream leader stepdown".into(),
            FaultKind::Partition(n) => format!("partition server {n}"),
        }
    }
}

/// One planned fault: quiet time before it, the fault, how long it holds.
#[derive(Debug, Clone, Copy)]
pub struct Planned {
    pub gap: Duration,
    pub kind: FaultKind,
    pub hold: Duration,
}

/// A fault as it happened: from the fault's start to its heal.
#[derive(Debug, Clone)]
pub struct FaultWindow {
    pub kind: FaultKind,
    pub start: Instant,
    pub healed: Instant,
}

fn between(rng: &mut Rng, low_ms: u64, high_ms: u64) -> Duration {
    Duration::from_millis(low_ms + rng.below(high_ms - low_ms + 1))
}

/// A schedule of at most `total` (gaps and holds; healing takes longer): quiet gaps of 8–20 s, each followed by
/// a fault (agents killed for 0.5–3 s, servers for 1–5 s, partitions for
/// 2–6 s; a stepdown holds nothing). Kinds come in rounds, each round every
/// kind `supports` accepts once in a random order, so even a short run sees
/// each kind.
pub fn plan(
    rng: &mut Rng,
    total: Duration,
    agents: usize,
    servers: usize,
    supports: impl Fn(FaultKind) -> bool,
) -> Vec<Planned> {
    let mut planned = Vec::new();
    let mut used = Duration::ZERO;
    let mut round: Vec<u64> = Vec::new();
    loop {
        if round.is_empty() {
            round = vec![0, 1, 2, 3];
            for i in (1..round.len()).rev() {
                round.swap(i, rng.below(i as u64 + 1) as usize);
            }
        }
        let gap = between(rng, 8_000, 20_000);
        let (kind, hold) = match round.pop().expect("refilled above") {
            0 => (
                FaultKind::KillAgent(rng.below(agents as u64) as usize),
                between(rng, 500, 3_000),
            ),
            1 => (
                FaultKind::KillServer(rng.below(servers as u64) as usize),
                between(rng, 1_000, 5_000),
            ),
            2 => (FaultKind::LeaderStepdown, Duration::ZERO),
            _ => (
                FaultKind::Partition(rng.below(servers as u64) as usize),
                between(rng, 2_000, 6_000),
            ),
        };
        if !supports(kind) {
            continue;
        }
        used += gap + hold;
        if used > total {
            return planned;
        }
        planned.push(Planned { gap, kind, hold });
    }
}

/// What the driver can fault: it injects a planned fault, holds it,
/// heals it, and returns its window.
pub trait Target {
    fn inject(&mut self, planned: &Planned) -> impl std::future::Future<Output = FaultWindow>;
}

/// Carries out `schedule` against `target` until `until` (a fault that
/// would not have ended its hold by then is left out), then waits for
/// `until`; returns the windows in order.
pub async fn run(
    target: &mut impl Target,
    schedule: &[Planned],
    until: Instant,
) -> Vec<FaultWindow> {
    let mut windows = Vec::with_capacity(schedule.len());
    for planned in schedule {
        if Instant::now() + planned.gap + planned.hold > until {
            break;
        }
        tokio::time::sleep(planned.gap).await;
        let window = target.inject(planned).await;
        eprintln!(
            "soak: {} held {:?}, healed after {:?}",
            planned.kind.label(),
            planned.hold,
            window.healed - window.start
        );
        windows.push(window);
    }
    tokio::time::sleep_until(until.into()).await;
    windows
}

/// The loopback fleet: a [`NatsCluster`] and agent processes.
pub struct Fleet {
    pub cluster: NatsCluster,
    pub js: jetstream::Context,
    pub log: LogSettings,
    pub agents: Vec<Agent>,
    /// Each agent's configuration file and HTTP port, to restart it.
    pub configs: Vec<(PathBuf, u16)>,
}

impl Target for Fleet {
    fn inject(&mut self, planned: &Planned) -> impl std::future::Future<Output = FaultWindow> {
        self.inject_here(planned)
    }
}

impl Fleet {
    /// Whether this fleet can inject `kind`: not partitions, on loopback.
    pub fn supports(kind: FaultKind) -> bool {
        !matches!(kind, FaultKind::Partition(_))
    }

    async fn inject_here(&mut self, planned: &Planned) -> FaultWindow {
        let start = Instant::now();
        match planned.kind {
            FaultKind::KillAgent(n) => {
                self.agents[n].kill().await;
                tokio::time::sleep(planned.hold).await;
                let (config, port) = &self.configs[n];
                self.agents[n] = spawn_agent(config, *port);
                wait_ready(&self.agents[n]).await;
            }
            FaultKind::KillServer(n) => {
                self.cluster.node(n).kill().unwrap();
                tokio::time::sleep(planned.hold).await;
                self.cluster.node(n).restart().await.unwrap();
                self.healthy_stream().await;
            }
            FaultKind::LeaderStepdown => {
                let subject = format!("$JS.API.STREAM.LEADER.STEPDOWN.{}", self.log.stream);
                let answer = self
                    .js
                    .client()
                    .request(subject, "".into())
                    .await
                    .expect("the stepdown request is answered");
                let text = String::from_utf8_lossy(&answer.payload);
                assert!(text.contains("\"success\":true"), "stepdown: {text}");
                self.healthy_stream().await;
            }
            FaultKind::Partition(_) => unreachable!("not in a loopback fleet's schedule"),
        }
        FaultWindow {
            kind: planned.kind,
            start,
            healed: Instant::now(),
        }
    }

    /// Waits (120 s at most) until the stream has a leader and every
    /// replica is current; fails showing the last stream state seen.
    pub async fn healthy_stream(&self) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let state = self.stream_state().await;
            if state.as_ref().is_ok_and(|healthy| *healthy) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the stream did not heal in 120 s; last seen: {state:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Whether the stream has a leader and every replica is current; the
    /// error or the cluster state when not.
    async fn stream_state(&self) -> Result<bool, String> {
        let mut stream = self
            .js
            .get_stream(&self.log.stream)
            .await
            .map_err(|e| e.to_string())?;
        let info = stream.info().await.map_err(|e| e.to_string())?;
        let cluster = info.cluster.clone().ok_or("no cluster information")?;
        let healthy = cluster.leader.is_some()
            && cluster.replicas.len() == self.cluster.size() - 1
            && cluster.replicas.iter().all(|r| r.current && !r.offline);
        if healthy {
            Ok(true)
        } else {
            Err(format!("{cluster:?}"))
        }
    }
}

/// Starts `invalog agent` with `config`, its log appended to `<node>.log`
/// beside the configuration (kept across restarts).
pub fn spawn_agent(config: &std::path::Path, port: u16) -> Agent {
    let log = config.with_extension("log");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    Agent::spawn_with_stderr(config, port, file.into())
}

/// Waits (60 s at most) until the agent's `/readyz` answers 200.
pub async fn wait_ready(agent: &Agent) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while agent.get("/readyz").await.map(|(code, _)| code) != Some(200) {
        assert!(
            Instant::now() < deadline,
            "agent at {} not ready in 60 s",
            agent.base
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
