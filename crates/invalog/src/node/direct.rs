//! Reading the stream without a consumer. When a consumer creation failed
//! or has been pending for a second (`consume`), or a consumer has delivered
//! nothing for a second while messages wait (`check`), the node reads what
//! waits one message at a time with JetStream's direct get (any replica
//! answers; the stream is provisioned with `allow_direct`) and applies it
//! through the same path as consumer deliveries, each run of up to
//! [`DIRECT_RUN`] messages only after a stream check found the incarnation
//! followed still in place. This keeps a node applying
//! while no consumer can be placed: in a cluster, a server that died
//! without saying goodbye still counts as a peer for about 90 s, and an R1
//! consumer placed on it is never answered (its creation times
//! out) — a third of the time in a three-server cluster.

use std::time::{Duration, Instant};

use async_nats::jetstream::stream::DirectGetErrorKind;

use super::run::{Flow, Runner, Stored};
use super::status::Stats;

/// How long one direct read may go on before the node tries a consumer
/// again (a consumer is much faster for a long catch-up).
const DIRECT_READ_LIMIT: Duration = Duration::from_secs(2);

/// How many messages are read directly before the stream's identity is
/// checked again and they are applied (one stream-info request per run).
const DIRECT_RUN: usize = 64;

/// How long one direct get may take. Any replica answers at once; a request
/// the server drops (no permission for the subject) is only noticed by
/// this timeout, and must not hold up a consumer creation for long.
const DIRECT_GET_TIMEOUT: Duration = Duration::from_secs(1);

/// How long direct reads are not tried again after one failed (other than
/// "no such message"): no permission, `allow_direct` off, no responders.
const DIRECT_RETRY_AFTER: Duration = Duration::from_secs(30);

/// What direct reads remember between runs; only this file changes it.
#[derive(Debug, Default)]
pub(super) struct DirectReads {
    /// When a direct read last failed other than "no such message": such
    /// reads are not tried again for a while.
    failed_at: Option<Instant>,
}

impl Runner {
    /// Applies the messages after `next`, read one by one, until none is
    /// left, a read fails, or [`DIRECT_READ_LIMIT`] has passed.
    pub(super) async fn read_direct(&mut self) -> Flow {
        if self
            .direct
            .failed_at
            .is_some_and(|at| at.elapsed() < DIRECT_RETRY_AFTER)
        {
            return Flow::Continue;
        }
        let stream = match self.js.get_stream_no_info(&self.log.stream).await {
            Ok(stream) => stream,
            Err(error) => {
                tracing::debug!(node = %self.settings.node_id, %error, "cannot read the stream directly");
                return Flow::Continue;
            }
        };
        let subjects = self.log.all_subjects();
        // The consumer's quiet time goes on: a direct read is no delivery.
        let last_delivery = self.liveness.last_delivery();
        let started = Instant::now();
        let mut read = 0u64;
        let mut more = true;
        while more && started.elapsed() < DIRECT_READ_LIMIT {
            if self.cancel.is_cancelled() {
                return Flow::Stop;
            }
            // Read a run, then check the stream is still the incarnation
            // followed before applying any of it: a direct get reads
            // whatever stream has the name now.
            let mut run = Vec::new();
            while run.len() < DIRECT_RUN {
                let from = self.cursor.next() + run.len() as u64;
                let get = stream.direct_get_next_for_subject(subjects.as_str(), Some(from));
                let message = match tokio::time::timeout(DIRECT_GET_TIMEOUT, get).await {
                    Ok(Ok(message)) => message,
                    Ok(Err(error)) if error.kind() == DirectGetErrorKind::NotFound => {
                        more = false;
                        break;
                    }
                    failed => {
                        let error = match failed {
                            Ok(Err(error)) => error.to_string(),
                            _ => format!("no answer within {DIRECT_GET_TIMEOUT:?}"),
                        };
                        tracing::warn!(
                            node = %self.settings.node_id, next = from, %error,
                            "cannot read the stream directly while no consumer can be used; \
                             trying again in {DIRECT_RETRY_AFTER:?} (the stream needs `allow_direct`, \
                             the NATS user `$JS.API.DIRECT.GET.{}`)",
                            self.log.stream
                        );
                        self.direct.failed_at = Some(Instant::now());
                        more = false;
                        break;
                    }
                };
                if message.sequence != from {
                    // Only the very next message is applied here. A later
                    // one means a gap, or a replica missing messages: the
                    // stream check (which asks the leader) and the consumer
                    // decide that.
                    more = false;
                    break;
                }
                run.push(message);
            }
            if run.is_empty() {
                break;
            }
            if let Some(flow) = self.verify_incarnation().await {
                return flow;
            }
            for message in &run {
                read += 1;
                Stats::bump(&self.stats().direct_reads);
                let stored = Stored {
                    sequence: message.sequence,
                    subject: &message.subject,
                    payload: &message.payload,
                    published: message.time.into(),
                };
                let flow = self.on_stored(stored, 0).await;
                self.liveness.restore_delivery(last_delivery);
                if !matches!(flow, Flow::Continue) {
                    return flow;
                }
            }
        }
        if read > 0 {
            tracing::info!(
                node = %self.settings.node_id, read, applied = self.cursor.applied(),
                "read messages directly while the consumer could not be used"
            );
        }
        Flow::Continue
    }
}
