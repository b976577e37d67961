//! Answering the canaries of `invalog probe` (see `crate::probe`): every
//! node applies a `_probe` message in stream order like any other, and
//! answers each canary in it with a core NATS message — but only on the
//! canary's own run's reply subject (`crate::probe::check_reply`), and at
//! most `MAX_CANARIES_PER_MESSAGE` per message. Refused canaries are
//! counted (`probe_canaries_refused`) and logged once per message, with the
//! subject redacted.

use std::sync::atomic::Ordering::Relaxed;

use super::run::Runner;
use super::status::Stats;
use crate::model::{Batch, Instruction};
use crate::probe::{self, ReplyRefused, MAX_CANARIES_PER_MESSAGE};
use crate::wire;

impl Runner {
    /// Answers the canaries of one `_probe` message applied at `sequence`.
    pub(super) async fn answer_canaries(&self, sequence: u64, batch: &Batch) {
        Stats::bump(&self.stats().probe_messages);
        let mut answered = 0;
        let mut refused = 0u64;
        let mut first_refusal: Option<(ReplyRefused, String)> = None;
        for instruction in &batch.instructions {
            let Instruction::RefreshJson(json) = instruction else {
                continue;
            };
            let Some(canary) = wire::parse_canary(json) else {
                continue;
            };
            let subject = if answered == MAX_CANARIES_PER_MESSAGE {
                Err(ReplyRefused::OverCap)
            } else {
                probe::check_reply(&canary, &self.log.subject_prefix)
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
            let reply = wire::encode_probe_reply(&wire::ProbeReply {
                probe: canary.probe,
                canary: canary.canary,
                node: self.settings.node_id.to_string(),
                sequence,
            });
            if let Err(error) = self.js.client().publish(subject, reply.into()).await {
                tracing::debug!(node = %self.settings.node_id, %error, "cannot answer a probe canary");
            }
        }
        if let Some((why, subject)) = first_refusal {
            self.stats()
                .probe_canaries_refused
                .fetch_add(refused, Relaxed);
            tracing::warn!(
                node = %self.settings.node_id, sequence, refused, answered,
                first_reply = %probe::redact_subject(&subject), reason = %why,
                "probe canaries not answered: a node answers only on `{}.<run id>` of the canary's own run, at most {} per message",
                probe::REPLY_PREFIX, MAX_CANARIES_PER_MESSAGE
            );
        }
    }
}
