//! The soak's canary stream: the probe's canaries (`invalog::probe`'s
//! reserved `_probe` refresher, its run-scoped reply subject, the nodes'
//! answers) published one every `every`, as `invalog probe --serve` does,
//! but every send and every first answer is kept per canary, so the report
//! can split them by fault window — the service only keeps running totals.
//!
//! Answers are core NATS messages: one lost with a connection would look
//! like a canary never applied. So three subscribers listen, each first
//! connected to a different server of the cluster, and the earliest copy of
//! each (node, canary) answer counts.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use invalog::connect::{connect, NatsSettings};
use invalog::probe::{
    canary_json, decode_probe_reply, probe_refresher, reply_subject, Canary, PROBE_REFRESHER,
};
use invalog::{Instruction, LogSettings, Provenance, Publisher, PublisherSettings};
use tokio::task::JoinSet;

/// Canaries waiting for their acknowledgement at once; a tick while this
/// many wait is a canary not sent (as in the probe service).
const MAX_IN_FLIGHT: usize = 64;

/// What became of one canary.
#[derive(Debug, Clone)]
pub struct Sent {
    /// When it was handed to the publisher.
    pub at: Instant,
    /// `None` while unacknowledged; `Some(Ok(sequence))` once JetStream
    /// acknowledged it; `Some(Err(_))` when the publish call failed or the
    /// canary could not be sent at all.
    pub outcome: Option<Result<u64, String>>,
    /// Per node (index into the node names): publish → first answer.
    pub answers: Vec<Option<Duration>>,
}

/// Everything the canary stream recorded.
#[derive(Debug, Default)]
pub struct Record {
    pub canaries: Vec<Sent>,
    /// Answers from a node not in the list (should stay 0).
    pub strangers: u64,
}

/// The running canary stream: a publishing task and three answer
/// subscribers.
pub struct Canaries {
    record: Arc<Mutex<Record>>,
    stop: Arc<AtomicBool>,
    publishing: tokio::task::JoinHandle<()>,
    listening: JoinSet<()>,
    answers_seen: Arc<AtomicU64>,
}

async fn client(urls: Vec<String>) -> async_nats::Client {
    let settings = NatsSettings {
        urls,
        request_timeout: Duration::from_secs(2),
        ..Default::default()
    };
    connect(&settings).await.expect("connects to the cluster")
}

impl Canaries {
    /// Subscribes (one subscriber per URL, that URL first) and starts
    /// publishing one canary every `every` for the nodes named `nodes`.
    pub async fn start(
        urls: &[String],
        log: &LogSettings,
        every: Duration,
        nodes: &[String],
    ) -> Self {
        let run = uuid::Uuid::now_v7().to_string();
        let inbox = reply_subject(&run).expect("a UUID is a token");
        let record = Arc::new(Mutex::new(Record::default()));
        let answers_seen = Arc::new(AtomicU64::new(0));
        let mut listening = JoinSet::new();
        for i in 0..urls.len() {
            // This server first, the others to reconnect to.
            let mut order = urls.to_vec();
            order.rotate_left(i);
            let client = client(order).await;
            let mut replies = client.subscribe(inbox.clone()).await.unwrap();
            client.flush().await.unwrap();
            let (record, run, nodes) = (record.clone(), run.clone(), nodes.to_vec());
            let seen = answers_seen.clone();
            listening.spawn(async move {
                let _client = client;
                while let Some(message) = replies.next().await {
                    let at = Instant::now();
                    let Ok(reply) = decode_probe_reply(&message.payload) else {
                        continue;
                    };
                    if reply.probe != run {
                        continue;
                    }
                    seen.fetch_add(1, Ordering::Relaxed);
                    let mut r = record.lock().unwrap();
                    let Some(node) = nodes.iter().position(|n| *n == reply.node) else {
                        r.strangers += 1;
                        continue;
                    };
                    let Some(sent) = r.canaries.get_mut(reply.canary as usize) else {
                        r.strangers += 1;
                        continue;
                    };
                    let latency = at.saturating_duration_since(sent.at);
                    let slot = &mut sent.answers[node];
                    if slot.is_none_or(|earlier| latency < earlier) {
                        *slot = Some(latency);
                    }
                }
            });
        }
        let mut settings = PublisherSettings::new("soak-probe");
        settings.ack_timeout = Duration::from_secs(1);
        settings.attempts = 10;
        let js = async_nats::jetstream::context::ContextBuilder::new()
            .timeout(Duration::from_secs(2))
            .build(client(urls.to_vec()).await);
        let publisher = Publisher::new(js, log.clone(), settings, [probe_refresher()]);
        let stop = Arc::new(AtomicBool::new(false));
        let publishing = tokio::spawn(publish(
            publisher,
            record.clone(),
            stop.clone(),
            every,
            (run, inbox, nodes.len()),
        ));
        Canaries {
            record,
            stop,
            publishing,
            listening,
            answers_seen,
        }
    }

    /// Canaries sent so far and how many of them were acknowledged.
    pub fn progress(&self) -> (usize, usize) {
        let r = self.record.lock().unwrap();
        let acked = r
            .canaries
            .iter()
            .filter(|c| matches!(c.outcome, Some(Ok(_))))
            .count();
        (r.canaries.len(), acked)
    }

    /// Stops publishing and waits for every publish call to end.
    pub async fn stop_publishing(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        (&mut self.publishing).await.unwrap();
    }

    /// The highest acknowledged sequence.
    pub fn highest_sequence(&self) -> u64 {
        let r = self.record.lock().unwrap();
        r.canaries
            .iter()
            .filter_map(|c| c.outcome.as_ref()?.as_ref().ok().copied())
            .max()
            .unwrap_or(0)
    }

    /// Acknowledged canaries some node has not answered yet.
    pub fn unanswered(&self) -> usize {
        let r = self.record.lock().unwrap();
        r.canaries
            .iter()
            .filter(|c| matches!(c.outcome, Some(Ok(_))))
            .filter(|c| c.answers.iter().any(Option::is_none))
            .count()
    }

    /// Stops listening and hands over the record, with the number of answer
    /// copies received (each answer arrives once per subscriber).
    pub fn finish(mut self) -> (Record, u64) {
        self.listening.abort_all();
        let record = std::mem::take(&mut *self.record.lock().unwrap());
        (record, self.answers_seen.load(Ordering::Relaxed))
    }
}

/// Publishes canary after canary until `stop`, then waits for the
/// acknowledgements still due.
async fn publish(
    publisher: Publisher,
    record: Arc<Mutex<Record>>,
    stop: Arc<AtomicBool>,
    every: Duration,
    (run, inbox, nodes): (String, String, usize),
) {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut acks = JoinSet::new();
    while !stop.load(Ordering::SeqCst) {
        tokio::select! {
            _ = ticker.tick() => {
                let at = Instant::now();
                let n = {
                    let mut r = record.lock().unwrap();
                    r.canaries.push(Sent { at, outcome: None, answers: vec![None; nodes] });
                    r.canaries.len() - 1
                };
                if acks.len() >= MAX_IN_FLIGHT {
                    record.lock().unwrap().canaries[n].outcome = Some(Err("not sent: too many in flight".into()));
                    continue;
                }
                let canary = Canary { probe: run.clone(), canary: n as u64, reply: inbox.clone() };
                let instructions = vec![Instruction::RefreshJson(canary_json(&canary))];
                let publisher = publisher.clone();
                acks.spawn(async move {
                    let outcome = publisher.publish(PROBE_REFRESHER, instructions, &Provenance::default()).await;
                    (n, outcome.map(|r| r.sequence().expect("one message")).map_err(|e| e.to_string()))
                });
            }
            Some(joined) = acks.join_next(), if !acks.is_empty() => {
                let (n, outcome) = joined.unwrap();
                record.lock().unwrap().canaries[n].outcome = Some(outcome);
            }
        }
    }
    while let Some(joined) = acks.join_next().await {
        let (n, outcome) = joined.unwrap();
        record.lock().unwrap().canaries[n].outcome = Some(outcome);
    }
}
