//! Figure 1: publish throughput. invalog's `Publisher::publish_many` against
//! raw pipelined `send_publish` with and without headers, for messages of one
//! and of 100 instructions; in smoke mode also checks what `publish_many`
//! stores.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use async_nats::jetstream::{self, message::PublishMessage};
use bytes::Bytes;
use invalog::{Instruction, LogSettings, Provenance, Publisher};

use crate::alloc::ALLOCS;
use crate::common::{
    connect, content, fresh_stream, log_settings, publisher, sample_body, single, stream_last,
};
use crate::opts::Opts;
use crate::table::{median, Row};

fn hundred(i: usize) -> Vec<Instruction> {
    (0..100)
        .map(|k| Instruction::RefreshIds(vec![(i * 100 + k) as i64]))
        .collect()
}

/// The same 100 ids as one instruction (what `hundred` is merged into):
/// row 1b-one, what the library costs when the caller does not allocate a
/// list per id.
fn hundred_in_one(i: usize) -> Vec<Instruction> {
    let first = (i * 100) as i64;
    vec![Instruction::RefreshIds((first..first + 100).collect())]
}

/// Which headers a raw publish sets.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Headers {
    None,
    /// `Nats-Msg-Id` (the baseline the issue asks for).
    Id,
    /// `Nats-Msg-Id` and a second header, `Invalog-Format` (invalog sends
    /// only `Nats-Msg-Id`): what a second header costs (row 1a'').
    IdAndFormat,
}

/// Raw async-nats: sends `n` payloads pipelined `chunk` at a time (all
/// sent, then every ack awaited), with `headers` (the `Nats-Msg-Id`, when
/// set, unique per message).
async fn raw_publish(
    js: &jetstream::Context,
    subject: &str,
    n: usize,
    chunk: usize,
    payload: &Bytes,
    headers: Headers,
    run: u64,
) -> Result<Duration> {
    let started = Instant::now();
    let mut sent = 0;
    let mut acks = Vec::with_capacity(chunk);
    while sent < n {
        let end = (sent + chunk).min(n);
        for i in sent..end {
            let mut m = PublishMessage::build().payload(payload.clone());
            if headers != Headers::None {
                m = m.message_id(format!("{run}-{i}"));
            }
            if headers == Headers::IdAndFormat {
                m = m.header(invalog::wire::HEADER_FORMAT, "1");
            }
            acks.push(js.send_publish(subject.to_owned(), m).await?);
        }
        for ack in acks.drain(..) {
            ack.await?;
        }
        sent = end;
    }
    Ok(started.elapsed())
}

/// What an invalog sample took: the whole (building each call's
/// instructions, then `publish_many`), the publish calls alone, and the last
/// sequence stored.
struct Timed {
    total: Duration,
    publish: Duration,
    last: u64,
}

/// invalog: `Publisher::publish_many`, `chunk` messages per call. Each
/// call's groups are built (`make`) just before the call; `total` counts
/// that as the caller's work, `publish` leaves it out.
async fn invalog_publish(
    p: &Publisher,
    n: usize,
    chunk: usize,
    make: impl Fn(usize) -> Vec<Instruction>,
) -> Result<Timed> {
    let started = Instant::now();
    let mut publish = Duration::ZERO;
    let mut sent = 0;
    let mut last = 0;
    while sent < n {
        let end = (sent + chunk).min(n);
        let groups: Vec<_> = (sent..end).map(|i| ("content", make(i))).collect();
        let call = Instant::now();
        let receipt = p.publish_many(groups, &Provenance::default()).await?;
        publish += call.elapsed();
        ensure!(
            receipt.messages.len() == end - sent,
            "one message per group"
        );
        last = receipt.sequence().unwrap_or(last);
        sent = end;
    }
    Ok(Timed {
        total: started.elapsed(),
        publish,
        last,
    })
}

pub async fn figure_1(o: &Opts, url: &str, rows: &mut Vec<Row>) -> Result<()> {
    let js = connect(url).await?;
    let log = log_settings("BENCH_PUB", "bpub");
    let p = publisher(&js, &log);
    let subject = log.subject(&content().name);
    let small = Bytes::from(sample_body(vec![single(123_456)]));
    // What `publish_many` sends for `hundred(i)`: the unit of work merges
    // the 100 single-id instructions into one `refresh_ids` of 100 ids.
    let big = Bytes::from(sample_body(vec![Instruction::RefreshIds(
        (1_234_500..1_234_600).collect(),
    )]));
    println!(
        "figure 1: {} single-instruction messages ({} B) and {} messages of 100 instructions ({} B) per sample, {} sent per pipeline",
        o.pub_msgs, small.len(), o.batch_msgs, big.len(), o.chunk
    );
    let mut raw1_both = vec![];
    let (mut raw1, mut raw1_noid, mut ours1, mut raw100, mut ours100_i, mut ours100_m) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    // invalog's rate counting only the `publish_many` calls, not the
    // building of their instructions (info rows 1a-pub and 1b-pub).
    let (mut ours1_pub, mut ours100_pub, mut ours100_one) = (vec![], vec![], vec![]);
    let run = AtomicU64::new(0);
    let next_run = || run.fetch_add(1, Relaxed) + 1 + (std::process::id() as u64) * 1000;
    for rep in 0..o.repeats {
        fresh_stream(&js, &log).await?;
        let d = raw_publish(
            &js,
            &subject,
            o.pub_msgs,
            o.chunk,
            &small,
            Headers::Id,
            next_run(),
        )
        .await?;
        raw1.push(o.pub_msgs as f64 / d.as_secs_f64());
        fresh_stream(&js, &log).await?;
        let d = raw_publish(
            &js,
            &subject,
            o.pub_msgs,
            o.chunk,
            &small,
            Headers::None,
            next_run(),
        )
        .await?;
        raw1_noid.push(o.pub_msgs as f64 / d.as_secs_f64());
        fresh_stream(&js, &log).await?;
        let raw_allocs = ALLOCS.load(Relaxed);
        let d = raw_publish(
            &js,
            &subject,
            o.pub_msgs,
            o.chunk,
            &small,
            Headers::IdAndFormat,
            next_run(),
        )
        .await?;
        let raw_allocs = ALLOCS.load(Relaxed) - raw_allocs;
        raw1_both.push(o.pub_msgs as f64 / d.as_secs_f64());
        fresh_stream(&js, &log).await?;
        let allocs = ALLOCS.load(Relaxed);
        let t = invalog_publish(&p, o.pub_msgs, o.chunk, |i| vec![single(i)]).await?;
        let allocs = ALLOCS.load(Relaxed) - allocs;
        ensure!(
            t.last == o.pub_msgs as u64,
            "stored {} of {}",
            t.last,
            o.pub_msgs
        );
        ours1.push(o.pub_msgs as f64 / t.total.as_secs_f64());
        ours1_pub.push(o.pub_msgs as f64 / t.publish.as_secs_f64());
        fresh_stream(&js, &log).await?;
        let d = raw_publish(
            &js,
            &subject,
            o.batch_msgs,
            o.chunk,
            &big,
            Headers::Id,
            next_run(),
        )
        .await?;
        raw100.push(o.batch_msgs as f64 / d.as_secs_f64());
        fresh_stream(&js, &log).await?;
        let allocs100 = ALLOCS.load(Relaxed);
        let t = invalog_publish(&p, o.batch_msgs, o.chunk, hundred).await?;
        let allocs100 = ALLOCS.load(Relaxed) - allocs100;
        ensure!(
            t.last == o.batch_msgs as u64,
            "stored {} of {}",
            t.last,
            o.batch_msgs
        );
        ours100_m.push(o.batch_msgs as f64 / t.total.as_secs_f64());
        ours100_i.push(100.0 * o.batch_msgs as f64 / t.total.as_secs_f64());
        ours100_pub.push(o.batch_msgs as f64 / t.publish.as_secs_f64());
        fresh_stream(&js, &log).await?;
        let t = invalog_publish(&p, o.batch_msgs, o.chunk, hundred_in_one).await?;
        ensure!(
            t.last == o.batch_msgs as u64,
            "stored {} of {}",
            t.last,
            o.batch_msgs
        );
        ours100_one.push(o.batch_msgs as f64 / t.total.as_secs_f64());
        println!(
            "  run {}: raw+id {:.0} msg/s, raw no id {:.0} msg/s, raw+id+format {:.0} msg/s ({:.1} allocs/msg), invalog {:.0} msg/s, publish calls alone {:.0} msg/s ({:.1} allocs/msg, 2 of them building the instruction); 100-batches raw {:.0} msg/s, invalog {:.0} msg/s, publish calls alone {:.0} msg/s ({:.1} allocs/msg, 101 of them building the instructions), as one 100-id instruction {:.0} msg/s",
            rep + 1,
            raw1[rep],
            raw1_noid[rep],
            raw1_both[rep],
            raw_allocs as f64 / o.pub_msgs as f64,
            ours1[rep],
            ours1_pub[rep],
            allocs as f64 / o.pub_msgs as f64,
            raw100[rep],
            ours100_m[rep],
            ours100_pub[rep],
            allocs100 as f64 / o.batch_msgs as f64,
            ours100_one[rep],
        );
    }
    if o.smoke {
        smoke_check_publish_many(&js, &log, &p).await?;
    }
    let _ = js.delete_stream(&log.stream).await;
    let r1 = median(&ours1) / median(&raw1);
    rows.push(Row {
        figure: "1a publish, 1-instruction msgs (raw: +Nats-Msg-Id)".into(),
        unit: "msg/s",
        ours: ours1.clone(),
        base: raw1.clone(),
        target: ">= 0.90 of raw".into(),
        met: Some(r1 >= 0.9),
    });
    rows.push(Row {
        figure: "1a-pub same, publish calls alone (info: without building the instructions)".into(),
        unit: "msg/s",
        ours: ours1_pub,
        base: raw1.clone(),
        target: "-".into(),
        met: None,
    });
    rows.push(Row {
        figure: "1a' same, raw without Nats-Msg-Id (info)".into(),
        unit: "msg/s",
        ours: ours1.clone(),
        base: raw1_noid,
        target: "-".into(),
        met: None,
    });
    // Information, not invalog: raw with a second header (in the invalog
    // column) against raw with the id only.
    rows.push(Row {
        figure: "1a'' raw +id +Invalog-Format vs raw +id (info: cost of a 2nd header)".into(),
        unit: "msg/s",
        ours: raw1_both,
        base: raw1,
        target: "-".into(),
        met: None,
    });
    let r1b = median(&ours100_m) / median(&raw100);
    rows.push(Row {
        figure: "1b publish, 100-instruction msgs (vs raw same size)".into(),
        unit: "msg/s",
        ours: ours100_m,
        base: raw100.clone(),
        target: ">= 0.80 of raw".into(),
        met: Some(r1b >= 0.8),
    });
    rows.push(Row {
        figure: "1b-pub same, publish calls alone (info: without building the instructions)".into(),
        unit: "msg/s",
        ours: ours100_pub,
        base: raw100.clone(),
        target: "-".into(),
        met: None,
    });
    rows.push(Row {
        figure: "1b-one same 100 ids given as one instruction (info)".into(),
        unit: "msg/s",
        ours: ours100_one,
        base: raw100,
        target: "-".into(),
        met: None,
    });
    let r = median(&ours100_i) / median(&ours1);
    rows.push(Row {
        figure: "1b' instructions/s, batches of 100 (vs 1a invalog)".into(),
        unit: "instr/s",
        ours: ours100_i,
        base: ours1,
        target: "far above 1a".into(),
        met: Some(r >= 5.0),
    });
    Ok(())
}

/// Smoke check of `Publisher::publish_many`: one message per group, in
/// order, groups not merged, a node applies them all.
async fn smoke_check_publish_many(
    js: &jetstream::Context,
    log: &LogSettings,
    p: &Publisher,
) -> Result<()> {
    fresh_stream(js, log).await?;
    let groups = vec![
        ("content", vec![Instruction::RefreshIds(vec![1])]),
        ("content", vec![Instruction::RefreshIds(vec![1])]),
        (
            "content",
            vec![
                Instruction::RemoveIds(vec![2]),
                Instruction::RemoveIds(vec![2]),
            ],
        ),
    ];
    let receipt = p.publish_many(groups, &Provenance::default()).await?;
    let seqs: Vec<u64> = receipt.messages.iter().map(|m| m.sequence).collect();
    ensure!(
        seqs == vec![1, 2, 3],
        "publish_many stores one message per group in order: {seqs:?}"
    );
    let unknown = p
        .publish_many(
            vec![("content", vec![single(1)]), ("nope", vec![single(2)])],
            &Provenance::default(),
        )
        .await;
    ensure!(unknown.is_err(), "an unknown refresher is refused");
    ensure!(
        stream_last(js, log).await? == 3,
        "nothing published on error"
    );
    let entries = invalog::history::read_range(js, log, 1, None, 10).await?;
    let third = entries[2]
        .batch
        .as_ref()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    ensure!(
        third.instructions == vec![Instruction::RemoveIds(vec![2])],
        "de-duplicated within a group"
    );
    println!("  smoke: publish_many checks passed");
    Ok(())
}
