//! Command-line options (also read from `INVALOG_BENCH_ARGS`): the smoke and
//! full default sizes, and the flags that override them.

use std::path::PathBuf;

use anyhow::{bail, ensure, Context as _, Result};

#[derive(Debug, Clone)]
pub struct Opts {
    pub smoke: bool,
    pub repeats: usize,
    pub only: Vec<u32>,
    /// Figure 1: single-instruction messages per sample.
    pub pub_msgs: usize,
    /// Figure 1: messages of 100 instructions per sample.
    pub batch_msgs: usize,
    /// Messages sent before awaiting acks (both raw and invalog).
    pub chunk: usize,
    /// Figure 2: the small and the large backlog (instructions = messages).
    pub backlog_small: usize,
    pub backlog: usize,
    /// Figure 3: messages per sample, rate, node counts.
    pub lat_msgs: usize,
    pub lat_rate: f64,
    pub lat_nodes: Vec<usize>,
    /// Figure 3: the nodes' `flush_interval` (seconds), default 1.
    pub lat_flush: f64,
    /// Figure 4: backlogs.
    pub ready_backlog: usize,
    pub agent_backlog: usize,
    /// Figure 4b: the agent's `max_batches_per_request` in its grouped run.
    pub agent_max_batches: usize,
    pub agent_bin: Option<PathBuf>,
    /// Figure 5: distinct ids in the figure-2 stream (each id appears
    /// backlog / history_ids times).
    pub history_ids: usize,
}

impl Opts {
    pub fn parse(args: &[String]) -> Result<Opts> {
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
                agent_max_batches: 100,
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
                agent_max_batches: 100,
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
                "--agent-max-batches" => o.agent_max_batches = n(value()?)?.max(1),
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

    pub fn runs(&self, figure: u32) -> bool {
        self.only.is_empty() || self.only.contains(&figure)
    }
}
