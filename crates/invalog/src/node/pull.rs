//! The node's consumer: an ephemeral pull consumer (no acks, one replica
//! in memory, removed by the server once it is no longer asked) read
//! through a plain core subscription. The reader asks for batches itself —
//! [`BATCH`] messages or [`BATCH_BYTES`], whichever comes first — and asks
//! for the next while half of what is due is still to come, so the server
//! always has a request to fill (a stored message is delivered at once)
//! and at most two batches are in flight (memory stays flat however long
//! the backlog). It needs no permission beyond those of async-nats's
//! ordered pull consumer (consumer create, `MSG.NEXT`), and avoids what
//! made that one slow: async-nats's pull streams wrap every delivery in a
//! `jetstream::Message` that clones the whole JetStream context, and its
//! ordered consumer asks for at most 500 messages at a time. (The fastest
//! raw reader of BENCHMARKS.md figure 6, a push consumer the server may
//! fill without limit, stays about 1.4× faster: see "Issue 14 items 2
//! and 3".)
//!
//! What the ordered consumer did for the node, this module does: it
//! subscribes before anything is asked, and it ends the consumer
//! ([`Next::Restart`]) as soon as a delivery shows that one was lost (the
//! consumer sequence is not the next one). The runner creates the next
//! consumer at the next stream sequence it needs, and checks stream
//! sequences, stalls and reconnects itself (`consume`, `check`).

use std::time::{Duration, SystemTime};

use async_nats::jetstream::{self, consumer::pull, consumer::AckPolicy, consumer::DeliverPolicy};
use async_nats::{Message, StatusCode, Subject, Subscriber};
use futures::StreamExt;

/// Messages asked for at once.
const BATCH: u64 = 4096;

/// Bytes asked for at once (a batch ends at whichever limit comes first).
const BATCH_BYTES: u64 = 4 << 20;

/// How long the server keeps a request it cannot fill yet; a request that
/// expires is answered (408) and asked again.
const EXPIRES: Duration = Duration::from_secs(20);

/// How often the server says it is alive while a request waits.
const IDLE_HEARTBEAT: Duration = Duration::from_secs(5);

/// How long the server keeps the consumer once nobody asks it anything.
const INACTIVE_THRESHOLD: Duration = Duration::from_secs(60);

/// Headers of a request's end (408, 409): what it did not deliver.
const PENDING_MESSAGES: &str = "Nats-Pending-Messages";
const PENDING_BYTES: &str = "Nats-Pending-Bytes";

/// A pull consumer and the subscription its messages arrive on.
pub(super) struct PullReader {
    consumer: jetstream::consumer::Consumer<pull::Config>,
    subscriber: Subscriber,
    /// Where requests are answered, and what they ask.
    inbox: Subject,
    request: pull::BatchConfig,
    /// The last consumer sequence delivered (0: none yet).
    delivered: u64,
    /// Messages and bytes the outstanding requests may still deliver.
    due_messages: u64,
    due_bytes: u64,
}

/// A delivered message and what its reply subject says of it.
pub(super) struct Delivery {
    pub(super) message: Message,
    pub(super) stream_sequence: u64,
    pub(super) pending: u64,
    pub(super) published: SystemTime,
}

/// What reading the consumer gave.
#[allow(clippy::large_enum_variant)] // one per message: boxing would allocate each time
pub(super) enum Next {
    /// The next message, in order.
    Message(Delivery),
    /// The consumer lost a message (or the server says so): create another
    /// from the next sequence needed.
    Restart(String),
}

impl PullReader {
    /// Subscribes to a new inbox, creates a consumer of `stream`'s
    /// `filter` from `start`, and asks for the first two batches.
    pub(super) async fn create(
        js: jetstream::Context,
        stream: String,
        filter: String,
        start: u64,
    ) -> Result<Self, String> {
        let client = js.client();
        let inbox = Subject::from(client.new_inbox());
        let subscriber = client
            .subscribe(inbox.clone())
            .await
            .map_err(|e| format!("subscribing: {e}"))?;
        // No stream-info request: the caller has just read the stream.
        let stream = js
            .get_stream_no_info(&stream)
            .await
            .map_err(|e| format!("opening stream: {e}"))?;
        let consumer = stream
            .create_consumer(pull::Config {
                filter_subject: filter,
                deliver_policy: DeliverPolicy::ByStartSequence {
                    start_sequence: start,
                },
                ack_policy: AckPolicy::None,
                inactive_threshold: INACTIVE_THRESHOLD,
                num_replicas: 1,
                memory_storage: true,
                ..Default::default()
            })
            .await
            .map_err(|e| format!("creating consumer: {e}"))?;
        let request = pull::BatchConfig {
            batch: BATCH as usize,
            max_bytes: BATCH_BYTES as usize,
            expires: Some(EXPIRES),
            idle_heartbeat: IDLE_HEARTBEAT,
            ..Default::default()
        };
        let mut reader = Self {
            consumer,
            subscriber,
            inbox,
            request,
            delivered: 0,
            due_messages: 0,
            due_bytes: 0,
        };
        reader.ask();
        reader.ask();
        Ok(reader)
    }

    /// Asks for one more batch (on its own task, so that reading stays
    /// cancel-safe; a request lost with the connection is made good by the
    /// runner, which recreates the consumer after a reconnect).
    fn ask(&mut self) {
        self.due_messages += BATCH;
        self.due_bytes += BATCH_BYTES;
        let (consumer, inbox, request) = (
            self.consumer.clone(),
            self.inbox.clone(),
            self.request.clone(),
        );
        tokio::spawn(async move {
            if let Err(error) = consumer.request_batch(request, inbox).await {
                tracing::debug!(%error, "asking the consumer for messages failed");
            }
        });
    }

    /// Asks for the next batch once half of what is due has come.
    fn top_up(&mut self) {
        if self.due_messages <= BATCH || self.due_bytes <= BATCH_BYTES {
            self.ask();
        }
    }

    /// The next message; `Err` when the subscription ended or the server
    /// said the consumer is gone. Cancel-safe: nothing is awaited after a
    /// message is received.
    pub(super) async fn next(&mut self) -> Result<Next, String> {
        loop {
            let Some(message) = self.subscriber.next().await else {
                return Err("subscription ended".into());
            };
            if let Some(next) = self.on_message(message)? {
                return Ok(next);
            }
        }
    }

    /// A message for the node, or `None` for a heartbeat or a request's end.
    fn on_message(&mut self, message: Message) -> Result<Option<Next>, String> {
        match message.status {
            None => Ok(Some(self.on_delivery(message))),
            Some(StatusCode::IDLE_HEARTBEAT) => Ok(None),
            Some(StatusCode::TIMEOUT | StatusCode::REQUEST_TERMINATED) if !is_fatal(&message) => {
                self.on_request_end(&message);
                Ok(None)
            }
            Some(status) => Err(format!(
                "consumer: {status} {}",
                message.description.as_deref().unwrap_or_default()
            )),
        }
    }

    fn on_delivery(&mut self, message: Message) -> Next {
        let parsed = message.reply.as_deref().and_then(parse_reply);
        let Some(reply) = parsed else {
            let subject = message.subject.to_string();
            return Next::Restart(format!(
                "a delivery on {subject} without JetStream metadata"
            ));
        };
        if reply.consumer_sequence != self.delivered + 1 {
            return Next::Restart(format!(
                "consumer sequence {} after {}: a delivery was lost",
                reply.consumer_sequence, self.delivered
            ));
        }
        self.delivered = reply.consumer_sequence;
        self.due_messages = self.due_messages.saturating_sub(1);
        self.due_bytes = self.due_bytes.saturating_sub(message.length as u64);
        self.top_up();
        Next::Message(Delivery {
            stream_sequence: reply.stream_sequence,
            pending: reply.pending,
            published: reply.published,
            message,
        })
    }

    /// A request ended before it was filled (it expired, or its bytes ran
    /// out): what it did not deliver is no longer due.
    fn on_request_end(&mut self, message: &Message) {
        let header = |name: &str| {
            message
                .headers
                .as_ref()
                .and_then(|h| h.get_last(name))
                .and_then(|v| v.as_str().parse::<u64>().ok())
        };
        match (header(PENDING_MESSAGES), header(PENDING_BYTES)) {
            (Some(messages), bytes) => {
                self.due_messages = self.due_messages.saturating_sub(messages);
                self.due_bytes = self.due_bytes.saturating_sub(bytes.unwrap_or(0));
            }
            // Nothing says how much: count nothing as due, and ask again.
            (None, _) => {
                self.due_messages = 0;
                self.due_bytes = 0;
            }
        }
        self.top_up();
    }
}

/// True for a status that ends the consumer, not one request.
fn is_fatal(message: &Message) -> bool {
    let description = message.description.as_deref().unwrap_or_default();
    description.contains("Consumer Deleted") || description.contains("Consumer is push based")
}

/// What a JetStream reply subject says.
#[derive(Debug, PartialEq, Eq)]
struct Reply {
    stream_sequence: u64,
    consumer_sequence: u64,
    published: SystemTime,
    pending: u64,
}

/// Parses `$JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer
/// seq>.<nanos>.<pending>` and the form with a domain and an account hash
/// after `ACK` (and a trailing token), without allocating.
fn parse_reply(reply: &str) -> Option<Reply> {
    let mut tokens = [""; 12];
    let mut count = 0;
    for token in reply.split('.') {
        if count == tokens.len() {
            return None;
        }
        tokens[count] = token;
        count += 1;
    }
    if count < 9 || tokens[0] != "$JS" || tokens[1] != "ACK" {
        return None;
    }
    let base = if count == 9 { 2 } else { 4 };
    if count < base + 7 {
        return None;
    }
    let number = |i: usize| tokens[base + i].parse::<u64>().ok();
    Some(Reply {
        stream_sequence: number(3)?,
        consumer_sequence: number(4)?,
        published: SystemTime::UNIX_EPOCH + Duration::from_nanos(number(5)?),
        pending: number(6)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_subjects_of_both_forms_parse() {
        let v1 = "$JS.ACK.LOG.c1.1.42.7.1700000000000000000.3";
        let r = parse_reply(v1).unwrap();
        assert_eq!(
            (r.stream_sequence, r.consumer_sequence, r.pending),
            (42, 7, 3)
        );
        assert_eq!(
            r.published,
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
        );
        let v2 = "$JS.ACK.hub.ACCHASH.LOG.cons.2.43.8.1700000000000000001.0.rnd";
        let r = parse_reply(v2).unwrap();
        assert_eq!(
            (r.stream_sequence, r.consumer_sequence, r.pending),
            (43, 8, 0)
        );
    }

    #[test]
    fn other_subjects_do_not_parse() {
        for bad in [
            "_INBOX.abc",
            "$JS.ACK.LOG.c1.1.x.7.1.3",
            "$JS.ACK.LOG.c1.1.42.7.1",
            "$JS.NAK.LOG.c1.1.42.7.1.3",
            "$JS.ACK.a.b.c.d.e.f.g.h.i.j.k.l.m",
        ] {
            assert_eq!(parse_reply(bad), None, "{bad}");
        }
    }
}
