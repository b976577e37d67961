//! The node's consumer: an ephemeral push consumer (flow control, idle
//! heartbeats, one replica in memory, removed by the server once nobody
//! listens) whose deliveries are read as a plain core subscription. Acks
//! only bound what is in flight: the server sends at most
//! [`MAX_IN_FLIGHT`] messages past the last one acknowledged, and the
//! reader acknowledges all it has read (`AckPolicy::All`) every
//! [`ACK_EVERY`] messages and when the runner asks (`ack_read`, on its
//! ticks). Without that bound a catch-up buffers what the server sends as
//! fast as it can (tens of MiB) and the client drops deliveries once its
//! subscription's buffer is full.
//! It is the fastest way found to read a stream with async-nats 0.51
//! (BENCHMARKS.md, figure 6): the ordered pull consumer asks for at most 500
//! messages at a time and wraps each delivery in a `jetstream::Message`
//! that clones the whole JetStream context.
//!
//! What async-nats's ordered consumers did for the node, this module does:
//! it subscribes before the consumer exists (nothing is delivered before
//! anyone listens), answers flow-control requests, and ends the consumer
//! ([`Next::Restart`]) as soon as a delivery or a heartbeat shows that one
//! was lost (the consumer sequence is not the next one). The runner
//! creates the next consumer at the next stream sequence it needs, and
//! checks stream sequences, stalls and reconnects itself (`consume`,
//! `check`).

use std::time::{Duration, SystemTime};

use async_nats::jetstream::{self, consumer::push, consumer::AckPolicy, consumer::DeliverPolicy};
use async_nats::{Client, Message, StatusCode, Subscriber};
use bytes::Bytes;
use futures::StreamExt;

/// How often the server sends a heartbeat while it has nothing to deliver.
const IDLE_HEARTBEAT: Duration = Duration::from_secs(5);

/// How long the server keeps the consumer after the subscription is gone.
const INACTIVE_THRESHOLD: Duration = Duration::from_secs(10);

/// Most messages the server sends past the last acknowledged one.
const MAX_IN_FLIGHT: u64 = 8192;

/// Messages read between two acknowledgements while they stream in.
const ACK_EVERY: u64 = MAX_IN_FLIGHT / 4;

/// When the server sends unacknowledged messages again: long, because
/// a redelivery is only wasted work (the runner skips what it has), and
/// the runner acknowledges on every tick of its loop.
const ACK_WAIT: Duration = Duration::from_secs(600);

/// Header of a heartbeat: the last consumer sequence the server delivered.
const LAST_CONSUMER: &str = "Nats-Last-Consumer";

/// Header of a heartbeat while flow control waits for an answer: the
/// subject to answer.
const CONSUMER_STALLED: &str = "Nats-Consumer-Stalled";

/// A push consumer and the subscription its messages arrive on.
pub(super) struct PushConsumer {
    client: Client,
    subscriber: Subscriber,
    /// The last consumer sequence delivered (0: none yet).
    delivered: u64,
    /// Deliveries read since the last acknowledgement, and the reply
    /// subject of the last one read (acknowledging it acknowledges all).
    unacked: u64,
    last_reply: Option<async_nats::Subject>,
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

impl PushConsumer {
    /// Subscribes to a new inbox, then creates a consumer of `stream`'s
    /// `filter` from `start` delivering there.
    pub(super) async fn create(
        js: jetstream::Context,
        stream: String,
        filter: String,
        start: u64,
    ) -> Result<Self, String> {
        let client = js.client();
        let inbox = client.new_inbox();
        let subscriber = client
            .subscribe(inbox.clone())
            .await
            .map_err(|e| format!("subscribing: {e}"))?;
        // No stream-info request: the caller has just read the stream.
        let stream = js
            .get_stream_no_info(&stream)
            .await
            .map_err(|e| format!("opening stream: {e}"))?;
        stream
            .create_consumer(push::Config {
                deliver_subject: inbox,
                filter_subject: filter,
                deliver_policy: DeliverPolicy::ByStartSequence {
                    start_sequence: start,
                },
                ack_policy: AckPolicy::All,
                max_ack_pending: MAX_IN_FLIGHT as i64,
                ack_wait: ACK_WAIT,
                flow_control: true,
                idle_heartbeat: IDLE_HEARTBEAT,
                inactive_threshold: INACTIVE_THRESHOLD,
                num_replicas: 1,
                memory_storage: true,
                ..Default::default()
            })
            .await
            .map_err(|e| format!("creating consumer: {e}"))?;
        Ok(Self {
            client,
            subscriber,
            delivered: 0,
            unacked: 0,
            last_reply: None,
        })
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

    /// A message for the node, or `None` for a heartbeat or flow control.
    fn on_message(&mut self, message: Message) -> Result<Option<Next>, String> {
        match message.status {
            None => Ok(Some(self.on_delivery(message))),
            Some(StatusCode::IDLE_HEARTBEAT) => Ok(self.on_heartbeat(message)),
            Some(status) => Err(format!(
                "consumer: {status} {}",
                message.description.as_deref().unwrap_or_default()
            )),
        }
    }

    fn on_delivery(&mut self, mut message: Message) -> Next {
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
        self.unacked += 1;
        // Kept to acknowledge with (moved, not copied: nothing after this
        // reads it).
        self.last_reply = message.reply.take();
        if self.unacked >= ACK_EVERY {
            self.ack_read();
        }
        Next::Message(Delivery {
            stream_sequence: reply.stream_sequence,
            pending: reply.pending,
            published: reply.published,
            message,
        })
    }

    /// Answers flow control; a heartbeat that names another last consumer
    /// sequence than the last one received means deliveries were lost.
    fn on_heartbeat(&mut self, message: Message) -> Option<Next> {
        if let Some(reply) = message.reply {
            // A flow-control request: the server waits for the answer.
            self.answer(reply.to_string());
            return None;
        }
        let headers = message.headers?;
        if let Some(subject) = headers.get_last(CONSUMER_STALLED) {
            self.answer(subject.to_string());
        }
        let last = headers
            .get_last(LAST_CONSUMER)
            .and_then(|v| v.as_str().parse::<u64>().ok())?;
        (last != self.delivered).then(|| {
            Next::Restart(format!(
                "the server delivered through consumer sequence {last}, received {}",
                self.delivered
            ))
        })
    }

    /// Acknowledges every message read so far (the server may send
    /// [`MAX_IN_FLIGHT`] more), if some are not yet.
    pub(super) fn ack_read(&mut self) {
        if self.unacked == 0 {
            return;
        }
        if let Some(reply) = self.last_reply.take() {
            self.unacked = 0;
            self.answer(reply.to_string());
        }
    }

    /// Sends an empty message to `subject` on its own task (so that
    /// reading stays cancel-safe): a flow-control answer or an
    /// acknowledgement. A lost flow-control answer is asked again by the
    /// server's next heartbeat (`Nats-Consumer-Stalled`); a lost
    /// acknowledgement is made good by the next one.
    fn answer(&self, subject: String) {
        let client = self.client.clone();
        tokio::spawn(async move {
            if let Err(error) = client.publish(subject, Bytes::new()).await {
                tracing::debug!(%error, "answering the consumer failed");
            }
        });
    }
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
