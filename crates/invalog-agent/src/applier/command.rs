//! The `command` applier: runs a program once per batch with the JSON body
//! of `body::encode_applier_body` on its standard input — or, with
//! `max_batches_per_request` above 1 while the node catches up, once per
//! group of consecutive batches with the body of
//! `body_group::encode_applier_group_body`. Exit status 0
//! means applied; any other status, a signal, or running longer than the
//! timeout (the program is then killed) is a failure the node retries and
//! escalates. The program's output is captured: its stderr's end goes into
//! the error message (control characters escaped, see [`invalog::printable`]),
//! both go to the debug log on success.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::{ChildStdin, Command};

use super::body::{encode_applier_body, encode_refresh_all_body, ApplierTrigger};
use super::body_group::encode_applier_group_body;
use super::{check_timeout, ApplierError, CommandSettings};
use invalog::model::RefresherDef;
use invalog::refresher::{BatchContext, RefreshError, RefreshResult, Refresher};

/// Most bytes of each output stream kept (the end of it).
const KEPT_OUTPUT_BYTES: usize = 2048;

/// How long output is still read after the program exited (a process it
/// left behind may hold its stdout open).
const OUTPUT_GRACE: Duration = Duration::from_millis(500);

/// Prefix of the agent's own environment variables, which may hold secrets:
/// they are removed from the program's environment.
const OWN_ENV_PREFIX: &str = "INVALOG_";

/// A `command` applier. See the module docs.
pub struct CommandApplier {
    def: RefresherDef,
    program: PathBuf,
    args: Vec<String>,
    timeout: Duration,
    max_batches: usize,
}

impl CommandApplier {
    /// Validates the settings (the program is not run yet).
    pub fn new(def: &RefresherDef, settings: &CommandSettings) -> Result<Self, ApplierError> {
        if settings.program.as_os_str().is_empty() {
            return Err(ApplierError::invalid(def, "program", "must not be empty"));
        }
        check_timeout(def, settings.timeout)?;
        if settings.max_batches_per_request == 0 {
            return Err(ApplierError::invalid(
                def,
                "max_batches_per_request",
                "must be at least 1 (1 runs the program once per batch)",
            ));
        }
        Ok(Self {
            def: def.clone(),
            program: settings.program.clone(),
            args: settings.args.clone(),
            timeout: settings.timeout,
            max_batches: settings.max_batches_per_request,
        })
    }

    /// Runs the program once with `body` on stdin.
    async fn run(
        &self,
        body: Vec<u8>,
        trigger: ApplierTrigger,
        sequence: Option<u64>,
    ) -> RefreshResult {
        let mut command = Command::new(&self.program);
        command
            .args(&self.args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for name in own_env_names() {
            command.env_remove(name);
        }
        command
            .env("INVALOG_REFRESHER", self.def.name.as_str())
            .env("INVALOG_TRIGGER", trigger.as_str());
        if let Some(sequence) = sequence {
            command.env("INVALOG_SEQUENCE", sequence.to_string());
        }
        let mut child = command.spawn().map_err(|e| {
            let message = format!("{}: cannot start it: {e}", self.describe());
            match e.kind() {
                std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied => {
                    RefreshError::permanent(message)
                }
                _ => RefreshError::msg(message),
            }
        })?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let mut output =
            std::pin::pin!(async { tokio::join!(read_tail(stdout), read_tail(stderr)) });
        let mut captured = None;
        let waited = tokio::time::timeout(self.timeout, async {
            let mut exited = std::pin::pin!(async {
                let ((), status) = tokio::join!(write_stdin(stdin, body), child.wait());
                status
            });
            loop {
                tokio::select! {
                    status = &mut exited => return status,
                    out = &mut output, if captured.is_none() => captured = Some(out),
                }
            }
        })
        .await;
        let status = match waited {
            Ok(Ok(status)) => status,
            Ok(Err(e)) => {
                return Err(RefreshError::msg(format!(
                    "{}: cannot wait for it: {e}",
                    self.describe()
                )))
            }
            Err(_) => {
                // SIGKILL, then reap it so no zombie is left.
                let _ = child.kill().await;
                return Err(RefreshError::msg(format!(
                    "{}: timed out after {:?}; killed",
                    self.describe(),
                    self.timeout
                )));
            }
        };
        if captured.is_none() {
            captured = tokio::time::timeout(OUTPUT_GRACE, &mut output).await.ok();
        }
        let (stdout, stderr) = captured.unwrap_or_default();
        self.outcome(status, &stdout, &stderr)
    }

    fn outcome(&self, status: ExitStatus, stdout: &str, stderr: &str) -> RefreshResult {
        if status.success() {
            if !stdout.is_empty() || !stderr.is_empty() {
                tracing::debug!(refresher = %self.def.name, stdout, stderr, "command output");
            }
            return Ok(());
        }
        let stderr = stderr.trim();
        let quoted = if stderr.is_empty() {
            String::new()
        } else {
            // The error becomes the stalled reason shown by `/status`,
            // `invalog status` and logs: no terminal escapes, one line.
            format!("; stderr: {}", invalog::printable::printable(stderr))
        };
        Err(RefreshError::msg(format!(
            "{}: {status}{quoted}",
            self.describe()
        )))
    }

    /// The program and refresher, for messages (arguments are not shown:
    /// they may hold secrets).
    fn describe(&self) -> String {
        format!(
            "command `{}` of refresher `{}`",
            self.program.display(),
            self.def.name
        )
    }
}

#[async_trait]
impl Refresher for CommandApplier {
    async fn refresh_all(&self) -> RefreshResult {
        let body = encode_refresh_all_body(&self.def);
        self.run(body, ApplierTrigger::RefreshAll, None).await
    }

    async fn apply(&self, context: BatchContext<'_>) -> RefreshResult {
        let body = encode_applier_body(context);
        self.run(body, ApplierTrigger::Batch, Some(context.sequence))
            .await
    }

    fn max_group(&self) -> usize {
        self.max_batches
    }

    /// One run for the group; `INVALOG_SEQUENCE` is its last batch's.
    async fn apply_group(&self, group: &[BatchContext<'_>]) -> RefreshResult {
        match group {
            [] => Ok(()),
            [one] => self.apply(*one).await,
            [.., last] => {
                let body = encode_applier_group_body(group);
                self.run(body, ApplierTrigger::Batches, Some(last.sequence))
                    .await
            }
        }
    }
}

/// Writes the body and closes stdin. A program that exits without reading
/// it all is not an error here: its exit status decides.
async fn write_stdin(stdin: Option<ChildStdin>, body: Vec<u8>) {
    if let Some(mut stdin) = stdin {
        if let Err(e) = stdin.write_all(&body).await {
            tracing::debug!(error = %e, "command did not read all of its stdin");
        }
    }
}

/// Reads a stream to its end, keeping its last [`KEPT_OUTPUT_BYTES`].
async fn read_tail(stream: Option<impl AsyncRead + Unpin>) -> String {
    let Some(mut stream) = stream else {
        return String::new();
    };
    let mut kept = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        match stream.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                kept.extend_from_slice(&buffer[..n]);
                if kept.len() > KEPT_OUTPUT_BYTES {
                    kept.drain(..kept.len() - KEPT_OUTPUT_BYTES);
                }
            }
        }
    }
    String::from_utf8_lossy(&kept).into_owned()
}

/// Names of the agent's `INVALOG_*` variables (any case, as configuration
/// reads them), kept from the program.
fn own_env_names() -> Vec<OsString> {
    std::env::vars_os()
        .map(|(name, _)| name)
        .filter(|name| {
            name.to_string_lossy()
                .to_ascii_uppercase()
                .starts_with(OWN_ENV_PREFIX)
        })
        .collect()
}
