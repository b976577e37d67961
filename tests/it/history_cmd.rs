//! `invalog history` and `invalog explain`, through the library
//! (`invalog::history`) and the real binary: every filter, the table and
//! the JSON lines, `--follow`, `--since` starting at the right sequence,
//! the read leaving no consumer behind, explain's answer per node from real
//! presence reports, and a stream of 100,000 messages where a refresher +
//! id query and a `since` query are timed against a full scan (printed with
//! `--nocapture`; no timing assertions).

use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use std::future::IntoFuture;

use async_nats::jetstream::{self, message::PublishMessage};
use futures::StreamExt;
use invalog::fleet::explain;
use invalog::history::{self, Limit, Query, Target};
use invalog::node::NewNodePolicy;
use invalog::presence::{Presence, PresenceSettings};
use invalog::{Batch, Instruction, Provenance, RefresherDef, RefresherName};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use uuid::Uuid;

use crate::agent_support::client_config;
use crate::support::{defs, within, Fixture, TestNode};

const BIN: &str = env!("CARGO_BIN_EXE_invalog");

fn name(n: &str) -> RefresherName {
    RefresherName::new(n).unwrap()
}

/// Runs the binary to completion: (exit code, stdout, stderr).
pub(crate) async fn invalog(args: &[&str]) -> (i32, String, String) {
    let out = within(
        Duration::from_secs(60),
        Command::new(BIN).args(args).env_remove("RUST_LOG").output(),
    )
    .await
    .expect("the binary runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn json_lines(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn seqs(lines: &[Value]) -> Vec<u64> {
    lines
        .iter()
        .map(|l| l["sequence"].as_u64().unwrap())
        .collect()
}

fn batch(
    def: &RefresherDef,
    origin: &str,
    actor: Option<&str>,
    instructions: Vec<Instruction>,
) -> Batch {
    Batch {
        id: Uuid::now_v7(),
        origin: origin.into(),
        published_at: SystemTime::now(),
        refresher: def.clone(),
        provenance: Provenance {
            actor: actor.map(str::to_owned),
            reason: actor.map(|_| "fix #42".to_owned()),
            trace_id: None,
        },
        applied_at_origin: false,
        instructions,
    }
}

/// Publishes one batch (or raw bytes on a subject) and returns its sequence.
async fn put(f: &Fixture, subject: &str, body: Vec<u8>) -> u64 {
    f.js.publish(subject.to_owned(), body.into())
        .await
        .unwrap()
        .await
        .unwrap()
        .sequence
}

async fn put_batch(f: &Fixture, b: &Batch) -> u64 {
    put(
        f,
        &f.log.subject(&b.refresher.name),
        invalog::wire::encode(b),
    )
    .await
}

async fn read_all(f: &Fixture, query: Query) -> Vec<u64> {
    let mut reader = history::read(&f.js, &f.log, query).await.unwrap();
    let mut out = Vec::new();
    while let Some(e) = within(Duration::from_secs(10), reader.next())
        .await
        .unwrap()
    {
        out.push(e.sequence);
    }
    out
}

async fn consumers(f: &Fixture) -> usize {
    let mut stream = f.js.get_stream(&f.log.stream).await.unwrap();
    stream.info().await.unwrap().state.consumer_count
}

/// The small log every filter test reads: sequence → what.
///  1 content  web-1 ops   refresh_ids [42, 7]
///  2 media    web-1 -     refresh_ids [42]
///  3 content  web-2 -     refresh_keys ["home", "42"]
///  4 content  web-2 ops   refresh_all
///  5 other    cms   alice remove_uuids [u]
///  6 content  (undecodable)
///  7 content  cms   -     refresh_payloads [{"id": 42}]
///  8 content  web-1 -     remove_ids [9]
async fn small_log(f: &Fixture) -> Uuid {
    let d = defs();
    let u = Uuid::from_u128(0xfeed);
    let s = [
        put_batch(
            f,
            &batch(
                &d[0],
                "web-1",
                Some("ops"),
                vec![Instruction::RefreshIds(vec![42, 7])],
            ),
        )
        .await,
        put_batch(
            f,
            &batch(
                &d[1],
                "web-1",
                None,
                vec![Instruction::RefreshIds(vec![42])],
            ),
        )
        .await,
        put_batch(
            f,
            &batch(
                &d[0],
                "web-2",
                None,
                vec![Instruction::RefreshKeys(vec!["home".into(), "42".into()])],
            ),
        )
        .await,
        put_batch(
            f,
            &batch(&d[0], "web-2", Some("ops"), vec![Instruction::RefreshAll]),
        )
        .await,
        put_batch(
            f,
            &batch(
                &d[2],
                "cms",
                Some("alice"),
                vec![Instruction::RemoveUuids(vec![u])],
            ),
        )
        .await,
        put(f, "invalog.content", b"{not json".to_vec()).await,
        put_batch(
            f,
            &batch(
                &d[0],
                "cms",
                None,
                vec![Instruction::RefreshPayloads(vec![
                    serde_json::json!({"id": 42}),
                ])],
            ),
        )
        .await,
        put_batch(
            f,
            &batch(&d[0], "web-1", None, vec![Instruction::RemoveIds(vec![9])]),
        )
        .await,
    ];
    assert_eq!(s, [1, 2, 3, 4, 5, 6, 7, 8]);
    u
}

#[tokio::test]
async fn library_filters_ranges_and_limits() {
    let f = Fixture::new().await;
    let u = small_log(&f).await;
    let q = |adjust: fn(&mut Query)| {
        let mut q = Query::default();
        adjust(&mut q);
        q
    };
    assert_eq!(
        read_all(&f, Query::default()).await,
        [1, 2, 3, 4, 5, 6, 7, 8]
    );
    // Server-side subject filters: one refresher, several.
    assert_eq!(
        read_all(&f, q(|q| q.refreshers = vec![name("media")])).await,
        [2]
    );
    assert_eq!(
        read_all(&f, q(|q| q.refreshers = vec![name("media"), name("other")])).await,
        [2, 5]
    );
    // An entry: listed ids and keys, refresh_all, payload mentions, and the
    // undecodable message (nodes refresh everything for it).
    let id42 = Query {
        refreshers: vec![name("content")],
        target: Some(Target::parse("42")),
        ..Query::default()
    };
    assert_eq!(read_all(&f, id42.clone()).await, [1, 3, 4, 6, 7]);
    let only_int = Query {
        target: Some(Target::id(42)),
        ..id42.clone()
    };
    assert_eq!(read_all(&f, only_int).await, [1, 4, 6, 7]);
    let home = Query {
        target: Some(Target::key("home")),
        ..id42.clone()
    };
    assert_eq!(read_all(&f, home).await, [3, 4, 6]);
    assert_eq!(
        read_all(
            &f,
            q(|q| q.target = Some(Target::parse("00000000-0000-0000-0000-00000000feed")))
        )
        .await,
        [4, 5, 6]
    );
    assert_eq!(Target::uuid(u).to_string(), u.to_string());
    // Origin and actor (an undecodable message has neither).
    assert_eq!(
        read_all(&f, q(|q| q.origin = Some("web-2".into()))).await,
        [3, 4]
    );
    assert_eq!(
        read_all(&f, q(|q| q.actor = Some("ops".into()))).await,
        [1, 4]
    );
    // Sequence ranges and limits.
    assert_eq!(
        read_all(
            &f,
            q(|q| {
                q.from_seq = Some(3);
                q.to_seq = Some(5)
            })
        )
        .await,
        [3, 4, 5]
    );
    assert_eq!(
        read_all(&f, q(|q| q.from_seq = Some(9))).await,
        Vec::<u64>::new()
    );
    assert_eq!(read_all(&f, q(|q| q.limit = Limit::First(2))).await, [1, 2]);
    assert_eq!(
        read_all(&f, q(|q| q.limit = Limit::Last(3))).await,
        [6, 7, 8]
    );
    let last_two = Query {
        limit: Limit::Last(2),
        ..id42.clone()
    };
    assert_eq!(read_all(&f, last_two).await, [6, 7]);
    assert_eq!(
        read_all(
            &f,
            q(|q| {
                q.limit = Limit::Last(2);
                q.to_seq = Some(4)
            })
        )
        .await,
        [3, 4]
    );
    // A refresher nobody published to: the server says nothing is pending.
    assert_eq!(
        read_all(&f, q(|q| q.refreshers = vec![name("nobody")])).await,
        Vec::<u64>::new()
    );
    // The compatibility wrapper.
    let range = history::read_range(&f.js, &f.log, 2, Some(4), 10)
        .await
        .unwrap();
    assert_eq!(
        range.iter().map(|e| e.sequence).collect::<Vec<_>>(),
        [2, 3, 4]
    );
    assert!(range[0].batch.is_ok());
    // A bad range is a typed error, not an empty answer.
    let bad = history::read(
        &f.js,
        &f.log,
        q(|q| {
            q.from_seq = Some(5);
            q.to_seq = Some(2)
        }),
    )
    .await;
    assert!(matches!(bad, Err(history::HistoryError::Query(_))));
    // The stream adapter, and no consumer is left behind.
    let reader = history::read(&f.js, &f.log, Query::default())
        .await
        .unwrap();
    let all: Vec<_> = reader.into_stream().collect().await;
    assert_eq!(all.len(), 8);
    assert_eq!(
        consumers(&f).await,
        0,
        "reads delete their ordered consumer"
    );
    let missing = invalog::LogSettings {
        stream: "NOPE".into(),
        ..f.log.clone()
    };
    let err = history::read(&f.js, &missing, Query::default())
        .await
        .err()
        .unwrap();
    assert_eq!(err.to_string(), "stream `NOPE` does not exist");
}

#[tokio::test]
async fn since_starts_at_the_right_sequence() {
    let f = Fixture::new().await;
    let p = f.publisher();
    for i in 0..5 {
        p.refresh_ids("content", &[i]).await.unwrap();
    }
    // The time the server stored message 6 is the `--since` of this test.
    let sixth = p
        .refresh_ids("media", &[6])
        .await
        .unwrap()
        .sequence()
        .unwrap();
    for i in 7..=10 {
        p.refresh_ids("content", &[i]).await.unwrap();
    }
    let at = history::read_range(&f.js, &f.log, sixth, Some(sixth), 1)
        .await
        .unwrap()[0]
        .stored_at;
    let since = Query {
        since: Some(at),
        ..Query::default()
    };
    let reader = history::read(&f.js, &f.log, since.clone()).await.unwrap();
    assert_eq!(
        reader.to_scan(),
        5,
        "the server starts at the time, not at sequence 1"
    );
    drop(reader);
    assert_eq!(read_all(&f, since).await, [6, 7, 8, 9, 10]);
    let until = Query {
        until: Some(at),
        ..Query::default()
    };
    assert_eq!(read_all(&f, until).await, [1, 2, 3, 4, 5, 6]);

    let config = client_config(&f);
    let config = config.to_str().unwrap();
    let since = invalog::wire::format_time(at);
    let (code, out, err) = invalog(&["history", "-c", config, "--since", &since, "--json"]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(seqs(&json_lines(&out)), [6, 7, 8, 9, 10]);
    let (code, out, _) = invalog(&["history", "-c", config, "--since", "1h", "--json"]).await;
    assert_eq!(code, 0);
    assert_eq!(json_lines(&out).len(), 10);
    let (code, out, _) = invalog(&["history", "-c", config, "--until", "1h ago", "--json"]).await;
    assert_eq!((code, out.as_str()), (0, ""));
    let (code, _, err) = invalog(&["history", "-c", config, "--since", "yesterday"]).await;
    assert_eq!(code, 2);
    assert!(err.contains("RFC 3339"), "{err}");
}

#[tokio::test]
async fn binary_prints_a_table_and_json_lines_for_every_filter() {
    let f = Fixture::new().await;
    small_log(&f).await;
    let config = client_config(&f);
    let config = config.to_str().unwrap();
    let run = |extra: &'static [&'static str]| {
        let mut args = vec!["history", "-c", config, "--json"];
        args.extend_from_slice(extra);
        async move {
            let (code, out, err) = invalog(&args).await;
            assert_eq!(code, 0, "{args:?}: {err}");
            seqs(&json_lines(&out))
        }
    };
    assert_eq!(run(&[]).await, [1, 2, 3, 4, 5, 6, 7, 8]);
    assert_eq!(
        run(&["--refresher", "media", "--refresher", "other"]).await,
        [2, 5]
    );
    assert_eq!(run(&["--refresher", "media,other"]).await, [2, 5]);
    assert_eq!(
        run(&["--refresher", "content", "--id", "42"]).await,
        [1, 3, 4, 6, 7]
    );
    assert_eq!(run(&["--origin", "web-2"]).await, [3, 4]);
    assert_eq!(run(&["--actor", "ops"]).await, [1, 4]);
    assert_eq!(run(&["--from-seq", "3", "--to-seq", "5"]).await, [3, 4, 5]);
    assert_eq!(run(&["--limit", "2"]).await, [1, 2]);
    assert_eq!(run(&["--last", "2"]).await, [7, 8]);

    // JSON lines carry everything: the batch as stored, or the error.
    let (_, out, _) = invalog(&[
        "history",
        "-c",
        config,
        "--json",
        "--id",
        "42",
        "--refresher",
        "content",
    ])
    .await;
    let lines = json_lines(&out);
    let first = &lines[0];
    assert_eq!(first["format"], 1);
    assert_eq!(first["subject"], "invalog.content");
    assert_eq!(first["refresher"], "content");
    assert_eq!(first["touch"], "listed");
    assert!(first["stored_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(first["batch"]["origin"], "web-1");
    assert_eq!(first["batch"]["actor"], "ops");
    assert_eq!(
        first["batch"]["instructions"][0]["ids"],
        serde_json::json!([42, 7])
    );
    assert_eq!(first["error"], Value::Null);
    let batch = invalog::wire::decode(first["batch"].to_string().as_bytes()).unwrap();
    assert_eq!(batch.instructions, [Instruction::RefreshIds(vec![42, 7])]);
    let touches: Vec<_> = lines.iter().map(|l| l["touch"].as_str().unwrap()).collect();
    assert_eq!(
        touches,
        ["listed", "listed", "refresh_all", "undecodable", "in_json"]
    );
    assert_eq!(lines[3]["batch"], Value::Null);
    assert!(lines[3]["error"]
        .as_str()
        .unwrap()
        .starts_with("message is not valid JSON"));

    // The table: aligned columns, provenance, the undecodable message.
    let (code, out, err) = invalog(&["history", "-c", config]).await;
    assert_eq!(code, 0, "{err}");
    let rows: Vec<&str> = out.lines().collect();
    assert_eq!(rows.len(), 9, "{out}");
    let header = rows[0];
    assert!(header.starts_with("SEQ  TIME"), "{header}");
    let what = header.find("WHAT").unwrap();
    for row in &rows[1..] {
        assert!(row.len() > what, "{row}");
        assert!(row[..what].ends_with("  "), "WHAT aligned: {row}");
    }
    assert!(
        rows[1].contains("refresh_ids [42, 7]  actor=ops  reason=\"fix #42\""),
        "{}",
        rows[1]
    );
    assert!(rows[1].contains("web-1") && rows[1].contains("content"));
    assert!(
        rows[6].contains("undecodable: message is not valid JSON"),
        "{}",
        rows[6]
    );
    let time = rows[1].split_whitespace().nth(1).unwrap();
    assert_eq!(time.len(), 24, "RFC 3339 with milliseconds: {time}");
    assert!(err.contains("8 messages"), "{err}");

    // Bad input: exit 2 with a message.
    let (code, _, err) = invalog(&["history", "-c", config, "--refresher", "a.b"]).await;
    assert_eq!(code, 2);
    assert!(err.contains("invalid refresher name `a.b`"), "{err}");
    let (code, _, err) = invalog(&["history", "-c", "/nonexistent.toml"]).await;
    assert_eq!(code, 2, "{err}");
    assert!(err.starts_with("invalog: "), "{err}");
    assert_eq!(
        consumers(&f).await,
        0,
        "the binary leaves no consumer behind"
    );
}

#[tokio::test]
async fn follow_prints_messages_published_after_it_started() {
    let f = Fixture::new().await;
    let p = f.publisher();
    p.refresh_ids("content", &[1]).await.unwrap();
    let config = client_config(&f);
    let mut child = Command::new(BIN)
        .args([
            "history",
            "-c",
            config.to_str().unwrap(),
            "--follow",
            "--json",
            "--refresher",
            "content",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(next(&mut lines).await["sequence"], 1);
    p.refresh_ids("media", &[2]).await.unwrap(); // filtered out
    let third = p.refresh_keys("content", &["home"]).await.unwrap();
    let line = next(&mut lines).await;
    assert_eq!(line["sequence"], third.sequence().unwrap());
    assert_eq!(line["batch"]["instructions"][0]["keys"][0], "home");
    child.kill().await.unwrap();

    // The library follows too, after the last N.
    let mut reader = history::read(
        &f.js,
        &f.log,
        Query {
            follow: true,
            limit: Limit::Last(1),
            ..Query::default()
        },
    )
    .await
    .unwrap();
    let e = within(Duration::from_secs(10), reader.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(e.sequence, 3);
    let fourth = p
        .refresh_ids("other", &[4])
        .await
        .unwrap()
        .sequence()
        .unwrap();
    let e = within(Duration::from_secs(10), reader.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(e.sequence, fourth);
}

async fn next(lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>) -> Value {
    let line = within(Duration::from_secs(15), lines.next_line()).await;
    serde_json::from_str(&line.unwrap().unwrap()).unwrap()
}

/// Waits until the presence bucket shows `node` at `applied` or beyond.
async fn reported(f: &Fixture, node: &str, applied: u64) {
    within(Duration::from_secs(10), async {
        loop {
            let reports = invalog::presence::read_all(&f.js, "invalog_nodes", &f.log.stream).await;
            if let Ok(reports) = reports {
                if reports
                    .iter()
                    .any(|r| r.node == node && r.applied >= applied)
                {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

async fn reporting_node(f: &Fixture, id: &str) -> (Arc<invalog::Node>, Presence) {
    let TestNode { node, .. } = f.node(id, NewNodePolicy::ReplayAll).await;
    let node = Arc::new(node);
    let settings = PresenceSettings {
        interval: Duration::from_millis(50),
        ..PresenceSettings::default()
    };
    let presence = Presence::start(
        f.js.clone(),
        settings,
        &f.log.stream,
        node.clone(),
        vec![name("content"), name("media")],
    )
    .await
    .unwrap();
    (node, presence)
}

#[tokio::test]
async fn explain_says_which_node_applied_the_last_change() {
    let f = Fixture::new().await;
    let config = client_config(&f);
    let config = config.to_str().unwrap();
    // No presence bucket yet: the changes, and why no node is judged.
    let p = f.publisher();
    let first = p
        .refresh_ids("content", &[42, 1])
        .await
        .unwrap()
        .sequence()
        .unwrap();
    let (code, out, err) = invalog(&[
        "explain",
        "-c",
        config,
        "--refresher",
        "content",
        "--id",
        "42",
    ])
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("Last 1 change to content 42"), "{out}");
    assert!(
        out.contains("No node positions: presence bucket `invalog_nodes` does not exist"),
        "{out}"
    );

    let (web1, _presence1) = reporting_node(&f, "web-1").await;
    let (web2, presence2) = reporting_node(&f, "web-2").await;
    web2.wait_applied(first).await.unwrap();
    reported(&f, "web-2", first).await;
    presence2.stop().await.unwrap();
    web2.shutdown().await.unwrap();
    p.refresh_ids("content", &[7]).await.unwrap();
    p.refresh_ids("media", &[42]).await.unwrap();
    let last = p.refresh_all("content").await.unwrap().sequence().unwrap();
    p.refresh_ids("content", &[8]).await.unwrap();
    web1.wait_applied(last + 1).await.unwrap();
    reported(&f, "web-1", last + 1).await;

    // The library.
    let question = explain::Question {
        refresher: name("content"),
        target: Target::parse("42"),
        node: None,
        last: 10,
        bucket: "invalog_nodes".into(),
        stale_after: Duration::from_secs(30),
    };
    let x = explain::explain(&f.js, &f.log, question.clone())
        .await
        .unwrap();
    assert_eq!(
        x.changes
            .iter()
            .map(|c| c.entry.sequence)
            .collect::<Vec<_>>(),
        [first, last]
    );
    assert_eq!(x.newest(), Some(last));
    let verdicts: Vec<_> = x
        .nodes
        .iter()
        .map(|n| (n.status.report.node.as_str(), n.verdict))
        .collect();
    assert_eq!(
        verdicts,
        [
            ("web-1", explain::Verdict::Applied { newest: last }),
            ("web-2", explain::Verdict::Behind { newest: last })
        ]
    );
    assert_eq!(
        x.nodes[0].sentence(&x.question),
        format!("web-1 has applied sequence {last} (the last change to content 42): a stale page there is not invalidation's fault")
    );
    assert_eq!(
        x.nodes[1].sentence(&x.question),
        format!("web-2 is at {first}, behind {last}: it has not applied the last change to content 42 yet (it has stopped)")
    );

    // The binary: table and answers, then JSON, then one node.
    let (code, out, err) = invalog(&[
        "explain",
        "-c",
        config,
        "--refresher",
        "content",
        "--id",
        "42",
    ])
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("Last 2 changes to content 42"), "{out}");
    assert!(out.contains("refresh_all"), "{out}");
    assert!(out.contains(&x.nodes[0].sentence(&x.question)), "{out}");
    assert!(
        out.contains(&format!("web-2 is at {first}, behind {last}")),
        "{out}"
    );
    let (code, out, _) = invalog(&[
        "explain",
        "-c",
        config,
        "--refresher",
        "content",
        "--id",
        "42",
        "--json",
    ])
    .await;
    assert_eq!(code, 0);
    let doc: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["format"], 1);
    assert_eq!(doc["refresher"], "content");
    assert_eq!(doc["id"], "42");
    assert_eq!(doc["newest"], last);
    assert_eq!(doc["changes"].as_array().unwrap().len(), 2);
    assert_eq!(doc["changes"][1]["touch"], "refresh_all");
    assert_eq!(doc["nodes"][0]["node"], "web-1");
    assert_eq!(doc["nodes"][0]["verdict"], "applied");
    assert_eq!(doc["nodes"][1]["verdict"], "behind");
    assert_eq!(doc["nodes"][1]["applied"], first);
    assert_eq!(doc["nodes"][1]["state"], "stopped");
    let (code, out, _) = invalog(&[
        "explain",
        "-c",
        config,
        "--refresher",
        "content",
        "--id",
        "42",
        "--node",
        "web-2",
        "--json",
    ])
    .await;
    assert_eq!(code, 0);
    let doc: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["nodes"].as_array().unwrap().len(), 1);
    let (code, _, err) = invalog(&[
        "explain",
        "-c",
        config,
        "--refresher",
        "content",
        "--id",
        "42",
        "--node",
        "web-9",
    ])
    .await;
    assert_eq!(code, 1);
    assert!(
        err.contains("node `web-9` has not reported") && err.contains("web-1, web-2"),
        "{err}"
    );
    // An entry nothing touched: only refresh_all matches; `--last 1`.
    let (code, out, _) = invalog(&[
        "explain",
        "-c",
        config,
        "--refresher",
        "media",
        "--id",
        "5",
        "--last",
        "1",
    ])
    .await;
    assert_eq!(code, 0);
    assert!(out.contains("No change to media 5 is in the log"), "{out}");
    assert!(out.contains("no change to media 5 is in the log"), "{out}");
}

/// Fills the log fast: pipelined raw publishes of encoded batches, over
/// four refreshers. Message `i` (0-based) is for refresher `i % 4` and
/// refreshes ids `(i / 4) % 500` and `10_000 + i`; every 10,000th
/// (`i % 10_000 == 5_000`) is a refresh_all instead.
async fn fill(
    js: &jetstream::Context,
    log: &invalog::LogSettings,
    count: usize,
) -> Vec<RefresherDef> {
    let refreshers: Vec<RefresherDef> = ["content", "media", "other", "nav"]
        .iter()
        .enumerate()
        .map(|(i, n)| RefresherDef::new(Uuid::from_u128(i as u128 + 1), n).unwrap())
        .collect();
    let mut acks = Vec::with_capacity(2_000);
    for i in 0..count {
        let def = &refreshers[i % 4];
        let instruction = if i % 10_000 == 5_000 {
            Instruction::RefreshAll
        } else {
            Instruction::RefreshIds(vec![((i / 4) % 500) as i64, 10_000 + i as i64])
        };
        let b = batch(def, "filler", None, vec![instruction]);
        let publish = PublishMessage::build().payload(invalog::wire::encode(&b).into());
        acks.push(
            js.send_publish(log.subject(&def.name), publish)
                .await
                .unwrap(),
        );
        if acks.len() == 2_000 || i + 1 == count {
            for ack in futures::future::join_all(acks.drain(..).map(IntoFuture::into_future)).await
            {
                ack.unwrap();
            }
        }
    }
    refreshers
}

#[tokio::test]
async fn large_stream_filters_on_the_server() {
    let count: usize = 100_000;
    let f = Fixture::new().await;
    let started = Instant::now();
    fill(&f.js, &f.log, count).await;
    let fill_time = started.elapsed();
    // content (i % 4 == 0) with id 123: (i / 4) % 500 == 123, plus the
    // refresh_alls of content.
    let expected: Vec<u64> = (0..count)
        .filter(|i| i % 4 == 0 && ((i / 4) % 500 == 123 || i % 10_000 == 5_000))
        .map(|i| i as u64 + 1)
        .collect();

    let started = Instant::now();
    let all = read_all(&f, Query::default()).await;
    let full_scan = started.elapsed();
    assert_eq!(all.len(), count);

    let query = Query {
        refreshers: vec![name("content")],
        target: Some(Target::parse("123")),
        ..Query::default()
    };
    let started = Instant::now();
    let mut reader = history::read(&f.js, &f.log, query).await.unwrap();
    assert_eq!(
        reader.to_scan(),
        count as u64 / 4,
        "the server sends only content"
    );
    let scanned = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = scanned.clone();
    reader.on_progress(move |p| counter.store(p.scanned, std::sync::atomic::Ordering::Relaxed));
    let mut found = Vec::new();
    while let Some(e) = reader.next().await.unwrap() {
        found.push(e.sequence);
    }
    let filtered = started.elapsed();
    assert_eq!(found, expected);
    assert_eq!(
        scanned.load(std::sync::atomic::Ordering::Relaxed),
        count as u64 / 4
    );

    // `since` a time near the end: the server starts there.
    let near_end = count as u64 - 99;
    let around = history::read_range(&f.js, &f.log, near_end - 10, Some(near_end), 11)
        .await
        .unwrap();
    let at = around[10].stored_at;
    // Pipelined messages can share a timestamp: the first one with it.
    let start = around.iter().find(|e| e.stored_at >= at).unwrap().sequence;
    let since = Query {
        since: Some(at),
        ..Query::default()
    };
    let started = Instant::now();
    let reader = history::read(&f.js, &f.log, since.clone()).await.unwrap();
    assert_eq!(reader.to_scan(), count as u64 - start + 1);
    drop(reader);
    let recent = read_all(&f, since).await;
    let since_time = started.elapsed();
    assert_eq!(recent, (start..=count as u64).collect::<Vec<_>>());

    let query = Query {
        target: Some(Target::parse("123")),
        ..Query::default()
    };
    let started = Instant::now();
    let any_refresher = read_all(&f, query).await;
    let client_only = started.elapsed();
    assert!(any_refresher.len() > expected.len());

    let config = client_config(&f);
    let config = config.to_str().unwrap();
    let started = Instant::now();
    let (code, out, err) = invalog(&[
        "history",
        "-c",
        config,
        "--refresher",
        "content",
        "--id",
        "123",
        "--json",
    ])
    .await;
    let binary = started.elapsed();
    assert_eq!(code, 0, "{err}");
    assert_eq!(seqs(&json_lines(&out)), expected);
    let started = Instant::now();
    let (code, out, _) = invalog(&["history", "-c", config, "--json"]).await;
    let binary_full = started.elapsed();
    assert_eq!(code, 0);
    assert_eq!(out.lines().count(), count);
    let started = Instant::now();
    let (code, out, _) = invalog(&["history", "-c", config, "--last", "5", "--json"]).await;
    let binary_last = started.elapsed();
    assert_eq!(code, 0);
    assert_eq!(
        seqs(&json_lines(&out)),
        (count as u64 - 4..=count as u64).collect::<Vec<_>>()
    );

    eprintln!(
        "history on {count} messages: fill {fill_time:.2?}; library: full scan {full_scan:.2?}, \
         --refresher content --id 123 ({} found) {filtered:.2?}, --id 123 on all refreshers {client_only:.2?}, since the last 100 {since_time:.2?}; \
         binary: --refresher content --id 123 {binary:.2?}, full scan as JSON {binary_full:.2?}, --last 5 {binary_last:.2?}",
        expected.len()
    );
}
