//! `invalog probe --serve`, the real binary against a real agent: its
//! `/metrics` shows the node with applied canaries rising, `/healthz`
//! answers, a node that stops cleanly is forgotten without a miss, SIGTERM
//! ends the probe with exit 0; and every metric name the
//! Prometheus rules and the Grafana dashboard in deploy/ use is served by
//! the agent's or the probe's `/metrics` (the rules also pass `promtool
//! check rules` where promtool is installed).

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

use crate::agent_support::{agent_config, client_config, free_port, webhook, Agent, Hook, BIN};
use crate::support::{within, Fixture};

/// A ready agent `web-1` (one `content` message applied, so per-refresher
/// series exist) and a probe service sending a canary every 100 ms.
async fn agent_and_probe(f: &Fixture) -> (Hook, Agent, Agent) {
    let (hook, hook_port) = Hook::start(Duration::ZERO).await;
    f.publisher().refresh_ids("content", &[1]).await.unwrap();
    let agent_port = free_port();
    let agent = Agent::spawn(
        &agent_config(f, "web-1", agent_port, &webhook(hook_port)),
        agent_port,
    );
    within(Duration::from_secs(30), async {
        while agent.get("/readyz").await.map(|(code, _)| code) != Some(200) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let probe_port = free_port();
    let log = tempfile::NamedTempFile::new().unwrap();
    let child = Command::new(BIN)
        .args(["probe", "-c"])
        .arg(client_config(f))
        .args(["--serve", &format!("127.0.0.1:{probe_port}")])
        .args(["--every", "100ms", "--timeout", "2s"])
        .stdout(Stdio::null())
        .stderr(Stdio::from(log.reopen().unwrap()))
        .kill_on_drop(true)
        .spawn()
        .expect("invalog probe starts");
    let probe = Agent {
        child,
        base: format!("http://127.0.0.1:{probe_port}"),
        stderr: Some(log),
    };
    (hook, agent, probe)
}

/// Waits until `/metrics` of `process` has `name` at `at_least` or more.
async fn metric_reaches(process: &Agent, name: &str, at_least: f64) -> f64 {
    within(Duration::from_secs(30), async {
        loop {
            match process.metric(name).await {
                Some(value) if value >= at_least => break value,
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    })
    .await
}

#[tokio::test]
async fn the_probe_service_counts_canaries_a_node_applies_and_exits_0_on_sigterm() {
    let f = Fixture::new().await;
    let (_hook, mut agent, mut probe) = agent_and_probe(&f).await;
    let applied = r#"invalog_probe_applied_total{node="web-1"}"#;
    let first = metric_reaches(&probe, applied, 3.0).await;
    metric_reaches(&probe, applied, first + 5.0).await;
    let within_1s = r#"invalog_probe_applied_within_total{node="web-1",within="1"}"#;
    assert!(probe.metric(within_1s).await.unwrap() >= 1.0);
    let count = r#"invalog_probe_latency_seconds_count{node="web-1"}"#;
    assert!(probe.metric(count).await.unwrap() >= first);
    metric_reaches(&probe, "invalog_probe_fleet_applied_total", 3.0).await;
    assert_eq!(
        probe.metric("invalog_probe_nodes_answering").await,
        Some(1.0)
    );
    let published = probe
        .metric("invalog_probe_canaries_published_total")
        .await
        .unwrap();
    assert!(published >= first, "{published}");
    assert_eq!(
        probe
            .metric("invalog_probe_canaries_publish_failed_total")
            .await,
        Some(0.0)
    );
    assert_eq!(
        probe
            .metric(r#"invalog_probe_missed_total{node="web-1"}"#)
            .await,
        Some(0.0),
        "no canary missed; the series starts at 0"
    );
    let (code, body) = probe.get("/healthz").await.unwrap();
    assert_eq!((code, body.as_str()), (200, "ok\n"));

    // The node stops cleanly (a rolling restart): its presence report says
    // so, the probe forgets it, and counts no canary as missed.
    agent.terminate();
    assert_eq!(agent.exit_code().await, 0);
    within(Duration::from_secs(30), async {
        while probe.metric(applied).await.is_some() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    let published = "invalog_probe_canaries_published_total";
    let now = probe.metric(published).await.unwrap();
    metric_reaches(&probe, published, now + 30.0).await;
    assert_eq!(
        probe.metric("invalog_probe_fleet_missed_total").await,
        Some(0.0)
    );

    probe.terminate();
    assert_eq!(probe.exit_code().await, 0, "{}", probe.log());
    assert!(probe.log().contains("probe service publishing canaries"));
}

#[tokio::test]
async fn every_metric_the_deploy_rules_and_dashboard_use_is_served() {
    let f = Fixture::new().await;
    let (_hook, agent, probe) = agent_and_probe(&f).await;
    metric_reaches(&probe, r#"invalog_probe_applied_total{node="web-1"}"#, 1.0).await;
    let mut served = BTreeSet::new();
    for process in [&agent, &probe] {
        let (_, text) = process.get("/metrics").await.unwrap();
        served.extend(metric_names(&text));
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let rules = std::fs::read_to_string(root.join("deploy/prometheus/invalog-rules.yml")).unwrap();
    let dashboard =
        std::fs::read_to_string(root.join("deploy/grafana/invalog-dashboard.json")).unwrap();
    let dashboard: serde_json::Value =
        serde_json::from_str(&dashboard).expect("the dashboard is JSON");
    let exprs = dashboard_exprs(&dashboard);
    assert!(exprs.len() >= 5, "panels with queries: {exprs:?}");
    let used: BTreeSet<String> = exprs
        .iter()
        .map(String::as_str)
        .chain([rules.as_str()])
        .flat_map(used_names)
        .collect();
    for required in [
        "invalog_lag_seconds",
        "invalog_ready",
        "invalog_escalations_total",
        "invalog_cold_boots_total",
        "invalog_duplicate_node_id",
        "invalog_probe_missed_total",
        "invalog_probe_latency_seconds_bucket",
    ] {
        assert!(used.contains(required), "deploy/ does not use {required}");
    }
    let unknown: Vec<&String> = used.difference(&served).collect();
    assert!(unknown.is_empty(), "used but not served: {unknown:?}");

    match std::process::Command::new("promtool")
        .args(["check", "rules"])
        .arg(root.join("deploy/prometheus/invalog-rules.yml"))
        .output()
    {
        Ok(out) => assert!(
            out.status.success(),
            "promtool check rules: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(_) => {
            // No promtool here: at least the shape of every rule.
            assert!(rules.starts_with("groups:") || rules.contains("\ngroups:"));
            let alerts = rules.matches("- alert: ").count();
            assert!(alerts >= 7, "alerts: {alerts}");
            assert_eq!(rules.matches("\n        expr: ").count(), alerts);
        }
    }
}

/// Every sample name a `/metrics` text can have: the names of its samples,
/// and of its `# TYPE` families with their suffixes (a family may have no
/// sample yet, such as a counter of misses).
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        if let Some(family) = line.strip_prefix("# TYPE ") {
            let (name, kind) = family.split_once(' ').unwrap();
            let suffixes: &[&str] = match kind {
                "counter" => &["_total"],
                "histogram" => &["_bucket", "_count", "_sum"],
                "info" => &["_info"],
                _ => &[""],
            };
            names.extend(suffixes.iter().map(|s| format!("{name}{s}")));
        } else if !line.starts_with('#') {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            names.insert(line[..end].to_owned());
        }
    }
    names
}

/// The `expr` of every panel target.
fn dashboard_exprs(dashboard: &serde_json::Value) -> Vec<String> {
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            out.push(target["expr"].as_str().expect("a target expr").to_owned());
        }
    }
    out
}

/// The `invalog_…` names in PromQL text.
fn used_names(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("invalog_") {
        let tail = &rest[start..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.push(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}
