//! Raw async-nats readers of one stream, for an honest figure-2 baseline
//! (issue 14 item 1): ordered pull consumers (default, and reading only the
//! sequence from the reply subject), plain pull consumers with several batch
//! and max-bytes settings through `messages()`, `fetch()` and `batch()`, an
//! ordered push consumer, and a push consumer read as a plain core
//! subscription. Figure 6 (`--only 6`) times each on the figure-2 stream;
//! [`fastest`] is the one figure 2 and figure 4 use as their raw side.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Result};
use async_nats::jetstream::{
    self, consumer, consumer::pull, consumer::push, consumer::DeliverPolicy,
};
use futures::StreamExt;
use invalog::LogSettings;

use crate::opts::Opts;
use crate::table::{fmt_num, median, Row};

/// One way of reading the stream.
#[derive(Debug, Clone, Copy)]
pub enum Reader {
    /// `OrderedConfig` pull consumer, `messages()`, `message.info()` on each.
    OrderedInfo,
    /// The same, reading only the stream sequence from the reply subject.
    OrderedSeq,
    /// A pull consumer (`AckPolicy::None`), `stream()` with this batch and
    /// max bytes (0: none), sequence only.
    PullStream(usize, usize),
    /// A pull consumer, repeated `fetch()` of this many messages.
    PullFetch(usize),
    /// A pull consumer, repeated `batch()` of this many messages.
    PullBatch(usize),
    /// An ordered push consumer (flow control, heartbeats), sequence only.
    OrderedPush,
    /// A push consumer with flow control read as a core subscription,
    /// answering flow-control requests itself, sequence only.
    CorePush,
}

impl Reader {
    pub fn label(self) -> String {
        match self {
            Reader::OrderedInfo => "ordered pull, messages(), info()".into(),
            Reader::OrderedSeq => "ordered pull, messages(), sequence only".into(),
            Reader::PullStream(b, 0) => format!("pull stream(), batch {b}"),
            Reader::PullStream(b, m) => format!("pull stream(), batch {b}, max_bytes {m}"),
            Reader::PullFetch(b) => format!("pull fetch() x{b}"),
            Reader::PullBatch(b) => format!("pull batch() x{b}"),
            Reader::OrderedPush => "ordered push consumer".into(),
            Reader::CorePush => "push consumer as core subscription".into(),
        }
    }
}

/// Every reader figure 6 tries.
pub const ALL: &[Reader] = &[
    Reader::OrderedInfo,
    Reader::OrderedSeq,
    Reader::PullStream(500, 0),
    Reader::PullStream(2000, 0),
    Reader::PullStream(10_000, 0),
    Reader::PullStream(10_000, 4 << 20),
    Reader::PullFetch(1000),
    Reader::PullFetch(10_000),
    Reader::PullBatch(10_000),
    Reader::OrderedPush,
    Reader::CorePush,
];

/// The reader figures 2 and 4 compare against: the fastest of figure 6's
/// runs on this machine (see BENCHMARKS.md, "Raw readers").
pub const FASTEST: Reader = Reader::CorePush;

/// The stream sequence in a JetStream reply subject
/// (`$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.…`, or with domain
/// and account hash after `ACK`), without parsing the rest.
pub fn sequence_of(reply: &str) -> Option<u64> {
    let tokens = reply.split('.');
    let n = reply.bytes().filter(|&b| b == b'.').count() + 1;
    let at = if n == 9 { 5 } else { 7 };
    tokens.into_iter().nth(at)?.parse().ok()
}

fn reply_sequence(m: &async_nats::Message) -> Result<u64> {
    let reply = m
        .reply
        .as_ref()
        .ok_or_else(|| anyhow!("no reply subject"))?;
    sequence_of(reply).ok_or_else(|| anyhow!("no sequence in {reply}"))
}

/// Reads the whole stream with `reader`; the time from connect done to the
/// last message, and the count.
pub async fn read(
    reader: Reader,
    url: &str,
    log: &LogSettings,
    filter: String,
) -> Result<(Duration, u64)> {
    let client = async_nats::connect(url).await?;
    let js = jetstream::new(client.clone());
    let started = Instant::now();
    let mut stream = js.get_stream(&log.stream).await?;
    let last = stream.info().await?.state.last_sequence;
    let pull_config = || pull::Config {
        filter_subject: filter.clone(),
        deliver_policy: DeliverPolicy::All,
        ack_policy: consumer::AckPolicy::None,
        inactive_threshold: Duration::from_secs(30),
        ..Default::default()
    };
    let mut count = 0u64;
    match reader {
        Reader::OrderedInfo | Reader::OrderedSeq => {
            let consumer = stream
                .create_consumer(pull::OrderedConfig {
                    filter_subject: filter,
                    deliver_policy: DeliverPolicy::All,
                    ..Default::default()
                })
                .await?;
            let mut messages = consumer.messages().await?;
            while let Some(m) = messages.next().await {
                let m = m?;
                count += 1;
                let seq = if matches!(reader, Reader::OrderedInfo) {
                    m.info().map_err(|e| anyhow!("{e}"))?.stream_sequence
                } else {
                    reply_sequence(&m)?
                };
                if seq >= last {
                    break;
                }
            }
        }
        Reader::PullStream(batch, max_bytes) => {
            let consumer = stream.create_consumer(pull_config()).await?;
            let mut b = consumer.stream().max_messages_per_batch(batch);
            if max_bytes > 0 {
                b = b.max_bytes_per_batch(max_bytes);
            }
            let mut messages = b.messages().await?;
            while let Some(m) = messages.next().await {
                count += 1;
                let m = m.map_err(|e| anyhow!("{e}"))?;
                if reply_sequence(&m)? >= last {
                    break;
                }
            }
        }
        Reader::PullFetch(n) | Reader::PullBatch(n) => {
            let consumer = stream.create_consumer(pull_config()).await?;
            'outer: loop {
                let mut messages = if matches!(reader, Reader::PullFetch(_)) {
                    consumer.fetch().max_messages(n).messages().await?
                } else {
                    consumer
                        .batch()
                        .max_messages(n)
                        .expires(Duration::from_secs(5))
                        .messages()
                        .await?
                };
                while let Some(m) = messages.next().await {
                    count += 1;
                    let m = m.map_err(|e| anyhow!("{e}"))?;
                    if reply_sequence(&m)? >= last {
                        break 'outer;
                    }
                }
            }
        }
        Reader::OrderedPush => {
            let consumer = stream
                .create_consumer(push::OrderedConfig {
                    deliver_subject: client.new_inbox(),
                    filter_subject: filter,
                    deliver_policy: DeliverPolicy::All,
                    ..Default::default()
                })
                .await?;
            let mut messages = consumer.messages().await?;
            while let Some(m) = messages.next().await {
                count += 1;
                let m = m?;
                if reply_sequence(&m)? >= last {
                    break;
                }
            }
        }
        Reader::CorePush => {
            let inbox = client.new_inbox();
            let mut sub = client.subscribe(inbox.clone()).await?;
            let consumer = stream
                .create_consumer(push::Config {
                    deliver_subject: inbox,
                    filter_subject: filter,
                    deliver_policy: DeliverPolicy::All,
                    ack_policy: consumer::AckPolicy::None,
                    flow_control: true,
                    idle_heartbeat: Duration::from_secs(5),
                    inactive_threshold: Duration::from_secs(30),
                    ..Default::default()
                })
                .await?;
            while let Some(m) = sub.next().await {
                if m.status.is_some() {
                    // Flow control and heartbeats: answer requests that ask.
                    if let Some(reply) = m.reply {
                        client.publish(reply, Default::default()).await?;
                    }
                    continue;
                }
                count += 1;
                if reply_sequence(&m)? >= last {
                    break;
                }
            }
            // Timed to the last message, not the cleanup.
            let elapsed = started.elapsed();
            let name = consumer.cached_info().name.clone();
            let _ = stream.delete_consumer(&name).await;
            return done(reader, elapsed, count, last);
        }
    }
    done(reader, started.elapsed(), count, last)
}

fn done(reader: Reader, elapsed: Duration, count: u64, last: u64) -> Result<(Duration, u64)> {
    if count == 0 && last > 0 {
        bail!("{} read nothing", reader.label());
    }
    Ok((elapsed, count))
}

/// Figure 6 runs when asked (`--only 6`), and in smoke runs (so it cannot
/// rot); a full run without `--only` leaves it out (it takes minutes).
pub fn wanted(o: &Opts) -> bool {
    o.only.contains(&6) || (o.smoke && o.runs(6))
}

/// Figure 6: every reader on the figure-2 stream of `size` messages.
pub async fn figure_6(
    o: &Opts,
    url: &str,
    log: &LogSettings,
    size: usize,
    rows: &mut Vec<Row>,
) -> Result<()> {
    println!("figure 6: raw readers of the figure-2 stream ({size} messages), msg/s");
    let mut base = vec![];
    for &reader in ALL {
        let mut rates = vec![];
        for _ in 0..o.repeats {
            let (d, n) = read(reader, url, log, log.all_subjects()).await?;
            ensure!(n == size as u64, "{} read {n} of {size}", reader.label());
            rates.push(size as f64 / d.as_secs_f64());
        }
        println!(
            "  {:<48} {}",
            reader.label(),
            rates
                .iter()
                .map(|r| format!("{r:.0}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        if base.is_empty() {
            base = rates.clone();
        }
        rows.push(Row {
            figure: format!("6 raw: {}, {}", reader.label(), fmt_num(size as f64)),
            unit: "msg/s",
            ours: rates,
            base: base.clone(),
            target: "-".into(),
            met: None,
        });
    }
    let _ = median(&base);
    Ok(())
}
