//! Figure 3: propagation latency. Paced publishes, timed from just before the
//! publish to the refresher's `apply` on the last of N nodes, against a raw
//! ordered consumer (and a raw fan-out to N consumers).

use std::path::Path;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use async_nats::jetstream::{consumer::pull, consumer::DeliverPolicy, message::PublishMessage};
use async_trait::async_trait;
use futures::StreamExt;
use invalog::node::NewNodePolicy;
use invalog::{
    BatchContext, FileStore, Instruction, LogSettings, Node, RefreshResult, Refresher, Registry,
};
use uuid::Uuid;

use crate::common::{
    connect, content, fresh_stream, log_settings, node_settings, publisher, sample_body, single,
    NODE_COUNTER,
};
use crate::opts::Opts;
use crate::table::{median, Row};

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
    dir: &Path,
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

pub async fn figure_3(o: &Opts, url: &str, dir: &Path, rows: &mut Vec<Row>) -> Result<()> {
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
