//! The soak's report: every acknowledged canary is inside a fault window
//! when it was sent from [`BEFORE`] before a fault's start to the settle
//! margin after its heal, else outside. Per node and for the fleet (a
//! canary counts for the fleet once every node answered it; its latency is
//! the slowest node's), the share applied within 100 ms and within 1 s,
//! and the number never applied, inside and outside; publish failures are
//! counted apart (nobody is expected to apply a canary whose publish
//! failed; those applied nevertheless are counted too).
//!
//! Answers are core NATS messages and can be lost with a connection. An
//! unanswered canary at or below a node's final applied sequence, on a node
//! that never cold booted nor saw a gap (so it applied every sequence up to
//! there, in order), counts as *answer lost*, not as never applied.

use std::fmt::Write;
use std::time::{Duration, Instant};

use super::canaries::{Record, Sent};
use super::driver::FaultWindow;

/// A canary sent this long before a fault began may still be in flight
/// when it begins: it counts as inside the window.
pub const BEFORE: Duration = Duration::from_secs(1);

/// One row's counts.
#[derive(Debug, Default, Clone)]
pub struct Row {
    pub canaries: u64,
    pub within_100ms: u64,
    pub within_1s: u64,
    pub never: u64,
    /// Applied (the node's position passed it) but no answer arrived.
    pub answer_lost: u64,
    /// Latencies of the answered canaries, for percentiles.
    pub latencies: Vec<Duration>,
}

impl Row {
    fn add(&mut self, latency: Option<Duration>, applied: bool) {
        self.canaries += 1;
        match latency {
            None if applied => self.answer_lost += 1,
            None => self.never += 1,
            Some(l) => {
                self.within_100ms += u64::from(l <= Duration::from_millis(100));
                self.within_1s += u64::from(l <= Duration::from_secs(1));
                self.latencies.push(l);
            }
        }
    }

    fn percentile(&self, p: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let mut sorted = self.latencies.clone();
        sorted.sort_unstable();
        let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
        sorted[rank.clamp(1, sorted.len()) - 1]
    }

    /// Share within 100 ms, of all canaries of the row (never applied
    /// ones included).
    pub fn share_100ms(&self) -> f64 {
        share(self.within_100ms, self.canaries)
    }
}

fn share(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        return 100.0;
    }
    100.0 * part as f64 / whole as f64
}

/// The report: per node then the fleet, inside (0) and outside (1).
#[derive(Debug)]
pub struct Report {
    pub nodes: Vec<String>,
    /// `rows[node][inside?0:1]`; the last entry is the fleet.
    pub rows: Vec<[Row; 2]>,
    pub sent: u64,
    pub acknowledged: u64,
    pub publish_failed: u64,
    pub failed_but_applied: u64,
    /// Outside fault windows, each second (after the first canary) in
    /// which some node took more than 100 ms: (second, answers over 100 ms,
    /// slowest answer, slowest node).
    pub slow_seconds: Vec<(u64, u64, Duration, String)>,
}

impl Report {
    /// The fleet's rows.
    pub fn fleet(&self) -> &[Row; 2] {
        self.rows.last().expect("the fleet row")
    }

    /// Never applied, anywhere.
    pub fn never(&self) -> u64 {
        self.rows[..self.nodes.len()]
            .iter()
            .map(|r| r[0].never + r[1].never)
            .sum()
    }

    /// Answers lost, anywhere.
    pub fn answers_lost(&self) -> u64 {
        self.rows[..self.nodes.len()]
            .iter()
            .map(|r| r[0].answer_lost + r[1].answer_lost)
            .sum()
    }
}

fn inside(sent: &Sent, windows: &[FaultWindow], settle: Duration) -> bool {
    windows
        .iter()
        .any(|w| sent.at + BEFORE >= w.start && sent.at <= w.healed + settle)
}

/// Builds the report of `record` for `nodes`; `applied_through[n]` is the
/// sequence node `n` is known to have applied every sequence up to
/// (`None`: not known).
pub fn build(
    record: &Record,
    nodes: &[String],
    applied_through: &[Option<u64>],
    windows: &[FaultWindow],
    settle: Duration,
) -> Report {
    let mut rows = vec![<[Row; 2]>::default(); nodes.len() + 1];
    let (mut acknowledged, mut publish_failed, mut failed_but_applied) = (0, 0, 0);
    let mut slow: std::collections::BTreeMap<u64, (u64, Duration, String)> = Default::default();
    let first = record.canaries.first().map(|c| c.at);
    for sent in &record.canaries {
        let sequence = match &sent.outcome {
            Some(Ok(sequence)) => {
                acknowledged += 1;
                *sequence
            }
            _ => {
                publish_failed += 1;
                failed_but_applied += u64::from(sent.answers.iter().any(Option::is_some));
                continue;
            }
        };
        let side = if inside(sent, windows, settle) { 0 } else { 1 };
        for (node, latency) in sent.answers.iter().enumerate() {
            let applied = applied_through[node].is_some_and(|a| a >= sequence);
            rows[node][side].add(*latency, applied);
            match (side, latency) {
                (1, Some(l)) if *l > Duration::from_millis(100) => {
                    let second = sent.at.duration_since(first.unwrap_or(sent.at)).as_secs();
                    let entry = slow.entry(second).or_insert((0, *l, nodes[node].clone()));
                    entry.0 += 1;
                    if *l > entry.1 {
                        (entry.1, entry.2) = (*l, nodes[node].clone());
                    }
                }
                _ => {}
            }
        }
        let fleet = if sent.answers.iter().all(Option::is_some) {
            sent.answers.iter().flatten().max().copied()
        } else {
            None
        };
        let applied = applied_through
            .iter()
            .all(|a| a.is_some_and(|a| a >= sequence));
        rows[nodes.len()][side].add(fleet, applied);
    }
    Report {
        nodes: nodes.to_vec(),
        rows,
        sent: record.canaries.len() as u64,
        acknowledged,
        publish_failed,
        failed_but_applied,
        slow_seconds: slow
            .into_iter()
            .map(|(s, (n, l, node))| (s, n, l, node))
            .collect(),
    }
}

/// The report as a table.
pub fn render(report: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<8} {:<7} {:>8} {:>10} {:>10} {:>6} {:>5} {:>9} {:>9} {:>9}",
        "node", "window", "canaries", "<=100ms %", "<=1s %", "never", "lost", "p99", "p99.9", "max"
    );
    let names = report.nodes.iter().map(String::as_str).chain(["fleet"]);
    for (name, rows) in names.zip(&report.rows) {
        for (side, row) in ["inside", "outside"].iter().zip(rows) {
            let _ = writeln!(
                out,
                "{:<8} {:<7} {:>8} {:>10.4} {:>10.4} {:>6} {:>5} {:>9.1?} {:>9.1?} {:>9.1?}",
                name,
                side,
                row.canaries,
                row.share_100ms(),
                share(row.within_1s, row.canaries),
                row.never,
                row.answer_lost,
                row.percentile(99.0),
                row.percentile(99.9),
                row.percentile(100.0),
            );
        }
    }
    let _ = writeln!(
        out,
        "canaries sent {}, acknowledged {}, publish failed {} (of which applied nevertheless {})",
        report.sent, report.acknowledged, report.publish_failed, report.failed_but_applied
    );
    let _ = writeln!(
        out,
        "outside fault windows, seconds with answers over 100 ms (second: answers, slowest):"
    );
    for (second, count, latency, node) in report.slow_seconds.iter().take(40) {
        let _ = writeln!(out, "  {second:>5} s: {count:>4}, {latency:.1?} ({node})");
    }
    out
}

/// Seconds since `origin`, for printing windows.
pub fn offset(origin: Instant, at: Instant) -> f64 {
    at.saturating_duration_since(origin).as_secs_f64()
}
