//! The agent's log on stderr, as docs/operations/logging.md describes it:
//! text without colour escape codes when stderr is a file or a pipe, and
//! JSON lines with `timestamp`, `level`, `fields` (the `message` and the
//! event's fields, such as `error`) and `target`.

use std::time::Duration;

use serde_json::Value;

use crate::agent_support::{agent_config, free_port, webhook, Agent, Hook};
use crate::python_publisher::ready;
use crate::support::{within, Fixture};

/// Runs an agent until ready, stops it, and returns its stderr.
async fn agent_log(f: &Fixture, node: &str, env: &[(&str, &str)]) -> String {
    let (_hook, hook_port) = Hook::start(Duration::ZERO).await;
    let port = free_port();
    let config = agent_config(f, node, port, &webhook(hook_port));
    let mut agent = Agent::spawn_env(&config, port, env);
    within(Duration::from_secs(30), ready(&agent)).await;
    agent.terminate();
    assert_eq!(agent.exit_code().await, 0);
    agent.log()
}

#[tokio::test]
async fn text_logs_in_a_file_have_no_colour_codes() {
    let f = Fixture::new().await;
    let log = agent_log(&f, "web-text", &[("INVALOG_LOGGING__FORMAT", "text")]).await;
    assert!(
        log.contains(" INFO ") && log.contains("agent running"),
        "{log}"
    );
    assert!(!log.contains('\u{1b}'), "escape codes in a file: {log:?}");
}

#[tokio::test]
async fn json_log_lines_have_the_documented_fields() {
    let f = Fixture::new().await;
    let log = agent_log(&f, "web-json", &[]).await;
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    for line in &lines {
        let keys: Vec<&str> = line
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        for key in ["timestamp", "level", "fields", "target"] {
            assert!(keys.contains(&key), "{key} in {line}");
        }
        assert!(line["fields"]["message"].is_string(), "{line}");
        let level = line["level"].as_str().unwrap();
        assert!(
            ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"].contains(&level),
            "{line}"
        );
    }
    let running = lines
        .iter()
        .find(|l| l["fields"]["message"] == "agent running")
        .unwrap_or_else(|| panic!("`agent running` in {log}"));
    assert_eq!(running["fields"]["node"], "web-json");
    assert_eq!(running["target"], "invalog_agent::run");
}
