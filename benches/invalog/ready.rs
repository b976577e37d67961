//! Figure 4: time to ready. 4a: this executable run as a child (`--child`)
//! that starts a node, or a raw ordered consumer, on a backlog; 4b: the
//! `invalog agent` binary with a webhook applier, until `/readyz` says 200,
//! with single-batch requests and with `max_batches_per_request`, against
//! the library (4a's child) and the raw reader on the same backlog.
//! Also the child side of `--child`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Result};
use bytes::Bytes;
use invalog::node::NewNodePolicy;
use invalog::{FileStore, LogSettings, Node};

use crate::catch_up::{fill, raw_catch_up};
use crate::common::{connect, fresh_stream, log_settings, node_settings, noop_registry};
use crate::opts::Opts;
use crate::table::{fmt_num, median, Row};

/// Runs this executable as a child that reads the backlog (`invalog`: a
/// node until ready; `raw`: an ordered consumer to the last message) and
/// returns the time from spawn to its "ready" line.
async fn child_ready(mode: &str, url: &str, log: &LogSettings, dir: &Path) -> Result<Duration> {
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
pub fn child_main(args: &[String]) -> Result<()> {
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
        if Path::new(p).exists() {
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
    // Counts batches: one per single-batch body, one per element of a
    // multi-batch body (each element has `"trigger":"batch",`).
    async fn receive(State(c): State<Arc<AtomicU64>>, body: Bytes) -> StatusCode {
        let needle = br#""trigger":"batch","#;
        let n = body.windows(needle.len()).filter(|w| w == needle).count();
        c.fetch_add(n as u64, Relaxed);
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
    bin: &Path,
    url: &str,
    hook: u16,
    dir: &Path,
    run: usize,
    max_batches: usize,
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
max_batches_per_request = {max_batches}
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

pub async fn figure_4(o: &Opts, url: &str, dir: &Path, rows: &mut Vec<Row>) -> Result<()> {
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
    // Per run: raw reader, the library (a node in a child process), the
    // agent with single-batch requests and with groups.
    let modes = [1, o.agent_max_batches];
    let (mut raw, mut lib, mut agents) = (vec![], vec![], [vec![], vec![]]);
    for rep in 0..o.repeats {
        raw.push(child_ready("raw", url, &log, dir).await?.as_secs_f64() * 1e3);
        lib.push(child_ready("invalog", url, &log, dir).await?.as_secs_f64() * 1e3);
        let mut line = format!(
            "  run {}: raw {:.0} ms, library {:.0} ms",
            rep + 1,
            raw[rep],
            lib[rep]
        );
        for (k, &max_batches) in modes.iter().enumerate() {
            let before = count.load(Relaxed);
            let run = rep * 2 + k;
            let ms = agent_ready(&bin, url, hook, dir, run, max_batches)
                .await?
                .as_secs_f64()
                * 1e3;
            agents[k].push(ms);
            let batches = count.load(Relaxed) - before;
            ensure!(
                batches >= o.agent_backlog as u64,
                "webhook got {batches} of {} batches",
                o.agent_backlog
            );
            line += &format!(", agent (max_batches_per_request {max_batches}) {ms:.0} ms");
        }
        println!("{line}");
    }
    let backlog = fmt_num(o.agent_backlog as f64);
    rows.push(Row {
        figure: format!("4b agent start -> /readyz 200, backlog {backlog} (raw reader)"),
        unit: "ms",
        ours: agents[0].clone(),
        base: raw.clone(),
        target: "-".into(),
        met: None,
    });
    for (k, max_batches) in modes.into_iter().enumerate() {
        let ratio = median(&agents[k]) / median(&lib);
        rows.push(Row {
            figure: format!(
                "4b agent, max_batches_per_request {max_batches}, backlog {backlog} (vs library)"
            ),
            unit: "ms",
            ours: agents[k].clone(),
            base: lib.clone(),
            target: "<= 2x library".into(),
            met: Some(ratio <= 2.0),
        });
    }
    let _ = js.delete_stream(&log.stream).await;
    Ok(())
}
