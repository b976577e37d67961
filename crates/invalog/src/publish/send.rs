//! Sending: messages go out pipelined and their acknowledgements are
//! awaited together, each for at most `ack_timeout` (less after a
//! reconnect, which loses acknowledgements); a retryable failure (timeout,
//! lost connection, no stream, "duplicate in process") sends the message again with
//! the same batch id after a growing pause; a message that a retried one
//! overtook is published again so the last copy of each stands in order.

use std::collections::HashMap;
use std::time::Duration;

use async_nats::jetstream::{self, context::PublishErrorKind as NatsKind, message::PublishMessage};
use async_nats::Subject;
use bytes::{Bytes, BytesMut};
use futures::FutureExt;
use uuid::Uuid;

use super::{PublishError, PublishErrorKind, PublishedMessage, Publisher, Receipt};
use crate::model::{Batch, RefresherName};
use crate::wire;

impl Publisher {
    /// Sends messages pipelined, then awaits every acknowledgement; a message
    /// whose acknowledgement failed in a retryable way is sent again with the
    /// same batch id. Every batch is encoded before the first is sent, so an
    /// instruction over the size limit publishes nothing.
    pub(super) async fn send(
        &self,
        batches: impl Iterator<Item = Batch>,
    ) -> Result<Receipt, PublishError> {
        let mut buffer = BytesMut::new();
        let mut encoded = Vec::with_capacity(batches.size_hint().0);
        for batch in batches {
            self.encode_within_limit(batch, &mut buffer, &mut encoded)?;
        }
        let mut subjects = Subjects::default();
        let mut in_flight = Vec::with_capacity(encoded.len());
        for (batch, body) in &encoded {
            let subject = subjects.of(self, batch);
            in_flight.push(self.send_one(subject, batch, body).await);
        }
        self.finish(encoded, in_flight, None).await
    }

    /// Awaits the acknowledgements of messages already sent (`in_flight`,
    /// one per `encoded`), sends again what failed in a retryable way, and
    /// restores the order when a retry overtook. With `failed`, an error
    /// that stopped sending, the messages sent are still awaited and listed
    /// as published in that error.
    pub(super) async fn finish(
        &self,
        encoded: Vec<(Batch, Bytes)>,
        in_flight: Vec<Result<InFlight, (bool, PublishError)>>,
        mut failed: Option<PublishError>,
    ) -> Result<Receipt, PublishError> {
        let mut receipt = Receipt::default();
        receipt.messages.reserve(encoded.len());
        for ((batch, body), first) in encoded.iter().zip(in_flight) {
            let first = match first {
                Ok(ack) => self.await_ack(ack).await,
                Err(e) => Err(e),
            };
            if failed.is_some() {
                // Sent before an earlier message failed: report what the
                // stream stored, so the caller keeps its tokens.
                if let Ok(ack) = first {
                    receipt.messages.push(published(batch, &ack));
                }
                continue;
            }
            let stored = match first {
                // The common case, without entering `retry`.
                Ok(ack) => Ok(published(batch, &ack)),
                Err(_) => self.retry(batch, body, first).await,
            };
            match stored {
                Ok(message) => receipt.messages.push(message),
                Err(error) => failed = Some(error),
            }
        }
        let outcome = match failed {
            Some(error) => Err(error),
            None => self.restore_order(&encoded, &mut receipt).await,
        };
        receipt.incarnation = self.incarnation_of(&receipt).await;
        match outcome {
            Ok(()) => Ok(receipt),
            Err(mut error) => {
                error.published = receipt.messages;
                error.incarnation = receipt.incarnation;
                Err(error)
            }
        }
    }

    /// Awaits one acknowledgement for at most `ack_timeout`, or until the
    /// client has reconnected since the message was sent: an acknowledgement
    /// addressed to the old connection never arrives, so the message is
    /// sent again at once instead of after `ack_timeout`.
    async fn await_ack(
        &self,
        in_flight: InFlight,
    ) -> Result<jetstream::publish::PublishAck, (bool, PublishError)> {
        let mut ack = std::future::IntoFuture::into_future(in_flight.ack);
        // Most acknowledgements are in by the time they are awaited: no
        // timer and no clock for those.
        let answer = match (&mut ack).now_or_never() {
            Some(answer) => answer,
            None => self.wait_for_ack(ack, in_flight.connects).await?,
        };
        match answer {
            // nats-server 2.10 answers a resend whose first copy a clustered
            // stream is still storing with `duplicate` and sequence 0 (2.11+
            // answer error 10158): ask again until the real sequence comes.
            Ok(ack) if ack.sequence == 0 => Err((
                true,
                PublishError::new(
                    PublishErrorKind::TimedOut,
                    "acknowledged as a duplicate without its sequence: the first copy is still being stored",
                ),
            )),
            result => result.map_err(nats_error),
        }
    }

    /// Waits for an acknowledgement that is not in yet, checking every
    /// [`RECONNECT_CHECK`] whether the client reconnected since `connects`.
    async fn wait_for_ack<F: std::future::Future + Unpin>(
        &self,
        mut ack: F,
        connects: u64,
    ) -> Result<F::Output, (bool, PublishError)> {
        let limit = self.inner.settings.ack_timeout;
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let slice = deadline.min(tokio::time::Instant::now() + RECONNECT_CHECK);
            match tokio::time::timeout_at(slice, &mut ack).await {
                Ok(answer) => return Ok(answer),
                Err(_) if self.connects() != connects => {
                    let lost =
                        "the connection to NATS was lost while waiting for the acknowledgement";
                    return Err((true, PublishError::new(PublishErrorKind::TimedOut, lost)));
                }
                Err(_) if slice >= deadline => {
                    let message = format!("no acknowledgement within {limit:?}");
                    return Err((true, PublishError::new(PublishErrorKind::TimedOut, message)));
                }
                Err(_) => {}
            }
        }
    }

    /// How many times the client has connected (grows on every reconnect).
    fn connects(&self) -> u64 {
        self.inner
            .connection
            .connects
            .load(std::sync::atomic::Ordering::Relaxed)
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
            tracing::warn!(batch = %batch.id, attempt, error = %error.chain(), ?pause, "publish not acknowledged; sending again with the same batch id");
            tokio::time::sleep(pause).await;
            outcome = match self.send_one(self.subject_of(batch), batch, body).await {
                Ok(ack) => self.await_ack(ack).await,
                Err(e) => Err(e),
            };
        }
        match outcome {
            Ok(ack) => Ok(published(batch, &ack)),
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

    pub(super) fn subject_of(&self, batch: &Batch) -> Subject {
        Subject::from(self.inner.log.subject(&batch.refresher.name))
    }

    pub(super) async fn send_one(
        &self,
        subject: Subject,
        batch: &Batch,
        body: &Bytes,
    ) -> Result<InFlight, (bool, PublishError)> {
        // Read before sending: a reconnect from here on may lose the message
        // or its acknowledgement.
        let connects = self.connects();
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
            Ok(result) => result
                .map(|ack| InFlight { ack, connects })
                .map_err(nats_error),
            Err(_) => Err((
                true,
                PublishError::new(PublishErrorKind::TimedOut, "timed out sending"),
            )),
        }
    }
}

/// One subject per refresher, shared by its messages (a clone is a
/// reference count, not a new string).
#[derive(Default)]
pub(super) struct Subjects(Vec<(RefresherName, Subject)>);

impl Subjects {
    pub(super) fn of(&mut self, publisher: &Publisher, batch: &Batch) -> Subject {
        let name = &batch.refresher.name;
        if let Some((_, subject)) = self.0.iter().find(|(n, _)| n == name) {
            return subject.clone();
        }
        let subject = publisher.subject_of(batch);
        self.0.push((name.clone(), subject.clone()));
        subject
    }
}

/// What the stream stored of `batch`, from its acknowledgement.
fn published(batch: &Batch, ack: &jetstream::publish::PublishAck) -> PublishedMessage {
    PublishedMessage {
        batch_id: batch.id,
        refresher: batch.refresher.name.clone(),
        sequence: ack.sequence,
        duplicate: ack.duplicate,
    }
}

/// A message sent and the client's connection count when it was sent.
pub(super) struct InFlight {
    ack: jetstream::context::PublishAckFuture,
    connects: u64,
}

/// How often an acknowledgement that is not in yet is checked against a
/// reconnect.
const RECONNECT_CHECK: Duration = Duration::from_millis(50);

/// First pause between two attempts at one message; it doubles up to
/// [`MAX_RETRY_BACKOFF`] (a leader election takes seconds).
const RETRY_BACKOFF: Duration = Duration::from_millis(50);
const MAX_RETRY_BACKOFF: Duration = Duration::from_secs(2);

/// JetStream's "duplicate message id is in process": an earlier attempt is
/// being stored; asking again returns its acknowledgement.
const DUPLICATE_IN_PROCESS: u64 = 10158;

fn nats_error(e: jetstream::context::PublishError) -> (bool, PublishError) {
    let in_process = std::error::Error::source(&e)
        .and_then(|s| s.downcast_ref::<jetstream::Error>())
        // `code()` is the status (409); the JetStream error code is `error_code()`.
        .is_some_and(|j| j.error_code().0 == DUPLICATE_IN_PROCESS);
    let (retryable, kind) = match e.kind() {
        NatsKind::TimedOut | NatsKind::BrokenPipe | NatsKind::MaxAckPending => {
            (true, PublishErrorKind::TimedOut)
        }
        NatsKind::StreamNotFound => (true, PublishErrorKind::StreamNotFound),
        _ if in_process => (true, PublishErrorKind::TimedOut),
        _ => (false, PublishErrorKind::Rejected),
    };
    let message = match kind {
        PublishErrorKind::StreamNotFound => "no stream answered for the subject",
        PublishErrorKind::Rejected => "JetStream refused the message",
        _ => "the message was not acknowledged",
    };
    (retryable, PublishError::new(kind, message).caused_by(e))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A publish answered with `body`, as async-nats reports it.
    fn answered(body: &str) -> jetstream::context::PublishError {
        let error: jetstream::Error = serde_json::from_str(body).unwrap();
        jetstream::context::PublishError::with_source(NatsKind::Other, error)
    }

    #[test]
    fn duplicate_in_process_is_retried_and_other_answers_are_not() {
        let in_process = answered(
            r#"{"code":409,"err_code":10158,"description":"duplicate message id is in process"}"#,
        );
        let (retryable, error) = nats_error(in_process);
        assert!(retryable, "{error}");
        assert_eq!(error.kind, PublishErrorKind::TimedOut);

        let refused = answered(
            r#"{"code":400,"err_code":10054,"description":"message size exceeds maximum allowed"}"#,
        );
        let (retryable, error) = nats_error(refused);
        assert!(!retryable, "{error}");
        assert_eq!(error.kind, PublishErrorKind::Rejected);

        let (retryable, _) = nats_error(jetstream::context::PublishError::new(NatsKind::TimedOut));
        assert!(retryable);
    }

    #[test]
    fn errors_keep_the_nats_error_as_their_source() {
        let refused = answered(
            r#"{"code":400,"err_code":10054,"description":"message size exceeds maximum allowed"}"#,
        );
        let (_, error) = nats_error(refused);
        let source = std::error::Error::source(&error).expect("the async-nats error is kept");
        let nats = source
            .downcast_ref::<jetstream::context::PublishError>()
            .expect("as its own type");
        assert_eq!(nats.kind(), NatsKind::Other);
        // The message does not repeat the source; the chain has both.
        assert_eq!(error.to_string(), "JetStream refused the message");
        assert!(error.chain().starts_with("JetStream refused the message: "));
        assert!(
            error
                .chain()
                .contains("message size exceeds maximum allowed"),
            "{}",
            error.chain()
        );
    }
}
