//! Where a node may answer a canary. A canary names its reply subject, and
//! anyone who may publish to the log may write a canary, so a node answers
//! only within the probe's own reply namespace: the subject
//! `_INVALOG.probe.<run id>` of the canary's own run, where the run id is a
//! token (1 to 64 letters, digits, `_` or `-`). Anything else — a `$`
//! subject such as a KV key, the log's own subjects, a wildcard, another
//! client's inbox — is refused, and a node answers at most
//! [`MAX_CANARIES_PER_MESSAGE`] canaries of one message. The least-privilege
//! NATS permissions (deploy/nats/least-privilege.conf) grant nodes publish
//! rights on `_INVALOG.probe.*` only, for the same reason.

use super::Canary;

/// The namespace of probe replies: a run's answers go to `<this>.<run id>`.
pub const REPLY_PREFIX: &str = "_INVALOG.probe";

/// How many canaries of one message a node answers; the rest are refused
/// and counted. `invalog probe` sends one canary per message.
pub const MAX_CANARIES_PER_MESSAGE: usize = 16;

/// Why a node refuses to answer a canary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReplyRefused {
    /// The run id is not a subject-safe token.
    #[error("its probe run id is not 1 to 64 letters, digits, `_` or `-`")]
    BadRunId,
    /// The reply subject is not the run's own reply subject.
    #[error("its reply subject is not `{REPLY_PREFIX}.<its run id>`")]
    OutsideNamespace,
    /// The reply subject is one of the log's own subjects.
    #[error("its reply subject is inside the log's subjects")]
    InsideLog,
    /// The message holds more than [`MAX_CANARIES_PER_MESSAGE`] canaries.
    #[error("the message holds more than {MAX_CANARIES_PER_MESSAGE} canaries")]
    OverCap,
}

/// The reply subject of probe run `run_id`, or `None` if the id is not a
/// token.
pub fn reply_subject(run_id: &str) -> Option<String> {
    crate::model::check_token("probe run id", run_id).ok()?;
    Some(format!("{REPLY_PREFIX}.{run_id}"))
}

/// The subject a node may answer `canary` on, for a log whose subjects are
/// `<log_prefix>.>`: the canary's reply subject if it is exactly its run's
/// own reply subject and outside the log.
pub fn check_reply<'a>(canary: &'a Canary, log_prefix: &str) -> Result<&'a str, ReplyRefused> {
    let expected = reply_subject(&canary.probe).ok_or(ReplyRefused::BadRunId)?;
    if canary.reply != expected {
        return Err(ReplyRefused::OutsideNamespace);
    }
    let inside_log = canary
        .reply
        .strip_prefix(log_prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'));
    if inside_log {
        return Err(ReplyRefused::InsideLog);
    }
    Ok(&canary.reply)
}

/// A refused subject as it may appear in a log line: its first token if
/// that is short and made of `A-Z a-z 0-9 _ - $`, then `.…` and its length
/// in bytes. Never the whole subject (it is publisher-controlled text: no
/// control characters, nothing long, nothing that could be a secret).
pub fn redact_subject(subject: &str) -> String {
    let first = subject.split('.').next().unwrap_or_default();
    let safe = !first.is_empty()
        && first.len() <= 16
        && first
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'$'));
    let shown = if safe { first } else { "?" };
    format!("{shown}.… ({} bytes)", subject.len())
}

#[cfg(test)]
mod tests;
