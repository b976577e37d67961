//! Sending: messages go out pipelined and their acknowledgements are
//! awaited together, each for at most `ack_timeout`; a retryable failure
//! (timeout, no stream, "duplicate in process") sends the message again with
//! the same batch id after a growing pause; a message that a retried one
//! overtook is published again so the last copy of each stands in order.

use std::collections::HashMap;
use std::time::Duration;

use async_nats::jetstream::{self, context::PublishErrorKind as NatsKind, message::PublishMessage};
use async_nats::Subject;
use bytes::Bytes;
use uuid::Uuid;

use super::{PublishError, PublishErrorKind, PublishedMessage, Publisher, Receipt};
use crate::model::{Batch, RefresherName};
use crate::wire;

impl Publisher {
    /// Sends messages pipelined, then awaits every acknowledgement; a message
    /// whose acknowledgement failed in a retryable way is sent again with the
    /// same batch id.
    pub(super) async fn send(&self, batches: Vec<Batch>) -> Result<Receipt, PublishError> {
        let mut encoded = Vec::with_capacity(batches.len());
        for batch in batches {
            self.encode_within_limit(batch, &mut encoded)?;
        }
        let mut receipt = Receipt::default();
        let mut in_flight = Vec::with_capacity(encoded.len());
        // One subject per refresher, shared by its messages (a clone is a
        // reference count, not a new string).
        let mut subjects: Vec<(&RefresherName, Subject)> = Vec::new();
        for (batch, body) in &encoded {
            let name = &batch.refresher.name;
            let subject = match subjects.iter().find(|(n, _)| *n == name) {
                Some((_, subject)) => subject.clone(),
                None => {
                    let subject = Subject::from(self.inner.log.subject(name));
                    subjects.push((name, subject.clone()));
                    subject
                }
            };
            in_flight.push(self.send_one(subject, batch, body).await);
        }
        for ((batch, body), first) in encoded.iter().zip(in_flight) {
            let first = match first {
                Ok(ack) => self.await_ack(ack).await,
                Err(e) => Err(e),
            };
            match self.retry(batch, body, first).await {
                Ok(message) => receipt.messages.push(message),
                Err(mut error) => {
                    error.published = receipt.messages;
                    return Err(error);
                }
            }
        }
        self.restore_order(&encoded, &mut receipt).await?;
        Ok(receipt)
    }

    /// Awaits one acknowledgement for at most `ack_timeout`.
    async fn await_ack(
        &self,
        ack: jetstream::context::PublishAckFuture,
    ) -> Result<jetstream::publish::PublishAck, (bool, PublishError)> {
        match tokio::time::timeout(self.inner.settings.ack_timeout, ack).await {
            // nats-server 2.10 answers a resend whose first copy a clustered
            // stream is still storing with `duplicate` and sequence 0 (2.11+
            // answer error 10158): ask again until the real sequence comes.
            Ok(Ok(ack)) if ack.sequence == 0 => Err((
                true,
                PublishError::new(
                    PublishErrorKind::TimedOut,
                    "acknowledged as a duplicate without its sequence: the first copy is still being stored",
                ),
            )),
            Ok(result) => result.map_err(nats_error),
            Err(_) => Err((
                true,
                PublishError::new(
                    PublishErrorKind::TimedOut,
                    format!(
                        "no acknowledgement within {:?}",
                        self.inner.settings.ack_timeout
                    ),
                ),
            )),
        }
    }

    /// Sends a message again (same batch id) while its acknowledgement fails
    /// in a retryable way, up to `attempts` in all, pausing between attempts.
    async fn retry(
        &self,
        batch: &Batch,
        body: &Bytes,
        first: Result<jetstream::publish::PublishAck, (bool, PublishError)>,
    ) -> Result<PublishedMessage, PublishError> {
        let mut outcome = first;
        let mut attempt = 1;
        // Once an attempt timed out, the message may be stored even if a
        // later attempt fails otherwise: the error must say so.
        let mut maybe_stored = false;
        while let Err((retryable, error)) = &outcome {
            maybe_stored |= error.kind == PublishErrorKind::TimedOut;
            if !retryable || attempt >= self.inner.settings.attempts {
                break;
            }
            attempt += 1;
            let pause = RETRY_BACKOFF
                .saturating_mul(1 << (attempt - 2).min(6))
                .min(MAX_RETRY_BACKOFF);
            tracing::warn!(batch = %batch.id, attempt, error = %error, ?pause, "publish not acknowledged; sending again with the same batch id");
            tokio::time::sleep(pause).await;
            outcome = match self.send_one(self.subject_of(batch), batch, body).await {
                Ok(ack) => self.await_ack(ack).await,
                Err(e) => Err(e),
            };
        }
        match outcome {
            Ok(ack) => Ok(PublishedMessage {
                batch_id: batch.id,
                refresher: batch.refresher.name.clone(),
                sequence: ack.sequence,
                duplicate: ack.duplicate,
            }),
            Err((_, mut error)) => {
                error.message = format!(
                    "publishing batch {} to `{}`: {}",
                    batch.id, batch.refresher.name, error.message
                );
                if maybe_stored {
                    error.kind = PublishErrorKind::TimedOut;
                    error.message.push_str(
                        " (an earlier attempt timed out, so the message may have been stored)",
                    );
                }
                Err(error)
            }
        }
    }

    /// A message sent again after a timeout can be stored after later
    /// messages of the same refresher. Those later messages are published
    /// once more (new batch ids), so that the last copy of each stands in
    /// publish order; applying one twice is harmless (refreshers are
    /// idempotent), applying "refresh 7" before "remove 7" is not.
    async fn restore_order(
        &self,
        encoded: &[(Batch, Bytes)],
        receipt: &mut Receipt,
    ) -> Result<(), PublishError> {
        // Stored in strictly increasing order overall: no message overtook
        // another, so none of a refresher did either (the common case).
        if receipt
            .messages
            .windows(2)
            .all(|pair| pair[0].sequence < pair[1].sequence)
        {
            return Ok(());
        }
        let mut highest: HashMap<RefresherName, u64> = HashMap::new();
        for (index, (batch, _)) in encoded.iter().enumerate() {
            let name = &batch.refresher.name;
            let before = highest.get(name).copied().unwrap_or(0);
            if receipt.messages[index].sequence < before {
                let again = Batch {
                    id: Uuid::now_v7(),
                    ..batch.clone()
                };
                let body = Bytes::from(wire::encode(&again));
                tracing::warn!(batch = %batch.id, again = %again.id, "a retried message overtook this one; publishing it again to keep the order");
                let first = match self.send_one(self.subject_of(&again), &again, &body).await {
                    Ok(ack) => self.await_ack(ack).await,
                    Err(e) => Err(e),
                };
                receipt.messages[index] = self.retry(&again, &body, first).await?;
            }
            highest.insert(name.clone(), before.max(receipt.messages[index].sequence));
        }
        Ok(())
    }

    fn subject_of(&self, batch: &Batch) -> Subject {
        Subject::from(self.inner.log.subject(&batch.refresher.name))
    }

    async fn send_one(
        &self,
        subject: Subject,
        batch: &Batch,
        body: &Bytes,
    ) -> Result<jetstream::context::PublishAckFuture, (bool, PublishError)> {
        let mut id = Uuid::encode_buffer();
        let message = PublishMessage::build()
            .payload(body.clone())
            .message_id(batch.id.hyphenated().encode_lower(&mut id));
        match tokio::time::timeout(
            self.inner.settings.ack_timeout,
            self.inner.js.send_publish(subject, message),
        )
        .await
        {
            Ok(result) => result.map_err(nats_error),
            Err(_) => Err((
                true,
                PublishError::new(PublishErrorKind::TimedOut, "timed out sending"),
            )),
        }
    }
}

/// First pause between two attempts at one message; it doubles up to
/// [`MAX_RETRY_BACKOFF`] (a leader election takes seconds).
const RETRY_BACKOFF: Duration = Duration::from_millis(50);
const MAX_RETRY_BACKOFF: Duration = Duration::from_secs(2);

/// JetStream's "duplicate message id is in process": an earlier attempt is
/// being stored; asking again returns its acknowledgement.
const DUPLICATE_IN_PROCESS: usize = 10158;

fn nats_error(e: jetstream::context::PublishError) -> (bool, PublishError) {
    let in_process = std::error::Error::source(&e)
        .and_then(|s| s.downcast_ref::<jetstream::Error>())
        .is_some_and(|j| j.code() == DUPLICATE_IN_PROCESS);
    let (retryable, kind) = match e.kind() {
        NatsKind::TimedOut | NatsKind::BrokenPipe | NatsKind::MaxAckPending => {
            (true, PublishErrorKind::TimedOut)
        }
        NatsKind::StreamNotFound => (true, PublishErrorKind::StreamNotFound),
        _ if in_process => (true, PublishErrorKind::TimedOut),
        _ => (false, PublishErrorKind::Rejected),
    };
    (retryable, PublishError::new(kind, e.to_string()))
}
