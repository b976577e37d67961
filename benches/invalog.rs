//! invalog benchmarks, each figure next to a raw async-nats baseline measured
//! in the same run on the same server. See BENCHMARKS.md.
//!
//! ```sh
//! cargo bench --bench invalog                 # full sizes (release)
//! cargo bench --bench invalog -- --only 1,3   # some figures
//! cargo test --bench invalog                  # smoke run (debug, tiny sizes), used in CI
//! ```
//!
//! Without `--bench` on the command line (that is what `cargo bench` passes)
//! or with `--smoke`, the harness runs tiny sizes and checks results for
//! correctness only; it never asserts on timings.

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, ensure, Context as _, Result};
use async_nats::jetstream::{
    self, consumer::pull, consumer::DeliverPolicy, message::PublishMessage,
};
use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use invalog::node::NewNodePolicy;
use invalog::{
    BatchContext, FileStore, Instruction, LogSettings, Node, NodeId, NodeSettings, Provenance,
    Publisher, PublisherSettings, RefreshResult, Refresher, RefresherDef, Registry,
};
use uuid::Uuid;

// ---------------------------------------------------------------------------
// Counting allocator: live bytes, peak live bytes (resettable), allocations.

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static TRACK_PEAK: AtomicBool = AtomicBool::new(false);
static ALLOCS: AtomicU64 = AtomicU64::new(0);

fn grew(by: usize) {
    ALLOCS.fetch_add(1, Relaxed);
    let now = LIVE.fetch_add(by, Relaxed) + by;
    if TRACK_PEAK.load(Relaxed) {
        PEAK.fetch_max(now, Relaxed);
    }
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size >= layout.size() {
                grew(new_size - layout.size());
            } else {
                LIVE.fetch_sub(layout.size() - new_size, Relaxed);
            }
        }
        p
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Starts tracking the peak of live heap bytes from now; also resets the
/// kernel's peak RSS (VmHWM) where allowed.
fn reset_peak() {
    PEAK.store(LIVE.load(Relaxed), Relaxed);
    TRACK_PEAK.store(true, Relaxed);
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// (peak live heap bytes since `reset_peak`, VmHWM bytes).
fn read_peak() -> (usize, usize) {
    TRACK_PEAK.store(false, Relaxed);
    (PEAK.load(Relaxed), vm_hwm())
}

fn vm_hwm() -> usize {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<usize>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

// ---------------------------------------------------------------------------
// Options.

#[derive(Debug, Clone)]
struct Opts {
    smoke: bool,
    repeats: usize,
    only: Vec<u32>,
    /// Figure 1: single-instruction messages per sample.
    pub_msgs: usize,
    /// Figure 1: messages of 100 instructions per sample.
    batch_msgs: usize,
    /// Messages sent before awaiting acks (both raw and invalog).
    chunk: usize,
    /// Figure 2: the small and the large backlog (instructions = messages).
    backlog_small: usize,
    backlog: usize,
    /// Figure 3: messages per sample, rate, node counts.
    lat_msgs: usize,
    lat_rate: f64,
    lat_nodes: Vec<usize>,
    /// Figure 3: the nodes' `flush_interval` (seconds), default 1.
    lat_flush: f64,
    /// Figure 4: backlogs.
    ready_backlog: usize,
    agent_backlog: usize,
    agent_bin: Option<PathBuf>,
    /// Figure 5: distinct ids in the figure-2 stream (each id appears
    /// backlog / history_ids times).
    history_ids: usize,
}

impl Opts {
    fn parse(args: &[String]) -> Result<Opts> {
        let smoke = args.iter().any(|a| a == "--smoke") || !args.iter().any(|a| a == "--bench");
        let mut o = if smoke {
            Opts {
                smoke,
                repeats: 1,
                only: vec![],
                pub_msgs: 2_000,
                batch_msgs: 200,
                chunk: 500,
                backlog_small: 1_000,
                backlog: 5_000,
                lat_msgs: 200,
                lat_rate: 500.0,
                lat_nodes: vec![1, 3],
                lat_flush: 1.0,
                ready_backlog: 1_000,
                agent_backlog: 200,
                agent_bin: None,
                history_ids: 500,
            }
        } else {
            Opts {
                smoke,
                repeats: 3,
                only: vec![],
                pub_msgs: 200_000,
                batch_msgs: 20_000,
                chunk: 1_000,
                backlog_small: 100_000,
                backlog: 1_000_000,
                lat_msgs: 5_000,
                lat_rate: 1_000.0,
                lat_nodes: vec![1, 10, 50],
                lat_flush: 1.0,
                ready_backlog: 100_000,
                agent_backlog: 10_000,
                agent_bin: None,
                history_ids: 100_000,
            }
        };
        let mut it = args.iter().peekable();
        while let Some(arg) = it.next() {
            let mut value = || {
                it.next()
                    .cloned()
                    .with_context(|| format!("{arg} needs a value"))
            };
            let n = |v: String| -> Result<usize> {
                v.replace('_', "")
                    .parse()
                    .with_context(|| format!("{arg}: not a number"))
            };
            match arg.as_str() {
                "--smoke" | "--bench" => {}
                "--repeats" => o.repeats = n(value()?)?.max(1),
                "--only" => {
                    o.only = value()?
                        .split(',')
                        .map(|s| s.trim().parse())
                        .collect::<Result<_, _>>()?
                }
                "--pub-msgs" => o.pub_msgs = n(value()?)?,
                "--batch-msgs" => o.batch_msgs = n(value()?)?,
                "--chunk" => o.chunk = n(value()?)?.max(1),
                "--backlog-small" => o.backlog_small = n(value()?)?,
                "--backlog" => o.backlog = n(value()?)?,
                "--lat-msgs" => o.lat_msgs = n(value()?)?,
                "--lat-rate" => o.lat_rate = value()?.parse()?,
                "--lat-nodes" => {
                    o.lat_nodes = value()?
                        .split(',')
                        .map(|s| s.trim().parse())
                        .collect::<Result<_, _>>()?
                }
                "--lat-flush-interval" => o.lat_flush = value()?.parse()?,
                "--ready-backlog" => o.ready_backlog = n(value()?)?,
                "--agent-backlog" => o.agent_backlog = n(value()?)?,
                "--agent-bin" => o.agent_bin = Some(value()?.into()),
                "--history-ids" => o.history_ids = n(value()?)?.max(1),
                other if other.starts_with("--") => bail!("unknown option {other}"),
                _ => {} // a filter cargo may pass; ignored
            }
        }
        ensure!(
            o.backlog_small <= o.backlog,
            "--backlog-small must be <= --backlog"
        );
        Ok(o)
    }

    fn runs(&self, figure: u32) -> bool {
        self.only.is_empty() || self.only.contains(&figure)
    }
}

// ---------------------------------------------------------------------------
// Results table.

struct Row {
    figure: String,
    unit: &'static str,
    ours: Vec<f64>,
    base: Vec<f64>,
    target: String,
    met: Option<bool>,
}

fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

fn min_max(v: &[f64]) -> (f64, f64) {
    v.iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| {
            (a.min(*x), b.max(*x))
        })
}

fn fmt_num(x: f64) -> String {
    if !x.is_finite() {
        return "-".into();
    }
    let a = x.abs();
    if a >= 1e6 {
        format!("{:.2}M", x / 1e6)
    } else if a >= 1e4 {
        format!("{:.1}k", x / 1e3)
    } else if a >= 100.0 {
        format!("{x:.0}")
    } else if a >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

impl Row {
    fn ratio(&self) -> f64 {
        median(&self.ours) / median(&self.base)
    }
}

fn print_table(rows: &[Row]) {
    let header = [
        "figure",
        "unit",
        "invalog (median)",
        "spread (min–max)",
        "baseline (median)",
        "ratio",
        "target",
        "met?",
    ];
    let cells: Vec<[String; 8]> = rows
        .iter()
        .map(|r| {
            let (lo, hi) = min_max(&r.ours);
            [
                r.figure.clone(),
                r.unit.to_string(),
                fmt_num(median(&r.ours)),
                format!("{}–{}", fmt_num(lo), fmt_num(hi)),
                if r.base.is_empty() {
                    "-".into()
                } else {
                    fmt_num(median(&r.base))
                },
                if r.base.is_empty() {
                    "-".into()
                } else {
                    format!("{:.2}", r.ratio())
                },
                r.target.clone(),
                match r.met {
                    Some(true) => "yes".into(),
                    Some(false) => "NO".into(),
                    None => "-".into(),
                },
            ]
        })
        .collect();
    let mut width = header.map(|h| h.chars().count());
    for c in &cells {
        for (w, s) in width.iter_mut().zip(c) {
            *w = (*w).max(s.chars().count());
        }
    }
    let line = |c: &[String]| {
        let parts: Vec<String> = c
            .iter()
            .zip(width)
            .map(|(s, w)| format!("{s}{}", " ".repeat(w - s.chars().count())))
            .collect();
        println!("| {} |", parts.join(" | "));
    };
    line(&header.map(String::from));
    println!(
        "|{}|",
        width
            .iter()
            .map(|w| "-".repeat(w + 2))
            .collect::<Vec<_>>()
            .join("|")
    );
    for c in &cells {
        line(c);
    }
}

// ---------------------------------------------------------------------------
// Helpers.

fn content() -> RefresherDef {
    RefresherDef::new(Uuid::from_u128(1), "content").unwrap()
}

fn log_settings(stream: &str, prefix: &str) -> LogSettings {
    LogSettings {
        stream: stream.into(),
        subject_prefix: prefix.into(),
        ..LogSettings::default()
    }
}

async fn connect(url: &str) -> Result<jetstream::Context> {
    let client = async_nats::connect(url).await?;
    Ok(jetstream::new(client))
}

/// Deletes the stream if it exists and provisions it again, empty.
async fn fresh_stream(js: &jetstream::Context, log: &LogSettings) -> Result<()> {
    for _ in 0..5 {
        // A delete can time out on a loaded machine: check, and try again.
        let _ = js.delete_stream(&log.stream).await;
        invalog::provision(js, log).await?;
        if stream_last(js, log).await? == 0 {
            return Ok(());
        }
    }
    bail!("cannot empty stream {}", log.stream)
}

fn publisher(js: &jetstream::Context, log: &LogSettings) -> Publisher {
    Publisher::new(
        js.clone(),
        log.clone(),
        PublisherSettings::new("bench"),
        [content()],
    )
}

/// An invalog-encoded body of one batch (for same-size raw payloads).
fn sample_body(instructions: Vec<Instruction>) -> Vec<u8> {
    invalog::wire::encode(&invalog::Batch {
        id: Uuid::now_v7(),
        origin: "bench".into(),
        published_at: SystemTime::now(),
        refresher: content(),
        provenance: Provenance::default(),
        applied_at_origin: false,
        instructions,
    })
}

fn single(i: usize) -> Instruction {
    Instruction::RefreshIds(vec![i as i64])
}

fn hundred(i: usize) -> Vec<Instruction> {
    (0..100)
        .map(|k| Instruction::RefreshIds(vec![(i * 100 + k) as i64]))
        .collect()
}

/// Which headers a raw publish sets.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Headers {
    None,
    /// `Nats-Msg-Id` (the baseline the issue asks for).
    Id,
    /// `Nats-Msg-Id` and `Invalog-Format`, the headers invalog sends.
    IdAndFormat,
}

/// Raw async-nats: sends `n` payloads pipelined `chunk` at a time (all
/// sent, then every ack awaited), each with a unique `Nats-Msg-Id`.
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

/// invalog: `Publisher::publish_many`, `chunk` messages per call.
async fn invalog_publish(
    p: &Publisher,
    n: usize,
    chunk: usize,
    make: impl Fn(usize) -> Vec<Instruction>,
) -> Result<(Duration, u64)> {
    let started = Instant::now();
    let mut sent = 0;
    let mut last = 0;
    while sent < n {
        let end = (sent + chunk).min(n);
        let groups = (sent..end).map(|i| ("content", make(i)));
        let receipt = p.publish_many(groups, &Provenance::default()).await?;
        ensure!(
            receipt.messages.len() == end - sent,
            "one message per group"
        );
        last = receipt.sequence().unwrap_or(last);
        sent = end;
    }
    Ok((started.elapsed(), last))
}

async fn stream_last(js: &jetstream::Context, log: &LogSettings) -> Result<u64> {
    let mut s = js.get_stream(&log.stream).await?;
    Ok(s.info().await?.state.last_sequence)
}

/// A refresher that does nothing (figures 2 and 4).
struct Noop;

#[async_trait]
impl Refresher for Noop {
    async fn refresh_all(&self) -> RefreshResult {
        Ok(())
    }
    async fn apply(&self, _context: BatchContext<'_>) -> RefreshResult {
        Ok(())
    }
}

fn noop_registry() -> Registry {
    let mut r = Registry::new();
    r.register(content(), Noop).unwrap();
    r
}

static NODE_COUNTER: AtomicU64 = AtomicU64::new(0);

fn node_settings(policy: NewNodePolicy) -> NodeSettings {
    let n = NODE_COUNTER.fetch_add(1, Relaxed);
    let mut s =
        NodeSettings::new(NodeId::new(format!("bench-{}-{n}", std::process::id())).unwrap());
    s.new_node = policy;
    s
}

// ---------------------------------------------------------------------------
// Figure 1: publish throughput.

async fn figure_1(o: &Opts, url: &str, rows: &mut Vec<Row>) -> Result<()> {
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
        let (d, last) = invalog_publish(&p, o.pub_msgs, o.chunk, |i| vec![single(i)]).await?;
        let allocs = ALLOCS.load(Relaxed) - allocs;
        ensure!(last == o.pub_msgs as u64, "stored {last} of {}", o.pub_msgs);
        ours1.push(o.pub_msgs as f64 / d.as_secs_f64());
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
        let (d, last) = invalog_publish(&p, o.batch_msgs, o.chunk, hundred).await?;
        ensure!(
            last == o.batch_msgs as u64,
            "stored {last} of {}",
            o.batch_msgs
        );
        ours100_m.push(o.batch_msgs as f64 / d.as_secs_f64());
        ours100_i.push(100.0 * o.batch_msgs as f64 / d.as_secs_f64());
        println!(
            "  run {}: raw+id {:.0} msg/s, raw no id {:.0} msg/s, raw+id+format {:.0} msg/s ({:.1} allocs/msg), invalog {:.0} msg/s ({:.1} allocs/msg); 100-batches raw {:.0} msg/s, invalog {:.0} msg/s",
            rep + 1,
            raw1[rep],
            raw1_noid[rep],
            raw1_both[rep],
            raw_allocs as f64 / o.pub_msgs as f64,
            ours1[rep],
            allocs as f64 / o.pub_msgs as f64,
            raw100[rep],
            ours100_m[rep]
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
        base: raw1,
        target: ">= 0.90 of raw".into(),
        met: Some(r1 >= 0.9),
    });
    rows.push(Row {
        figure: "1a' same, raw without Nats-Msg-Id (info)".into(),
        unit: "msg/s",
        ours: ours1.clone(),
        base: raw1_noid,
        target: "-".into(),
        met: None,
    });
    rows.push(Row {
        figure: "1a'' same, raw with invalog's 2 headers (info)".into(),
        unit: "msg/s",
        ours: ours1.clone(),
        base: raw1_both,
        target: "-".into(),
        met: None,
    });
    rows.push(Row {
        figure: "1b publish, 100-instruction msgs (vs raw same size)".into(),
        unit: "msg/s",
        ours: ours100_m,
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

// ---------------------------------------------------------------------------
// Figure 2: catch-up, and figure 5 on the same stream.

async fn fill(
    js: &jetstream::Context,
    log: &LogSettings,
    from: usize,
    to: usize,
    ids: usize,
) -> Result<()> {
    let p = publisher(js, log);
    let mut i = from;
    while i < to {
        let end = (i + 1000).min(to);
        p.publish_many(
            (i..end).map(|k| ("content", vec![single(k % ids)])),
            &Provenance::default(),
        )
        .await?;
        i = end;
    }
    Ok(())
}

async fn raw_catch_up(url: &str, log: &LogSettings, filter: String) -> Result<(Duration, u64)> {
    let js = connect(url).await?;
    let started = Instant::now();
    let mut stream = js.get_stream(&log.stream).await?;
    let last = stream.info().await?.state.last_sequence;
    let consumer = stream
        .create_consumer(pull::OrderedConfig {
            filter_subject: filter,
            deliver_policy: DeliverPolicy::All,
            ..Default::default()
        })
        .await?;
    let mut messages = consumer.messages().await?;
    let mut count = 0u64;
    while let Some(m) = messages.next().await {
        let m = m?;
        count += 1;
        let info = m.info().map_err(|e| anyhow::anyhow!("{e}"))?;
        if info.stream_sequence >= last {
            break;
        }
    }
    Ok((started.elapsed(), count))
}

struct CatchUp {
    elapsed: Duration,
    peak_heap: usize,
    hwm: usize,
    allocs: u64,
    restarts: u64,
    cold_boots: u64,
}

async fn invalog_catch_up(url: &str, log: &LogSettings, dir: &std::path::Path) -> Result<CatchUp> {
    let js = connect(url).await?;
    let path = dir.join(format!("catchup-{}.json", NODE_COUNTER.load(Relaxed)));
    reset_peak();
    let allocs = ALLOCS.load(Relaxed);
    let started = Instant::now();
    let node = Node::start(
        js,
        log.clone(),
        node_settings(NewNodePolicy::ReplayAll),
        noop_registry(),
        FileStore::new(&path),
    )
    .await?;
    node.ready().await?;
    let elapsed = started.elapsed();
    let allocs = ALLOCS.load(Relaxed) - allocs;
    let (peak_heap, hwm) = read_peak();
    let stats = node.stats();
    node.shutdown().await?;
    ensure!(
        stats.applied_messages > 0 || elapsed.is_zero(),
        "applied nothing: {stats:?}"
    );
    let _ = std::fs::remove_file(path);
    Ok(CatchUp {
        elapsed,
        peak_heap,
        hwm,
        allocs,
        restarts: stats.consumer_restarts,
        cold_boots: stats.cold_boots,
    })
}

async fn figure_2_and_5(
    o: &Opts,
    url: &str,
    dir: &std::path::Path,
    rows: &mut Vec<Row>,
) -> Result<()> {
    let js = connect(url).await?;
    let log = log_settings("BENCH_LOG", "blog");
    fresh_stream(&js, &log).await?;
    let filter = log.all_subjects();
    let mut peaks = vec![];
    for (k, size) in [o.backlog_small, o.backlog].into_iter().enumerate() {
        let have = stream_last(&js, &log).await? as usize;
        let t = Instant::now();
        fill(&js, &log, have, size, o.history_ids).await?;
        println!(
            "figure 2: backlog of {size} single-instruction messages (filled in {:.1?})",
            t.elapsed()
        );
        if !o.runs(2) {
            continue;
        }
        let (mut raw, mut ours, mut heap, mut hwm) = (vec![], vec![], vec![], vec![]);
        for rep in 0..o.repeats {
            let (d, n) = raw_catch_up(url, &log, filter.clone()).await?;
            ensure!(n == size as u64, "raw read {n} of {size}");
            raw.push(size as f64 / d.as_secs_f64());
            let c = invalog_catch_up(url, &log, dir).await?;
            ours.push(size as f64 / c.elapsed.as_secs_f64());
            heap.push(c.peak_heap as f64);
            hwm.push(c.hwm as f64);
            println!(
                "  run {}: raw {:.0} msg/s, invalog {:.0} instr/s, peak heap {:.1} MiB, VmHWM {:.1} MiB, {:.1} allocs/msg, {} consumer restarts, {} cold boots",
                rep + 1,
                raw[rep],
                ours[rep],
                c.peak_heap as f64 / 1048576.0,
                c.hwm as f64 / 1048576.0,
                c.allocs as f64 / size as f64,
                c.restarts,
                c.cold_boots
            );
        }
        let ratio = median(&ours) / median(&raw);
        rows.push(Row {
            figure: format!("2 catch-up, backlog {}", fmt_num(size as f64)),
            unit: "instr/s",
            ours,
            base: raw,
            target: ">= 0.80 of raw".into(),
            met: Some(ratio >= 0.8),
        });
        peaks.push((size, median(&heap), median(&hwm)));
        let _ = k;
    }
    if let [(s_small, h_small, w_small), (s_big, h_big, w_big)] = peaks[..] {
        println!(
            "  peak heap during catch-up: {:.1} MiB at {} vs {:.1} MiB at {} (VmHWM {:.1} vs {:.1} MiB)",
            h_small / 1048576.0, s_small, h_big / 1048576.0, s_big, w_small / 1048576.0, w_big / 1048576.0
        );
        rows.push(Row {
            figure: format!(
                "2' peak heap, backlog {} (baseline: {})",
                fmt_num(s_big as f64),
                fmt_num(s_small as f64)
            ),
            unit: "MiB",
            ours: vec![h_big / 1048576.0],
            base: vec![h_small / 1048576.0],
            target: "no growth (<= 1.25x)".into(),
            met: Some(h_big <= 1.25 * h_small),
        });
    }
    if o.runs(5) {
        figure_5(o, url, &log, rows).await?;
    }
    let _ = js.delete_stream(&log.stream).await;
    Ok(())
}

// ---------------------------------------------------------------------------
// Figure 5: history query for one id.

async fn figure_5(o: &Opts, url: &str, log: &LogSettings, rows: &mut Vec<Row>) -> Result<()> {
    use invalog::history::{Query, Target};
    let js = connect(url).await?;
    let total = stream_last(&js, log).await?;
    let id = (o.history_ids / 2) as i64 + 42 % o.history_ids as i64;
    let expected = (0..total as usize)
        .filter(|k| (k % o.history_ids) as i64 == id)
        .count();
    println!("figure 5: every instruction that touched id {id} in a {total}-message stream ({expected} expected)");
    let subject = log.subject(&content().name);
    let (mut raw, mut ours) = (vec![], vec![]);
    for rep in 0..o.repeats {
        let (d, n) = raw_catch_up(url, log, subject.clone()).await?;
        ensure!(n == total, "raw read {n}");
        raw.push(d.as_secs_f64() * 1e3);
        let started = Instant::now();
        let query = Query {
            refreshers: vec![content().name],
            target: Some(Target::id(id)),
            ..Query::default()
        };
        let mut reader = invalog::history::read(&js, log, query).await?;
        let mut found = 0;
        while let Some(entry) = reader.next().await? {
            ensure!(entry.batch.is_ok(), "decodes");
            found += 1;
        }
        let d = started.elapsed();
        ensure!(
            found == expected,
            "history found {found}, expected {expected}"
        );
        ours.push(d.as_secs_f64() * 1e3);
        println!(
            "  run {}: raw scan {:.0} ms, invalog history {:.0} ms ({found} entries)",
            rep + 1,
            raw[rep],
            ours[rep]
        );
    }
    rows.push(Row {
        figure: format!(
            "5 history of one id, {} msgs (raw: filtered scan)",
            fmt_num(total as f64)
        ),
        unit: "ms",
        ours,
        base: raw,
        target: "-".into(),
        met: None,
    });
    Ok(())
}

// ---------------------------------------------------------------------------
// Figure 3: propagation latency.

struct Lat {
    base: Instant,
    sent: Vec<AtomicU64>,
    worst: Vec<AtomicU64>,
    hits: Vec<AtomicU32>,
}

impl Lat {
    fn new(n: usize) -> Arc<Lat> {
        Arc::new(Lat {
            base: Instant::now(),
            sent: (0..n).map(|_| AtomicU64::new(0)).collect(),
            worst: (0..n).map(|_| AtomicU64::new(0)).collect(),
            hits: (0..n).map(|_| AtomicU32::new(0)).collect(),
        })
    }
    fn now(&self) -> u64 {
        self.base.elapsed().as_nanos() as u64
    }
    fn record(&self, i: usize) {
        if i < self.sent.len() {
            let now = self.now();
            self.worst[i].fetch_max(now.saturating_sub(self.sent[i].load(Relaxed)), Relaxed);
            self.hits[i].fetch_add(1, Relaxed);
        }
    }
    async fn wait_all(&self, count: u32) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.hits.iter().any(|h| h.load(Relaxed) < count) {
            ensure!(
                Instant::now() < deadline,
                "not every message arrived on every node"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(())
    }
    /// [p50, p99, p99.9, max] in µs.
    fn percentiles(&self) -> [f64; 4] {
        let mut v: Vec<u64> = self.worst.iter().map(|w| w.load(Relaxed)).collect();
        v.sort_unstable();
        let at =
            |p: f64| v[((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1] as f64 / 1e3;
        [
            at(0.5),
            at(0.99),
            at(0.999),
            *v.last().unwrap() as f64 / 1e3,
        ]
    }
}

struct LatRefresher(Arc<Lat>);

#[async_trait]
impl Refresher for LatRefresher {
    async fn refresh_all(&self) -> RefreshResult {
        Ok(())
    }
    async fn apply(&self, context: BatchContext<'_>) -> RefreshResult {
        if let Some(Instruction::RefreshIds(ids)) = context.batch.instructions.first() {
            self.0.record(ids[0] as usize);
        }
        Ok(())
    }
}

/// Publishes `n` messages at `rate`/s; `send(i)` publishes message `i`.
async fn paced<F, Fut>(lat: &Arc<Lat>, n: usize, rate: f64, send: F) -> Result<()>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Result<()>> + Send + 'static,
{
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        tick.tick().await;
        lat.sent[i].store(lat.now(), Relaxed);
        tasks.push(tokio::spawn(send(i)));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

async fn raw_latency(
    o: &Opts,
    url: &str,
    log: &LogSettings,
    payload_len: usize,
    consumers: usize,
) -> Result<[f64; 4]> {
    let lat = Lat::new(o.lat_msgs);
    let mut readers = Vec::with_capacity(consumers);
    for _ in 0..consumers {
        let consumer_js = connect(url).await?;
        let stream = consumer_js.get_stream(&log.stream).await?;
        let consumer = stream
            .create_consumer(pull::OrderedConfig {
                filter_subject: log.all_subjects(),
                deliver_policy: DeliverPolicy::New,
                ..Default::default()
            })
            .await?;
        let mut messages = consumer.messages().await?;
        let l = lat.clone();
        readers.push(tokio::spawn(async move {
            while let Some(Ok(m)) = messages.next().await {
                if m.payload.len() >= 8 {
                    l.record(u64::from_le_bytes(m.payload[..8].try_into().unwrap()) as usize);
                }
            }
        }));
    }
    let js = connect(url).await?;
    let subject = log.subject(&content().name);
    let run = Uuid::now_v7();
    paced(&lat, o.lat_msgs, o.lat_rate, |i| {
        let js = js.clone();
        let subject = subject.clone();
        let mut body = vec![b' '; payload_len.max(8)];
        body[..8].copy_from_slice(&(i as u64).to_le_bytes());
        async move {
            let m = PublishMessage::build()
                .payload(body.into())
                .message_id(format!("{run}-{i}"));
            js.send_publish(subject, m).await?.await?;
            Ok(())
        }
    })
    .await?;
    lat.wait_all(consumers as u32).await?;
    for reader in readers {
        reader.abort();
    }
    Ok(lat.percentiles())
}

async fn invalog_latency(
    o: &Opts,
    url: &str,
    log: &LogSettings,
    nodes: usize,
    dir: &std::path::Path,
) -> Result<[f64; 4]> {
    let lat = Lat::new(o.lat_msgs);
    let mut running = Vec::with_capacity(nodes);
    for k in 0..nodes {
        let js = connect(url).await?;
        let mut registry = Registry::new();
        registry.register(content(), LatRefresher(lat.clone()))?;
        let path = dir.join(format!("lat-{}-{k}.json", NODE_COUNTER.load(Relaxed)));
        let mut settings = node_settings(NewNodePolicy::Tail);
        settings.flush_interval = Duration::from_secs_f64(o.lat_flush);
        let node = Node::start(js, log.clone(), settings, registry, FileStore::new(path)).await?;
        running.push(node);
    }
    for node in &running {
        node.ready().await?;
    }
    let js = connect(url).await?;
    let p = publisher(&js, log);
    paced(&lat, o.lat_msgs, o.lat_rate, |i| {
        let p = p.clone();
        async move {
            p.refresh_ids("content", &[i as i64]).await?;
            Ok(())
        }
    })
    .await?;
    lat.wait_all(nodes as u32).await?;
    for node in &running {
        node.shutdown().await?;
    }
    Ok(lat.percentiles())
}

async fn figure_3(o: &Opts, url: &str, dir: &std::path::Path, rows: &mut Vec<Row>) -> Result<()> {
    let js = connect(url).await?;
    let log = log_settings("BENCH_LAT", "blat");
    fresh_stream(&js, &log).await?;
    let payload_len = sample_body(vec![single(1234)]).len();
    println!(
        "figure 3: {} messages at {}/s, publish -> applied on all of {:?} nodes; raw: publish -> ordered consumer",
        o.lat_msgs, o.lat_rate, o.lat_nodes
    );
    let mut raw: Vec<[f64; 4]> = vec![];
    let mut ours: Vec<Vec<[f64; 4]>> = vec![vec![]; o.lat_nodes.len()];
    let mut fan: Vec<Vec<[f64; 4]>> = vec![vec![]; o.lat_nodes.len()];
    for rep in 0..o.repeats {
        let r = raw_latency(o, url, &log, payload_len, 1).await?;
        println!(
            "  run {}: raw          p50 {:.0} p99 {:.0} p99.9 {:.0} max {:.0} µs",
            rep + 1,
            r[0],
            r[1],
            r[2],
            r[3]
        );
        raw.push(r);
        for (k, &n) in o.lat_nodes.iter().enumerate() {
            let r = invalog_latency(o, url, &log, n, dir).await?;
            println!(
                "  run {}: {n:>3} node(s) p50 {:.0} p99 {:.0} p99.9 {:.0} max {:.0} µs",
                rep + 1,
                r[0],
                r[1],
                r[2],
                r[3]
            );
            ours[k].push(r);
            if n > 1 {
                let r = raw_latency(o, url, &log, payload_len, n).await?;
                println!(
                    "  run {}: raw fan-out to {n} consumers p50 {:.0} p99 {:.0} p99.9 {:.0} max {:.0} µs",
                    rep + 1,
                    r[0],
                    r[1],
                    r[2],
                    r[3]
                );
                fan[k].push(r);
            }
        }
    }
    let col = |v: &[[f64; 4]], i: usize| v.iter().map(|x| x[i]).collect::<Vec<_>>();
    let raw_p99 = median(&col(&raw, 1));
    for (k, &n) in o.lat_nodes.iter().enumerate() {
        for (i, name) in ["p50", "p99", "p99.9", "max"].iter().enumerate() {
            let ours_i = col(&ours[k], i);
            let (target, met) = match (n, i) {
                (1, 1) => (
                    "<= 1.5x raw p99".to_string(),
                    Some(median(&ours_i) <= 1.5 * raw_p99),
                ),
                (10, 1) => ("<= 1000 µs".to_string(), Some(median(&ours_i) <= 1000.0)),
                _ => ("-".to_string(), None),
            };
            rows.push(Row {
                figure: format!("3 latency {name}, {n} node(s) (raw: 1 consumer)"),
                unit: "µs",
                ours: ours_i,
                base: col(&raw, i),
                target,
                met,
            });
        }
        if n > 1 {
            rows.push(Row {
                figure: format!("3' latency p99, {n} nodes vs raw fan-out to {n} consumers"),
                unit: "µs",
                ours: col(&ours[k], 1),
                base: col(&fan[k], 1),
                target: "-".into(),
                met: None,
            });
        }
    }
    let _ = js.delete_stream(&log.stream).await;
    Ok(())
}

// ---------------------------------------------------------------------------
// Figure 4: time to ready.

/// Runs this executable as a child that reads the backlog (`invalog`: a
/// node until ready; `raw`: an ordered consumer to the last message) and
/// returns the time from spawn to its "ready" line.
async fn child_ready(
    mode: &str,
    url: &str,
    log: &LogSettings,
    dir: &std::path::Path,
) -> Result<Duration> {
    use tokio::io::AsyncBufReadExt;
    let exe = std::env::current_exe()?;
    let started = Instant::now();
    let mut child = tokio::process::Command::new(exe)
        .args(["--child", mode, url, &log.stream, &log.subject_prefix])
        .arg(dir)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let line = lines.next_line().await?;
    let elapsed = started.elapsed();
    ensure!(line.as_deref() == Some("ready"), "child said {line:?}");
    child.wait().await?;
    Ok(elapsed)
}

/// The child side of `child_ready`.
fn child_main(args: &[String]) -> Result<()> {
    let [mode, url, stream, prefix, dir] = args else {
        bail!("--child MODE URL STREAM PREFIX DIR");
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let log = log_settings(stream, prefix);
        match mode.as_str() {
            "raw" => {
                raw_catch_up(url, &log, log.all_subjects()).await?;
            }
            "invalog" => {
                let js = connect(url).await?;
                let path = PathBuf::from(dir).join(format!("child-{}.json", std::process::id()));
                let node = Node::start(
                    js,
                    log,
                    node_settings(NewNodePolicy::ReplayAll),
                    noop_registry(),
                    FileStore::new(&path),
                )
                .await?;
                node.ready().await?;
                let _ = std::fs::remove_file(path);
            }
            other => bail!("unknown child mode {other}"),
        }
        println!("ready");
        Ok::<_, anyhow::Error>(())
    })?;
    std::process::exit(0);
}

fn agent_binary(o: &Opts) -> Option<PathBuf> {
    if let Some(p) = &o.agent_bin {
        return Some(p.clone());
    }
    if let Some(p) = option_env!("CARGO_BIN_EXE_invalog") {
        if std::path::Path::new(p).exists() {
            return Some(p.into());
        }
    }
    // target/<profile>/deps/invalog-<hash> -> target/<profile>/invalog
    let exe = std::env::current_exe().ok()?;
    let p = exe.parent()?.parent()?.join("invalog");
    p.exists().then_some(p)
}

async fn webhook_receiver() -> Result<(u16, Arc<AtomicU64>)> {
    use axum::{extract::State, http::StatusCode, routing::post, Router};
    let count = Arc::new(AtomicU64::new(0));
    async fn receive(State(c): State<Arc<AtomicU64>>, _body: Bytes) -> StatusCode {
        c.fetch_add(1, Relaxed);
        StatusCode::NO_CONTENT
    }
    let app = Router::new()
        .route("/invalidate", post(receive))
        .with_state(count.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((port, count))
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

async fn agent_ready(
    bin: &std::path::Path,
    url: &str,
    hook: u16,
    dir: &std::path::Path,
    run: usize,
) -> Result<Duration> {
    let http = free_port()?;
    let config = dir.join(format!("agent-{run}.toml"));
    std::fs::write(
        &config,
        format!(
            r#"
[node]
id = "bench-agent-{run}"
new_node = "replay_all"

[nats]
urls = ["{url}"]

[checkpoint]
store = "file"
path = "{dir}/agent-{run}.checkpoint.json"

[http]
listen = "127.0.0.1:{http}"

[logging]
level = "warn"

[[refreshers]]
name = "content"
id = "00000000-0000-0000-0000-000000000001"

[refreshers.applier]
kind = "webhook"
url = "http://127.0.0.1:{hook}/invalidate"
"#,
            dir = dir.display()
        ),
    )?;
    let client = reqwest::Client::new();
    let started = Instant::now();
    let mut child = tokio::process::Command::new(bin)
        .args(["agent", "--config"])
        .arg(&config)
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let readyz = format!("http://127.0.0.1:{http}/readyz");
    loop {
        if let Ok(r) = client.get(&readyz).send().await {
            if r.status().as_u16() == 200 {
                break;
            }
        }
        if let Some(status) = child.try_wait()? {
            bail!("agent exited with {status}");
        }
        ensure!(
            started.elapsed() < Duration::from_secs(300),
            "agent not ready in 300 s"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let elapsed = started.elapsed();
    child.start_kill()?;
    child.wait().await?;
    Ok(elapsed)
}

async fn figure_4(o: &Opts, url: &str, dir: &std::path::Path, rows: &mut Vec<Row>) -> Result<()> {
    let js = connect(url).await?;
    let log = log_settings("BENCH_READY", "bready");
    fresh_stream(&js, &log).await?;
    fill(&js, &log, 0, o.ready_backlog, usize::MAX).await?;
    println!("figure 4a: process start -> ready, backlog of {} (raw: process start -> ordered consumer at the end)", o.ready_backlog);
    let (mut raw, mut ours) = (vec![], vec![]);
    for rep in 0..o.repeats {
        raw.push(child_ready("raw", url, &log, dir).await?.as_secs_f64() * 1e3);
        ours.push(child_ready("invalog", url, &log, dir).await?.as_secs_f64() * 1e3);
        println!(
            "  run {}: raw {:.0} ms, invalog {:.0} ms",
            rep + 1,
            raw[rep],
            ours[rep]
        );
    }
    rows.push(Row {
        figure: format!(
            "4a process start -> ready, backlog {}",
            fmt_num(o.ready_backlog as f64)
        ),
        unit: "ms",
        ours,
        base: raw,
        target: "-".into(),
        met: None,
    });
    let _ = js.delete_stream(&log.stream).await;

    let Some(bin) = agent_binary(o) else {
        println!("figure 4b: skipped: no invalog binary (run `cargo build --release` or pass --agent-bin)");
        return Ok(());
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    // The agent's stream: the default INVALOG / invalog.
    let log = LogSettings::default();
    fresh_stream(&js, &log).await?;
    fill(&js, &log, 0, o.agent_backlog, usize::MAX).await?;
    let (hook, count) = webhook_receiver().await?;
    println!(
        "figure 4b: `{} agent` (webhook applier) start -> /readyz 200, backlog of {} (raw: process start -> ordered consumer at the end)",
        bin.display(),
        o.agent_backlog
    );
    let (mut raw, mut ours) = (vec![], vec![]);
    for rep in 0..o.repeats {
        raw.push(child_ready("raw", url, &log, dir).await?.as_secs_f64() * 1e3);
        let before = count.load(Relaxed);
        ours.push(agent_ready(&bin, url, hook, dir, rep).await?.as_secs_f64() * 1e3);
        let posts = count.load(Relaxed) - before;
        ensure!(
            posts >= o.agent_backlog as u64,
            "webhook got {posts} of {}",
            o.agent_backlog
        );
        println!(
            "  run {}: raw {:.0} ms, agent {:.0} ms ({posts} webhook POSTs)",
            rep + 1,
            raw[rep],
            ours[rep]
        );
    }
    rows.push(Row {
        figure: format!(
            "4b agent start -> /readyz 200, backlog {}",
            fmt_num(o.agent_backlog as f64)
        ),
        unit: "ms",
        ours,
        base: raw,
        target: "-".into(),
        met: None,
    });
    let _ = js.delete_stream(&log.stream).await;
    Ok(())
}

// ---------------------------------------------------------------------------

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

async fn run(o: Opts) -> Result<()> {
    let server = invalog::embedded::NatsServer::start().await?;
    let url = server.url();
    let dir = tempfile::tempdir()?;
    println!(
        "invalog bench ({} mode, {} repeats), nats-server at {url}, file storage; load average {}",
        if o.smoke { "smoke" } else { "full" },
        o.repeats,
        load_average()
    );
    let mut rows = vec![];
    if o.runs(1) {
        figure_1(&o, &url, &mut rows).await?;
    }
    if o.runs(2) || o.runs(5) {
        figure_2_and_5(&o, &url, dir.path(), &mut rows).await?;
    }
    if o.runs(3) {
        figure_3(&o, &url, dir.path(), &mut rows).await?;
    }
    if o.runs(4) {
        figure_4(&o, &url, dir.path(), &mut rows).await?;
    }
    println!();
    println!("load average at the end: {}", load_average());
    print_table(&rows);
    Ok(())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--child") {
        return child_main(&args[1..]);
    }
    let mut all: Vec<String> = std::env::var("INVALOG_BENCH_ARGS")
        .map(|s| s.split_whitespace().map(String::from).collect())
        .unwrap_or_default();
    all.extend(args);
    let opts = Opts::parse(&all)?;
    // `RUST_LOG=invalog=warn` shows why a node restarted its consumer, etc.
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run(opts))
}
