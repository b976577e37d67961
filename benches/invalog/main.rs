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
//!
//! This file holds the entry point: it reads the options, runs the chosen
//! figures against one embedded nats-server and prints the table; with
//! `--child` it is instead the child process figure 4 starts
//! (`ready::child_main`). The modules: `opts` (options), `alloc` (the
//! counting allocator), `table` (rows and the printed table), `common`
//! (shared helpers), and one per figure: `publish` (1), `catch_up` (2),
//! `latency` (3), `ready` (4), `history` (5), `raw_readers` (6: the raw
//! readers tried for figure 2's baseline), `supersede` (7: catch-up with
//! periodic refresh-alls).

mod alloc;
mod catch_up;
mod common;
mod history;
mod latency;
mod opts;
mod publish;
mod raw_readers;
mod ready;
mod supersede;
mod table;

use anyhow::Result;

use crate::opts::Opts;

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

async fn run(o: Opts) -> Result<()> {
    let server = invalog_nats_server::NatsServer::start().await?;
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
        publish::figure_1(&o, &url, &mut rows).await?;
    }
    if o.runs(2) || o.runs(5) || raw_readers::wanted(&o) {
        catch_up::figure_2_and_5(&o, &url, dir.path(), &mut rows).await?;
    }
    if o.runs(3) {
        latency::figure_3(&o, &url, dir.path(), &mut rows).await?;
    }
    if o.runs(4) {
        ready::figure_4(&o, &url, dir.path(), &mut rows).await?;
    }
    if o.runs(7) {
        supersede::figure_7(&o, &url, dir.path(), &mut rows).await?;
    }
    println!();
    println!("load average at the end: {}", load_average());
    table::print_table(&rows);
    Ok(())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--child") {
        return ready::child_main(&args[1..]);
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
