//! A JetStream cluster with each `nats-server` in its own test host:
//! [`NsCluster`]. Server `i` listens on its host's address, client port
//! 4222 and route port 6222, routes to every other server, and advertises
//! nothing (`no_advertise`): clients use only the URLs they were given.
//! Stream-level helpers (provision an R3 stream, find its leader) run from
//! a host of the caller's choosing, over that host's links.

use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use invalog::connect::{connect, NatsSettings};
use invalog::LogSettings;

use super::Host;

const CLIENT_PORT: u16 = 4222;
const ROUTE_PORT: u16 = 6222;

/// One server of an [`NsCluster`]; killed when dropped.
struct NsServer {
    host: Host,
    conf: std::path::PathBuf,
    log: std::path::PathBuf,
    child: Option<Child>,
}

/// Servers named after their hosts, cluster name `ivl`.
pub struct NsCluster {
    servers: Vec<NsServer>,
    binary: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl NsCluster {
    /// Starts one server in each of `hosts` and waits until each accepts
    /// TCP connections (JetStream may still be electing: see
    /// [`provision`](Self::provision)).
    pub async fn start(hosts: &[&Host]) -> NsCluster {
        let binary = tokio::task::spawn_blocking(invalog::embedded::find_binary)
            .await
            .unwrap()
            .expect("nats-server binary");
        let dir = tempfile::Builder::new()
            .prefix("ivl-nats-")
            .tempdir()
            .unwrap();
        let mut servers = Vec::new();
        for host in hosts {
            let routes: Vec<String> = hosts
                .iter()
                .filter(|h| h.name() != host.name())
                .map(|h| format!("\"nats://{}:{ROUTE_PORT}\"", h.addr()))
                .collect();
            let base = dir.path().join(host.name());
            std::fs::create_dir_all(&base).unwrap();
            let (conf, log) = (base.join("server.conf"), base.join("server.log"));
            let text = format!(
                "server_name: \"{name}\"\nlisten: \"{addr}:{CLIENT_PORT}\"\nlog_file: \"{log}\"\n\
                 jetstream {{ store_dir: \"{store}\" }}\n\
                 cluster {{\n  name: \"ivl\"\n  listen: \"{addr}:{ROUTE_PORT}\"\n  \
                 routes: [{routes}]\n  no_advertise: true\n}}\n",
                name = host.name(),
                addr = host.addr(),
                log = log.display(),
                store = base.join("store").display(),
                routes = routes.join(", "),
            );
            std::fs::write(&conf, text).unwrap();
            servers.push(NsServer {
                host: (*host).clone(),
                conf,
                log,
                child: None,
            });
        }
        let mut cluster = NsCluster {
            servers,
            binary,
            _dir: dir,
        };
        // One after the other, as `invalog::embedded::NatsCluster` does:
        // started at once, nats-server 2.10 sometimes never lets the third
        // server join the meta group (stream creation then keeps failing
        // with "no suitable peers for placement").
        for i in 0..cluster.servers.len() {
            cluster.launch(i);
            cluster.wait_accepting(i).await;
        }
        cluster
    }

    fn launch(&mut self, i: usize) {
        let server = &mut self.servers[i];
        let child = Command::new("ip")
            .args(["netns", "exec", server.host.ns()])
            .arg(&self.binary)
            .arg("-c")
            .arg(&server.conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server starts");
        server.child = Some(child);
    }

    async fn wait_accepting(&mut self, i: usize) {
        let start = Instant::now();
        let addr = SocketAddr::from((self.servers[i].host.addr(), CLIENT_PORT));
        loop {
            let host = self.servers[i].host.clone();
            let up = host.in_ns(|| TcpStream::connect_timeout(&addr, Duration::from_millis(250)));
            if up.is_ok() {
                return;
            }
            if let Some(Ok(Some(status))) = self.servers[i].child.as_mut().map(Child::try_wait) {
                panic!("{} exited ({status}):\n{}", host.name(), self.log_tail(i));
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "{} not accepting:\n{}",
                host.name(),
                self.log_tail(i)
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// `kill -9` of server `i` (a no-op when it is not running).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.servers[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills server `i` if running and starts it again with the same
    /// configuration and store; returns once it accepts connections.
    pub async fn restart(&mut self, i: usize) {
        self.kill(i);
        self.launch(i);
        self.wait_accepting(i).await;
    }

    /// The servers' names (their hosts' names), in order.
    pub fn names(&self) -> Vec<String> {
        self.servers
            .iter()
            .map(|s| s.host.name().to_owned())
            .collect()
    }

    /// Client URLs of all servers, in order.
    pub fn urls(&self) -> Vec<String> {
        self.servers
            .iter()
            .map(|s| format!("nats://{}:{CLIENT_PORT}", s.host.addr()))
            .collect()
    }

    /// The last 30 lines of server `i`'s log.
    pub fn log_tail(&self, i: usize) -> String {
        let text = std::fs::read_to_string(&self.servers[i].log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// A JetStream context on a new connection to `urls`, opened from the
    /// calling thread's namespace (call it inside [`Host::run`]).
    pub async fn js(urls: Vec<String>) -> jetstream::Context {
        let settings = NatsSettings {
            urls,
            connect_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(2),
            ..Default::default()
        };
        let client = connect(&settings).await.expect("connects");
        jetstream::context::ContextBuilder::new()
            .timeout(Duration::from_secs(2))
            .build(client)
    }

    /// Provisions `log` from `via`, retrying while JetStream elects its
    /// leaders (60 s at most; then fails with the last error and the
    /// servers' logs).
    pub async fn provision(&self, via: &Host, log: &LogSettings) {
        let (urls, log) = (self.urls(), log.clone());
        let outcome = via
            .run(move || async move {
                let js = Self::js(urls).await;
                let start = Instant::now();
                loop {
                    match invalog::provision(&js, &log).await {
                        Ok(_) => return Ok(()),
                        Err(e) if start.elapsed() > Duration::from_secs(60) => {
                            return Err(e.to_string())
                        }
                        Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                    }
                }
            })
            .await;
        if let Err(e) = outcome {
            let logs: Vec<String> = (0..self.servers.len())
                .map(|i| {
                    format!(
                        "--- {} ---\n{}",
                        self.servers[i].host.name(),
                        self.log_tail(i)
                    )
                })
                .collect();
            panic!("provisioning within 60 s: {e}\n{}", logs.join("\n"));
        }
    }

    /// The stream's leader (a host name) once every replica is current,
    /// asked from `via` (60 s at most).
    pub async fn healthy_leader(&self, via: &Host, log: &LogSettings) -> String {
        let (urls, stream, size) = (self.urls(), log.stream.clone(), self.servers.len());
        via.run(move || async move {
            let js = Self::js(urls).await;
            let start = Instant::now();
            loop {
                if let Ok(info) = js
                    .get_stream(&stream)
                    .await
                    .map(|s| s.cached_info().clone())
                {
                    if let Some(c) = info.cluster {
                        let current = c.replicas.len() == size - 1
                            && c.replicas.iter().all(|r| r.current && !r.offline);
                        if let (Some(leader), true) = (c.leader, current) {
                            return leader;
                        }
                    }
                }
                assert!(
                    start.elapsed() < Duration::from_secs(60),
                    "no healthy stream leader within 60 s"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await
    }
}

impl Drop for NsCluster {
    fn drop(&mut self) {
        for i in 0..self.servers.len() {
            self.kill(i);
        }
    }
}
