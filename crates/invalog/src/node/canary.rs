//! The node's one built-in refresher, `_probe` ([`crate::model::PROBE_REFRESHER`]): it answers the
//! canaries of `invalog probe` (see `crate::probe`). The node applies a
//! `_probe` message in stream order like any other — the apply loop looks
//! it up among the node's built-in refreshers ([`builtins`]) after the
//! app's — and this refresher answers each canary in it with a core NATS
//! message, but only on the canary's own run's reply subject
//! (`crate::probe::check_reply`), and at most `MAX_CANARIES_PER_MESSAGE`
//! per message. Refused canaries are counted (`probe_canaries_refused`)
//! and logged once per message, with the subject redacted.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use async_trait::async_trait;

use super::status::Stats;
use super::Shared;
use crate::model::{probe_refresher, Instruction, NodeId};
use crate::probe::{self, ProbeReply, ReplyRefused, MAX_CANARIES_PER_MESSAGE};
use crate::refresher::{BatchContext, RefreshResult, Refresher, Registry};

/// The refreshers every node hosts besides the app's: the canary responder.
pub(super) fn builtins(
    client: async_nats::Client,
    node: NodeId,
    subject_prefix: String,
    shared: Arc<Shared>,
) -> Registry {
    let responder = CanaryResponder {
        client,
        node,
        subject_prefix,
        shared,
    };
    let mut registry = Registry::new();
    registry
        .register(probe_refresher(), responder)
        .expect("an empty registry takes one refresher");
    registry
}

/// Answers the canaries of `_probe` messages.
struct CanaryResponder {
    client: async_nats::Client,
    node: NodeId,
    subject_prefix: String,
    shared: Arc<Shared>,
}

#[async_trait]
impl Refresher for CanaryResponder {
    /// A canary asks nothing to be dropped: a full refresh (a cold boot)
    /// has nothing to do.
    async fn refresh_all(&self) -> RefreshResult {
        Ok(())
    }

    /// Answers the canaries of one `_probe` message; never fails (an
    /// answer that cannot be sent is a canary the probe reports missing).
    async fn apply(&self, context: BatchContext<'_>) -> RefreshResult {
        let stats = &self.shared.stats;
        Stats::bump(&stats.probe_messages);
        let sequence = context.sequence;
        let mut answered = 0;
        let mut refused = 0u64;
        let mut first_refusal: Option<(ReplyRefused, String)> = None;
        for instruction in &context.batch.instructions {
            let Instruction::RefreshJson(json) = instruction else {
                continue;
            };
            let Some(canary) = probe::parse_canary(json) else {
                continue;
            };
            let subject = if answered == MAX_CANARIES_PER_MESSAGE {
                Err(ReplyRefused::OverCap)
            } else {
                probe::check_reply(&canary, &self.subject_prefix)
            };
            let subject = match subject {
                Ok(subject) => subject.to_owned(),
                Err(why) => {
                    refused += 1;
                    first_refusal.get_or_insert_with(|| (why, canary.reply.clone()));
                    continue;
                }
            };
            answered += 1;
            let reply = probe::encode_probe_reply(&ProbeReply {
                probe: canary.probe,
                canary: canary.canary,
                node: self.node.to_string(),
                sequence,
            });
            if let Err(error) = self.client.publish(subject, reply.into()).await {
                tracing::debug!(node = %self.node, %error, "cannot answer a probe canary");
            }
        }
        if let Some((why, subject)) = first_refusal {
            stats.probe_canaries_refused.fetch_add(refused, Relaxed);
            tracing::warn!(
                node = %self.node, sequence, refused, answered,
                first_reply = %probe::redact_subject(&subject), reason = %why,
                "probe canaries not answered: a node answers only on `{}.<run id>` of the canary's own run, at most {} per message",
                probe::REPLY_PREFIX, MAX_CANARIES_PER_MESSAGE
            );
        }
        Ok(())
    }
}
