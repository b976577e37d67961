//! Figure 7: catch-up on a log with periodic refresh-alls (issue 14 item
//! 3). A backlog of `--backlog-small` one-id messages of one refresher, of
//! which every `PERIOD`th is a refresh-all of it, replayed to `ready()` by a
//! node whose refresher costs `ID_COST` per id batch and `ALL_COST` per
//! refresh-all (busy work, standing in for a cache that reads its source):
//! with the default lookahead (superseding on) against lookahead 0 (off),
//! in the same run. Prints what each applied and superseded.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use async_trait::async_trait;
use invalog::model::Instruction;
use invalog::node::{NewNodePolicy, DEFAULT_CATCH_UP_LOOKAHEAD};
use invalog::refresher::BatchContext;
use invalog::{FileStore, Node, Provenance, RefreshResult, Refresher, Registry};

use crate::common::{connect, content, fresh_stream, log_settings, node_settings, publisher};
use crate::opts::Opts;
use crate::table::{median, Row};

/// One message in this many is a refresh-all.
const PERIOD: usize = 2000;
/// What applying one batch of ids costs the refresher.
const ID_COST: Duration = Duration::from_micros(20);
/// What a refresh-all costs the refresher.
const ALL_COST: Duration = Duration::from_micros(500);

/// Spends `cost` of CPU, as a cache refresh would.
fn work(cost: Duration) {
    let until = Instant::now() + cost;
    while Instant::now() < until {
        std::hint::spin_loop();
    }
}

#[derive(Default)]
struct Costly {
    batches: AtomicU64,
}

#[async_trait]
impl Refresher for Costly {
    async fn refresh_all(&self) -> RefreshResult {
        work(ALL_COST);
        Ok(())
    }
    async fn apply(&self, context: BatchContext<'_>) -> RefreshResult {
        self.batches.fetch_add(1, Relaxed);
        for instruction in &context.batch.instructions {
            work(match instruction {
                Instruction::RefreshAll => ALL_COST,
                _ => ID_COST,
            });
        }
        Ok(())
    }
}

struct Run {
    elapsed: Duration,
    applied: u64,
    superseded: u64,
}

async fn catch_up(url: &str, lookahead: usize, dir: &std::path::Path) -> Result<Run> {
    let js = connect(url).await?;
    let log = log_settings("BENCH_SUP", "bsup");
    let mut settings = node_settings(NewNodePolicy::ReplayAll);
    settings.catch_up_lookahead = lookahead;
    let path = dir.join(format!("sup-{}.json", settings.node_id));
    let refresher = Arc::new(Costly::default());
    let mut registry = Registry::new();
    registry.register_arc(content(), refresher.clone())?;
    let started = Instant::now();
    let node = Node::start(js, log, settings, registry, FileStore::new(&path)).await?;
    node.ready().await?;
    let elapsed = started.elapsed();
    let stats = node.stats();
    node.shutdown().await?;
    let _ = std::fs::remove_file(path);
    Ok(Run {
        elapsed,
        applied: refresher.batches.load(Relaxed),
        superseded: stats.superseded,
    })
}

pub async fn figure_7(
    o: &Opts,
    url: &str,
    dir: &std::path::Path,
    rows: &mut Vec<Row>,
) -> Result<()> {
    let js = connect(url).await?;
    let log = log_settings("BENCH_SUP", "bsup");
    fresh_stream(&js, &log).await?;
    let size = o.backlog_small;
    let p = publisher(&js, &log);
    let mut i = 0;
    while i < size {
        let end = (i + 1000).min(size);
        let batches = (i..end).map(|k| {
            let instruction = if (k + 1) % PERIOD == 0 {
                Instruction::RefreshAll
            } else {
                Instruction::RefreshIds(vec![k as i64])
            };
            ("content", vec![instruction])
        });
        p.publish_many(batches, &Provenance::default()).await?;
        i = end;
    }
    println!(
        "figure 7: backlog of {size} messages, a refresh-all every {PERIOD}; refresher {ID_COST:?} per id batch, {ALL_COST:?} per refresh-all"
    );
    let (mut on, mut off) = (vec![], vec![]);
    for rep in 0..o.repeats {
        let with = catch_up(url, DEFAULT_CATCH_UP_LOOKAHEAD, dir).await?;
        let without = catch_up(url, 0, dir).await?;
        ensure!(
            without.superseded == 0,
            "lookahead 0 superseded {}",
            without.superseded
        );
        ensure!(
            with.applied + with.superseded == size as u64,
            "applied {} + superseded {} != {size}",
            with.applied,
            with.superseded
        );
        on.push(size as f64 / with.elapsed.as_secs_f64());
        off.push(size as f64 / without.elapsed.as_secs_f64());
        println!(
            "  run {}: lookahead {DEFAULT_CATCH_UP_LOOKAHEAD}: {:.2?}, {} batches applied, {} superseded; lookahead 0: {:.2?}, {} applied",
            rep + 1,
            with.elapsed,
            with.applied,
            with.superseded,
            without.elapsed,
            without.applied
        );
    }
    let ratio = median(&on) / median(&off);
    rows.push(Row {
        figure: format!(
            "7 catch-up, refresh-all every {PERIOD} (lookahead {DEFAULT_CATCH_UP_LOOKAHEAD} vs 0)"
        ),
        unit: "instr/s",
        ours: on,
        base: off,
        target: "faster than without".into(),
        met: Some(ratio > 1.0),
    });
    Ok(())
}
