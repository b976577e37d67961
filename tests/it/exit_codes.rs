//! Every exit code of README.md's table, from the real `invalog` binary:
//! one table of cases (command, standard input, expected code, what stderr
//! must and must not say) run against one server, plus the cases that
//! need a process to signal (`history --follow` stopped by Ctrl-C).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

use crate::agent_support::{client_config, free_port, BIN};
use crate::support::{within, Fixture};

/// One run of the binary and what it must give.
struct Case {
    name: &'static str,
    args: Vec<String>,
    stdin: &'static str,
    code: i32,
    /// Each must appear in stderr.
    says: Vec<&'static str>,
    /// Must appear in stderr exactly once (the error is not repeated).
    once: Option<&'static str>,
}

fn case(name: &'static str, args: &[&str], code: i32, says: &[&'static str]) -> Case {
    Case {
        name,
        args: args.iter().map(|a| a.to_string()).collect(),
        stdin: "",
        code,
        says: says.to_vec(),
        once: None,
    }
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

/// An agent configuration for the fixture's server; `extra` is appended.
fn agent_config(f: &Fixture, name: &str, http: u16, extra: &str) -> PathBuf {
    let file = f.dir.path().join(format!("{name}.toml"));
    let text = format!(
        "[node]\nid = \"{name}\"\n[nats]\nurls = [\"{url}\"]\n[checkpoint]\nstore = \"file\"\npath = \"{cp}\"\n[http]\nlisten = \"127.0.0.1:{http}\"\n[[refreshers]]\nname = \"content\"\nid = \"00000000-0000-0000-0000-000000000001\"\n[refreshers.applier]\nkind = \"command\"\nprogram = \"/bin/true\"\n{extra}\n",
        url = f.server.url(),
        cp = f.dir.path().join(format!("{name}.checkpoint.json")).display(),
    );
    std::fs::write(&file, text).unwrap();
    file
}

/// Runs a case in `dir` (where no `config/` directory is).
async fn run(c: &Case, dir: &Path) -> (i32, String) {
    let mut child = Command::new(BIN)
        .args(&c.args)
        .current_dir(dir)
        .env_remove("INVALOG_CONFIG")
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(c.stdin.as_bytes()).await.unwrap();
    drop(stdin);
    let out = within(Duration::from_secs(30), child.wait_with_output())
        .await
        .unwrap();
    let code = out.status.code().expect("exited, not killed by a signal");
    (code, String::from_utf8_lossy(&out.stderr).into_owned())
}

async fn messages(f: &Fixture) -> u64 {
    let mut stream = f.js.get_stream(&f.log.stream).await.unwrap();
    stream.info().await.unwrap().state.messages
}

#[tokio::test]
async fn every_documented_exit_code() {
    let f = Fixture::new().await;
    let client = path(&client_config(&f));
    let dir = f.dir.path();
    let typo = dir.join("typo.toml");
    std::fs::write(&typo, "[nats]\nulr = \"nats://127.0.0.1:4222\"\n").unwrap();
    let unreachable = dir.join("unreachable.toml");
    std::fs::write(
        &unreachable,
        format!(
            "[nats]\nurls = [\"nats://127.0.0.1:{}\"]\nconnect_timeout = \"1s\"\n[[refreshers]]\nname = \"content\"\nid = \"00000000-0000-0000-0000-000000000001\"\n",
            free_port()
        ),
    )
    .unwrap();
    // Exit 4: the stream exists on file; this agent wants it in memory.
    let memory = path(&agent_config(
        &f,
        "memory",
        free_port(),
        "[stream]\nprovision = \"update\"\nstorage = \"memory\"",
    ));
    let missing = path(&agent_config(
        &f,
        "missing",
        free_port(),
        "[stream]\nname = \"MISSING\"",
    ));
    // Exit 2: the agent's HTTP port is held by another process.
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy_port = busy.local_addr().unwrap().port();
    let busy_config = path(&agent_config(&f, "busy", busy_port, ""));
    // Exit 5: an entry of the presence bucket that is not a report.
    let kv =
        f.js.create_key_value(async_nats::jetstream::kv::Config {
            bucket: "invalog_nodes".into(),
            ..Default::default()
        })
        .await
        .unwrap();

    let before = messages(&f).await;
    let cases = vec![
        case(
            "0: published",
            &["publish", "-c", &client, "content", "refresh-ids", "1"],
            0,
            &[],
        ),
        case(
            "2: configuration with a typo",
            &["publish", "-c", &path(&typo), "content", "refresh-all"],
            2,
            &["nats.ulr", "did you mean `urls`"],
        ),
        case(
            "2: the default configuration file is missing",
            &["status"],
            2,
            &["config/publisher.toml", "-c", "INVALOG_CONFIG"],
        ),
        case(
            "2: an argument clap refuses",
            &["publish", "-c", &client, "content", "refresh-everything"],
            2,
            &["refresh-everything"],
        ),
        case(
            "2: publish to an unknown refresher",
            &["publish", "-c", &client, "contnet", "refresh-ids", "1"],
            2,
            &[
                "unknown refresher `contnet`; did you mean `content`?",
                "nothing was published",
            ],
        ),
        case(
            "2: a kind without its values",
            &["publish", "-c", &client, "content", "refresh-ids"],
            2,
            &["`refresh-ids` needs at least one value"],
        ),
        Case {
            stdin: "{\"refresher\":\"content\",\"instructions\":[{\"kind\":\"refresh_all\"}]}\n{\"refresher\":\"content\",\"instructions\":[{\"kind\":\"refresh_everything\"}]}\n",
            ..case(
                "2: --stdin with a bad second line publishes nothing",
                &["publish", "-c", &client, "--stdin"],
                2,
                &["stdin line 2, column ", "unknown variant `refresh_everything`", "nothing was published"],
            )
        },
        case(
            "2: explain a refresher nothing knows",
            &["explain", "-c", &client, "-r", "contnet", "--id", "1"],
            2,
            &["no refresher `contnet`", "did you mean `content`?"],
        ),
        Case {
            once: Some("cannot listen on"),
            ..case(
                "2: the agent's HTTP port is busy",
                &["agent", "-c", &busy_config],
                2,
                &["http.listen", "INVALOG_HTTP__LISTEN"],
            )
        },
        case(
            "1: the status cannot be read (no node has reported: no bucket)",
            &["status", "-c", &client, "--bucket", "nobody_reported"],
            1,
            &["does not exist"],
        ),
        case(
            "3: NATS unreachable",
            &["publish", "-c", &path(&unreachable), "content", "refresh-all"],
            3,
            &[],
        ),
        case(
            "4: the stream cannot be provisioned as configured",
            &["agent", "-c", &memory],
            4,
            &["storage"],
        ),
        case(
            "4: `stream show` of a stream that does not exist",
            &["stream", "show", "-c", &missing],
            4,
            &["MISSING"],
        ),
    ];
    let mut wrong = Vec::new();
    for c in &cases {
        let (code, stderr) = run(c, dir).await;
        let missing: Vec<&&str> = c.says.iter().filter(|s| !stderr.contains(*s)).collect();
        let repeated = c.once.is_some_and(|once| stderr.matches(once).count() != 1);
        if code != c.code || !missing.is_empty() || repeated {
            wrong.push(format!(
                "{}: exit {code} (want {}), missing {missing:?}, repeated: {repeated}; stderr:\n{stderr}",
                c.name, c.code
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert_eq!(
        messages(&f).await,
        before + 1,
        "only the first case published (the bad --stdin published nothing)"
    );
    drop(busy);

    // 5: a node's report is unreadable. 6: a required node never answers.
    kv.put("web-9", "not a report".into()).await.unwrap();
    let later = vec![
        case(
            "5: status with an unreadable report",
            &["status", "-c", &client],
            5,
            &[],
        ),
        case(
            "6: probe expecting a node that never answers",
            &[
                "probe",
                "-c",
                &client,
                "--node",
                "ghost",
                "--count",
                "1",
                "--timeout",
                "1s",
            ],
            6,
            &[],
        ),
    ];
    for c in &later {
        let (code, stderr) = run(c, dir).await;
        assert_eq!(code, c.code, "{}: stderr:\n{stderr}", c.name);
    }
}

/// `history --follow` ends with Ctrl-C (SIGINT) or SIGTERM and exits 0.
#[tokio::test]
async fn history_follow_stopped_by_ctrl_c_exits_0() {
    let f = Fixture::new().await;
    f.publisher().refresh_ids("content", &[1]).await.unwrap();
    let client = client_config(&f);
    for signal in ["-INT", "-TERM"] {
        let mut child = Command::new(BIN)
            .args(["history", "--follow", "-c"])
            .arg(&client)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        // The header and the first message: it is following.
        for _ in 0..2 {
            within(Duration::from_secs(15), lines.next_line())
                .await
                .unwrap()
                .unwrap();
        }
        let pid = child.id().unwrap().to_string();
        let sent = std::process::Command::new("kill")
            .args([signal, &pid])
            .status()
            .unwrap();
        assert!(sent.success());
        let status = within(Duration::from_secs(15), child.wait()).await.unwrap();
        assert_eq!(status.code(), Some(0), "{signal}: {status:?}");
    }
}
