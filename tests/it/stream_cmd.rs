//! Who owns the stream: agents with different `[stream]` settings both
//! start (the second warns, naming the differences and the commands), and
//! `invalog stream show | provision | edit` against a real server, with
//! changes that delete messages refused (exit 4) unless --allow-data-loss.

use std::path::{Path, PathBuf};
use std::time::Duration;

use invalog::LogSettings;
use tokio::process::Command;

use crate::agent_support::{agent_config, free_port, webhook, Agent, Hook, BIN};
use crate::python_publisher::ready;
use crate::support::{within, Fixture};

/// The stream's config on the server.
async fn stream_config(f: &Fixture) -> async_nats::jetstream::stream::Config {
    let mut stream = f.js.get_stream(&f.log.stream).await.unwrap();
    stream.info().await.unwrap().config.clone()
}

/// Runs `invalog <args>`: exit code, stdout, stderr.
async fn invalog(args: &[&str], config: &Path) -> (i32, String, String) {
    let out = within(
        Duration::from_secs(30),
        Command::new(BIN).args(args).arg("-c").arg(config).output(),
    )
    .await
    .unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (
        out.status.code().unwrap(),
        text(&out.stdout),
        text(&out.stderr),
    )
}

/// A configuration with the fixture's server and `stream` as `[stream]`.
fn config(f: &Fixture, name: &str, stream: &str) -> PathBuf {
    let path = f.dir.path().join(name);
    let text = format!(
        "[nats]\nurls = [\"{}\"]\n\n[stream]\n{stream}\n",
        f.server.url()
    );
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test]
async fn agents_with_different_stream_settings_both_start_and_the_second_warns() {
    // The stream as config/agent.toml creates it: with limits.
    let limited = LogSettings {
        max_messages: Some(1_000_000),
        max_bytes: Some(10 << 30),
        ..LogSettings::default()
    };
    let f = Fixture::with_log(limited).await;
    let (_hook, hook_port) = Hook::start(Duration::ZERO).await;
    let same = [
        ("INVALOG_STREAM__MAX_MESSAGES", "1000000"),
        ("INVALOG_STREAM__MAX_BYTES", "10GiB"),
    ];

    // An agent with the default [stream] (no limits, default `provision`).
    let port_b = free_port();
    let b = Agent::spawn(
        &agent_config(&f, "web-b", port_b, &webhook(hook_port)),
        port_b,
    );
    within(Duration::from_secs(30), ready(&b)).await;
    let warning = b
        .log()
        .lines()
        .find(|l| l.contains("\"WARN\"") && l.contains("differ"))
        .unwrap_or_else(|| panic!("a warning about the stream: {}", b.log()))
        .to_owned();
    for expected in [
        "max_messages: 1000000 -> unlimited",
        "max_bytes: 10GiB -> unlimited",
        "invalog stream show --config",
        "invalog stream provision --config",
    ] {
        assert!(warning.contains(expected), "{expected:?} in {warning}");
    }
    let kept = stream_config(&f).await;
    assert_eq!(
        (kept.max_messages, kept.max_bytes),
        (1_000_000, 10 << 30),
        "the stream is left as it is"
    );

    // An agent with the stream's settings starts too, and again after a
    // restart (which used to exit 4 once the stream had been widened).
    let port_a = free_port();
    let config_a = agent_config(&f, "web-a", port_a, &webhook(hook_port));
    for _ in 0..2 {
        let mut a = Agent::spawn_env(&config_a, port_a, &same);
        within(Duration::from_secs(30), ready(&a)).await;
        assert!(!a.log().contains("\"WARN\""), "{}", a.log());
        a.terminate();
        assert_eq!(a.exit_code().await, 0);
    }
    assert!(b.get("/readyz").await.is_some_and(|(code, _)| code == 200));
}

#[tokio::test]
async fn an_agent_with_provision_update_changes_the_stream_but_not_at_a_loss() {
    let f = Fixture::new().await;
    let (_hook, hook_port) = Hook::start(Duration::ZERO).await;
    let port = free_port();
    let config = agent_config(&f, "web-u", port, &webhook(hook_port));
    let update = ("INVALOG_STREAM__PROVISION", "update");
    let mut agent = Agent::spawn_env(&config, port, &[update, ("INVALOG_STREAM__MAX_AGE", "30d")]);
    within(Duration::from_secs(30), ready(&agent)).await;
    let age = stream_config(&f).await.max_age;
    assert_eq!(age, Duration::from_secs(30 * 86_400));
    agent.terminate();
    assert_eq!(agent.exit_code().await, 0);

    let mut agent = Agent::spawn_env(&config, port, &[update, ("INVALOG_STREAM__MAX_AGE", "1d")]);
    assert_eq!(agent.exit_code().await, 4, "{}", agent.log());
    let log = agent.log();
    for expected in [
        "max_age: 30d -> 1d",
        "invalog stream provision --config <file> --allow-data-loss",
    ] {
        assert!(log.contains(expected), "{expected:?} in {log}");
    }
}

#[tokio::test]
async fn stream_show_provision_and_edit_refuse_data_loss_unless_allowed() {
    let f = Fixture::new().await;
    let shorter = config(&f, "shorter.toml", "max_age = \"1d\"");
    let file = shorter.display().to_string();

    let (code, out, _) = invalog(&["stream", "show"], &shorter).await;
    assert_eq!(code, 0);
    let row = |out: &str, field: &str| -> Vec<String> {
        let line = out.lines().find(|l| l.starts_with(&format!("{field} ")));
        let line = line.unwrap_or_else(|| panic!("{field} in {out}"));
        line.split_whitespace().map(str::to_owned).collect()
    };
    assert_eq!(row(&out, "max_age"), ["max_age", "7d", "1d", "differs"]);
    assert_eq!(row(&out, "allow_direct"), ["allow_direct", "true", "true"]);
    assert_eq!(
        row(&out, "max_bytes"),
        ["max_bytes", "unlimited", "unlimited"]
    );
    assert!(
        out.contains(&format!("invalog stream provision -c {file}")),
        "{out}"
    );

    let (code, _, err) = invalog(&["stream", "provision"], &shorter).await;
    assert_eq!(code, 4, "{err}");
    for expected in [
        "refusing a change that can delete messages (max_age: 7d -> 1d)",
        &format!("invalog stream provision --config {file} --allow-data-loss"),
    ] {
        assert!(err.contains(expected), "{expected:?} in {err}");
    }
    assert_eq!(
        stream_config(&f).await.max_age,
        Duration::from_secs(7 * 86_400)
    );

    let (code, out, err) = invalog(&["stream", "provision", "--allow-data-loss"], &shorter).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("updated: max_age: 7d -> 1d"), "{out}");
    assert_eq!(stream_config(&f).await.max_age, Duration::from_secs(86_400));
    let (code, out, _) = invalog(&["stream", "provision"], &shorter).await;
    assert_eq!((code, out.trim()), (0, "stream INVALOG: unchanged"));

    // edit: only the settings named; lossy ones need --allow-data-loss.
    let edit = ["stream", "edit", "--max-age", "1h", "--max-bytes", "1GiB"];
    let (code, _, err) = invalog(&edit, &shorter).await;
    assert_eq!(code, 4, "{err}");
    assert!(
        err.contains("(max_age: 1d -> 1h, max_bytes: unlimited -> 1GiB)")
            && err.contains("run the same command with --allow-data-loss"),
        "{err}"
    );
    let (code, out, err) = invalog(&[&edit[..], &["--allow-data-loss"]].concat(), &shorter).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("max_age: 1d -> 1h, max_bytes: unlimited -> 1GiB"),
        "{out}"
    );
    let edited = stream_config(&f).await;
    assert_eq!(
        (edited.max_age, edited.max_bytes),
        (Duration::from_secs(3600), 1 << 30)
    );
    assert_eq!(
        edited.duplicate_window,
        Duration::from_secs(120),
        "others kept"
    );
    let widen = ["stream", "edit", "--max-age", "unlimited"];
    assert_eq!(
        invalog(&widen, &shorter).await.0,
        0,
        "widening loses nothing"
    );
    assert_eq!(stream_config(&f).await.max_age, Duration::ZERO);

    // A stream that does not exist: show and edit say how to create it.
    let other = config(
        &f,
        "other.toml",
        "name = \"OTHER\"\nsubject_prefix = \"other\"",
    );
    for args in [
        &["stream", "show"][..],
        &["stream", "edit", "--replicas", "1"],
    ] {
        let (code, _, err) = invalog(args, &other).await;
        assert_eq!(code, 4, "{args:?}: {err}");
        let fix = format!("invalog stream provision -c {}", other.display());
        assert!(
            err.contains("does not exist") && err.contains(&fix),
            "{err}"
        );
    }
    let (code, out, err) = invalog(&["stream", "provision"], &other).await;
    assert_eq!((code, out.trim()), (0, "stream OTHER: created"), "{err}");
}
