//! Reading the stream without a consumer. When a consumer creation failed
//! or has been pending for a second (`open`), or a consumer has delivered
//! nothing for a second while messages wait (`check`), the node reads what
//! waits one message at a time with JetStream's direct get (any replica
//! answers; the stream is provisioned with `allow_direct`) and applies it
//! through the same path as consumer deliveries. This keeps a node applying
//! while no consumer can be placed: in a cluster, a server that died
//! without saying goodbye still counts as a peer for about 90 s, and an R1
//! ordered consumer placed on it is never answered (its creation times
//! out) — a third of the time in a three-server cluster.

use std::time::{Duration, Instant};

use async_nats::jetstream::stream::DirectGetErrorKind;

use super::run::{Flow, Runner, Stored};
use super::status::Stats;

/// How long one direct read may go on before the node tries a consumer
/// again (a consumer is much faster for a long catch-up).
const DIRECT_READ_LIMIT: Duration = Duration::from_secs(2);

/// How long one direct get may take. Any replica answers at once; a request
/// the server drops (no permission for the subject) is only noticed by
/// this timeout, and must not hold up a consumer creation for long.
const DIRECT_GET_TIMEOUT: Duration = Duration::from_secs(1);

/// How long direct reads are not tried again after one failed (other than
/// "no such message"): no permission, `allow_direct` off, no responders.
const DIRECT_RETRY_AFTER: Duration = Duration::from_secs(30);

impl Runner {
    /// Applies the messages after `next`, read one by one, until none is
    /// left, a read fails, or [`DIRECT_READ_LIMIT`] has passed.
    pub(super) async fn read_direct(&mut self) -> Flow {
        if self
            .direct_failed_at
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
        let last_delivery = self.last_delivery;
        let started = Instant::now();
        let mut read = 0u64;
        while started.elapsed() < DIRECT_READ_LIMIT {
            if self.cancel.is_cancelled() {
                return Flow::Stop;
            }
            let get = stream.direct_get_next_for_subject(subjects.as_str(), Some(self.next));
            let message = match tokio::time::timeout(DIRECT_GET_TIMEOUT, get).await {
                Ok(Ok(message)) => message,
                Ok(Err(error)) if error.kind() == DirectGetErrorKind::NotFound => break,
                failed => {
                    let error = match failed {
                        Ok(Err(error)) => error.to_string(),
                        _ => format!("no answer within {DIRECT_GET_TIMEOUT:?}"),
                    };
                    tracing::warn!(
                        node = %self.settings.node_id, next = self.next, %error,
                        "cannot read the stream directly while no consumer can be used; \
                         trying again in {DIRECT_RETRY_AFTER:?} (the stream needs `allow_direct`, \
                         the NATS user `$JS.API.DIRECT.GET.{}`)",
                        self.log.stream
                    );
                    self.direct_failed_at = Some(Instant::now());
                    break;
                }
            };
            if message.sequence != self.next {
                // Only the next message is applied here. A later one means
                // a gap, or a replica missing messages: the stream check
                // (which asks the leader) and the consumer decide that.
                break;
            }
            read += 1;
            Stats::bump(&self.stats().direct_reads);
            let stored = Stored {
                sequence: message.sequence,
                subject: &message.subject,
                payload: &message.payload,
                published: message.time.into(),
            };
            let flow = self.on_stored(stored, 0).await;
            self.last_delivery = last_delivery;
            if !matches!(flow, Flow::Continue) {
                return flow;
            }
        }
        if read > 0 {
            tracing::info!(
                node = %self.settings.node_id, read, applied = self.next - 1,
                "read messages directly while the consumer could not be used"
            );
        }
        Flow::Continue
    }
}
