//! Figure 2: catch-up. Fills a stream of single-instruction messages, then
//! times a new node replaying it to `ready()` against a raw ordered consumer
//! reading it to the end, with peak memory; figure 5 runs on the same stream.

use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use async_nats::jetstream;
use invalog::node::NewNodePolicy;
use invalog::{FileStore, LogSettings, Node, Provenance};

use crate::alloc::{read_peak, reset_peak, ALLOCS};
use crate::common::{
    connect, fresh_stream, log_settings, node_settings, noop_registry, publisher, single,
    stream_last, NODE_COUNTER,
};
use crate::history::figure_5;
use crate::opts::Opts;
use crate::table::{fmt_num, median, Row};

pub async fn fill(
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

/// The raw side of figures 2 and 4: the fastest raw reader found
/// (`raw_readers::FASTEST`), from connect to the stream's last message.
pub async fn raw_catch_up(url: &str, log: &LogSettings, filter: String) -> Result<(Duration, u64)> {
    crate::raw_readers::read(crate::raw_readers::FASTEST, url, log, filter).await
}

struct CatchUp {
    elapsed: Duration,
    peak_heap: usize,
    hwm: usize,
    allocs: u64,
    restarts: u64,
    cold_boots: u64,
}

async fn invalog_catch_up(url: &str, log: &LogSettings, dir: &Path) -> Result<CatchUp> {
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

pub async fn figure_2_and_5(o: &Opts, url: &str, dir: &Path, rows: &mut Vec<Row>) -> Result<()> {
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
            target: ">= 0.85 of raw".into(),
            met: Some(ratio >= 0.85),
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
    if crate::raw_readers::wanted(o) {
        crate::raw_readers::figure_6(o, url, &log, o.backlog, rows).await?;
    }
    if o.runs(5) {
        figure_5(o, url, &log, rows).await?;
    }
    let _ = js.delete_stream(&log.stream).await;
    Ok(())
}
