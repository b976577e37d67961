//! Hostile input injected as raw messages into the stream: every kind is
//! counted, escalated (refresh-all of the subject's refresher when this node
//! hosts it) or counted as unhosted, and the node keeps going.

use std::time::{Duration, Instant};

use invalog::node::NewNodePolicy;
use serde_json::{json, Value};

use crate::support::{defs, within, Call, Fixture};

/// A valid format-1 body for `refresher` (name, id) with `instructions`.
fn valid(name: &str, id: &str, instructions: Value) -> Value {
    json!({
        "format": 1,
        "batch_id": uuid::Uuid::now_v7().to_string(),
        "origin": "hostile-test",
        "published_at": "2025-03-14T09:27:05.112Z",
        "refresher": { "id": id, "name": name },
        "instructions": instructions,
    })
}

fn content(instructions: Value) -> Value {
    valid("content", &defs()[0].id.to_string(), instructions)
}

fn bytes(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap()
}

#[derive(Debug, Clone, PartialEq)]
enum Expect {
    /// Not decodable: counted, and escalated if the subject's refresher is hosted.
    Undecodable,
    /// Decodable, for a refresher this node does not host.
    Unhosted,
    /// Applied as this call.
    Applied(Call),
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_messages_are_counted_escalated_and_the_node_keeps_going() {
    let f = Fixture::new().await;
    let node = f.node("target", NewNodePolicy::ReplayAll).await;
    node.ready().await;

    let mut cases: Vec<(&'static str, String, Vec<u8>, Expect)> = Vec::new();
    let mut add = |label: &str, subject: &'static str, body: Vec<u8>, expect: Expect| {
        cases.push((subject, label.to_owned(), body, expect));
    };
    use Expect::*;
    add(
        "invalid JSON",
        "invalog.content",
        b"{not json".to_vec(),
        Undecodable,
    );
    add("empty body", "invalog.content", Vec::new(), Undecodable);
    let mut v = content(json!([{ "kind": "refresh_ids", "ids": [1] }]));
    v["format"] = json!(2);
    add("unknown version", "invalog.content", bytes(&v), Undecodable);
    v["format"] = json!("1");
    add(
        "version of the wrong type",
        "invalog.content",
        bytes(&v),
        Undecodable,
    );
    let v = content(json!([{ "kind": "refresh_ids", "ids": ["1", "2"] }]));
    add(
        "wrong types (ids as strings)",
        "invalog.content",
        bytes(&v),
        Undecodable,
    );
    let v = content(json!({ "kind": "refresh_all" }));
    add(
        "wrong types (instructions not a list)",
        "invalog.content",
        bytes(&v),
        Undecodable,
    );
    let mut v = content(json!([{ "kind": "refresh_all" }]));
    v.as_object_mut().unwrap().remove("batch_id");
    add(
        "missing field batch_id",
        "invalog.content",
        bytes(&v),
        Undecodable,
    );
    let v = content(json!([{ "kind": "refresh_ids" }]));
    add(
        "missing field ids",
        "invalog.content",
        bytes(&v),
        Undecodable,
    );
    let v = content(json!([{ "kind": "explode" }]));
    add(
        "unknown instruction kind",
        "invalog.content",
        bytes(&v),
        Undecodable,
    );
    let mut body = bytes(&content(json!([{ "kind": "refresh_all" }])));
    body.extend_from_slice(b" trailing");
    add("trailing garbage", "invalog.content", body, Undecodable);
    // 100,000 levels of nesting inside a JSON instruction (~200 KB): must
    // be refused, not overflow the stack.
    let deep = format!(
        r#"{{"format":1,"batch_id":"{}","origin":"x","published_at":"2025-03-14T09:27:05Z","refresher":{{"id":"{}","name":"content"}},"instructions":[{{"kind":"refresh_json","json":{}{}}}]}}"#,
        uuid::Uuid::now_v7(),
        defs()[0].id,
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    add(
        "deeply nested JSON",
        "invalog.content",
        deep.into_bytes(),
        Undecodable,
    );
    let deep_objects = format!("{}1{}", r#"{"a":"#.repeat(50_000), "}".repeat(50_000));
    add(
        "deeply nested objects",
        "invalog.content",
        deep_objects.into_bytes(),
        Undecodable,
    );
    add(
        "non-UTF-8",
        "invalog.media",
        vec![0xff, 0xfe, b'{', b'}'],
        Undecodable,
    );
    let mut latin1 = bytes(&content(
        json!([{ "kind": "refresh_keys", "keys": ["caf"] }]),
    ));
    let at = latin1.windows(3).position(|w| w == b"caf").unwrap() + 3;
    latin1.insert(at, 0xe9);
    add(
        "non-UTF-8 inside a string",
        "invalog.content",
        latin1,
        Undecodable,
    );
    add(
        "body naming another refresher than its subject",
        "invalog.media",
        bytes(&content(json!([{ "kind": "refresh_all" }]))),
        Undecodable,
    );
    add(
        "undecodable on an unhosted subject",
        "invalog.other",
        b"\0garbage".to_vec(),
        Undecodable,
    );
    let other = valid(
        "other",
        &defs()[2].id.to_string(),
        json!([{ "kind": "refresh_ids", "ids": [1] }]),
    );
    add(
        "unknown (unhosted) refresher",
        "invalog.other",
        bytes(&other),
        Unhosted,
    );
    let nosuch = valid(
        "nosuch",
        &uuid::Uuid::now_v7().to_string(),
        json!([{ "kind": "refresh_all" }]),
    );
    add(
        "refresher nobody registered",
        "invalog.nosuch",
        bytes(&nosuch),
        Unhosted,
    );
    // Just under the stream's 1 MiB limit but huge in instructions: valid
    // (120,000 ids, 960 KB) and invalid (floats).
    let ids: Vec<i64> = (0..120_000).map(|i| 1_000_000 + i).collect();
    let huge = bytes(&content(json!([{ "kind": "refresh_ids", "ids": ids }])));
    assert!(
        huge.len() > 900_000 && huge.len() < 1_000_000,
        "{}",
        huge.len()
    );
    add(
        "huge valid ids array",
        "invalog.content",
        huge,
        Applied(Call::Ids(ids)),
    );
    let floats: Vec<f64> = (0..90_000).map(|i| 100_000.0 + i as f64 + 0.25).collect();
    let huge_bad = bytes(&content(json!([{ "kind": "refresh_ids", "ids": floats }])));
    assert!(
        huge_bad.len() > 800_000 && huge_bad.len() < 1_000_000,
        "{}",
        huge_bad.len()
    );
    add(
        "huge invalid ids array",
        "invalog.content",
        huge_bad,
        Undecodable,
    );
    // Every documented invalid example too.
    let invalid_dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/wire-format/invalid");
    let mut files: Vec<_> = std::fs::read_dir(&invalid_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let examples: Vec<(String, Vec<u8>)> = files
        .iter()
        .map(|p| {
            (
                format!("docs example {}", p.file_name().unwrap().to_string_lossy()),
                std::fs::read(p).unwrap(),
            )
        })
        .collect();
    for (label, body) in &examples {
        add(label, "invalog.content", body.clone(), Undecodable);
    }
    assert!(examples.len() >= 20);

    // Oversized: more than the stream's (and the server's) 1 MiB limit is
    // refused at publish time, so it never reaches a node.
    let oversized = vec![b' '; 1024 * 1024 + 1];
    let refused = match f.js.publish("invalog.content", oversized.into()).await {
        Err(e) => e.to_string(),
        Ok(ack) => match ack.await {
            Err(e) => e.to_string(),
            Ok(ack) => panic!("an oversized message was stored at {}", ack.sequence),
        },
    };
    eprintln!("hostile: oversized publish refused by the client: {refused}");
    // A stream whose own limit is below the server's: the server refuses.
    let small = invalog::LogSettings {
        stream: "SMALL".into(),
        subject_prefix: "small".into(),
        max_message_size: 4096,
        ..invalog::LogSettings::default()
    };
    invalog::provision(&f.js, &small).await.unwrap();
    let refused =
        f.js.publish("small.content", vec![b' '; 4097].into())
            .await
            .unwrap()
            .await
            .expect_err("a message over the stream's max_message_size is refused");
    eprintln!("hostile: over the stream's limit refused by the server: {refused}");

    let mut sequences = Vec::new();
    for (subject, label, body, _) in &cases {
        let ack =
            f.js.publish(subject.to_string(), body.clone().into())
                .await
                .unwrap_or_else(|e| panic!("{label}: {e}"))
                .await
                .unwrap_or_else(|e| panic!("{label}: {e}"));
        sequences.push(ack.sequence);
    }
    let injected = Instant::now();
    let after = f
        .publisher()
        .refresh_ids("content", &[424_242])
        .await
        .unwrap()
        .sequence()
        .unwrap();
    within(Duration::from_secs(30), node.node.wait_applied(after))
        .await
        .unwrap();
    let took = injected.elapsed();
    assert!(node.node.is_ready(), "{:?}", node.node.readiness());

    let undecodable = cases.iter().filter(|c| c.3 == Undecodable).count() as u64;
    let hosted = |subject: &str| subject == "invalog.content" || subject == "invalog.media";
    let escalated = cases
        .iter()
        .filter(|c| c.3 == Undecodable && hosted(c.0))
        .count() as u64;
    let unhosted = cases.iter().filter(|c| !hosted(c.0)).count() as u64;
    let stats = node.node.stats();
    assert_eq!(
        stats.decode_errors, undecodable,
        "every undecodable message counted"
    );
    // Consecutive undecodable messages of one refresher may share one
    // refresh-all (its escalations are coalesced), never silently.
    assert_eq!(
        stats.escalations + stats.escalations_coalesced,
        escalated,
        "each escalated on its hosted refresher, or coalesced"
    );
    assert_eq!(stats.unhosted_messages, unhosted);
    let expected_calls = |subject: &str| -> Vec<Call> {
        cases
            .iter()
            .filter(|c| c.0 == subject)
            .filter_map(|c| match &c.3 {
                Undecodable => Some(Call::All),
                Applied(call) => Some(call.clone()),
                Unhosted => None,
            })
            .collect()
    };
    // A run of refresh-alls with nothing of the refresher applied in
    // between counts as one: how many the node ran depends on how many
    // messages were stored when each began.
    let collapsed = |mut calls: Vec<Call>| {
        calls.dedup_by(|a, b| *a == Call::All && *b == Call::All);
        calls
    };
    let mut content_calls = expected_calls("invalog.content");
    content_calls.push(Call::Ids(vec![424_242]));
    let (content, media) = (node.content.calls(), node.media.calls());
    assert!(
        collapsed(content.clone()) == collapsed(content_calls),
        "content calls differ from the expected sequence"
    );
    assert_eq!(
        collapsed(media.clone()),
        collapsed(expected_calls("invalog.media"))
    );
    let refresh_alls = content
        .iter()
        .chain(&media)
        .filter(|c| **c == Call::All)
        .count();
    assert_eq!(refresh_alls as u64, stats.escalations);
    eprintln!(
        "hostile: {} messages ({undecodable} undecodable, {escalated} escalated of which {} coalesced, {unhosted} unhosted, sequences {}..={}) \
         handled and the next valid one applied {took:?} after injection",
        cases.len(),
        stats.escalations_coalesced,
        sequences[0],
        sequences.last().unwrap()
    );
}

/// The same through the real agent: each undecodable message is logged
/// (JSON log line with its sequence), counted in `/metrics`, escalated to a
/// refresh-all request on the webhook, and the agent stays ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_logs_counts_and_escalates_hostile_messages() {
    use crate::agent_support::{free_port, webhook, Agent, AgentConfig, Hook};

    let f = Fixture::new().await;
    let (hook, hook_port) = Hook::start(Duration::ZERO).await;
    let http_port = free_port();
    let config = AgentConfig {
        dir: f.dir.path(),
        urls: vec![f.server.url()],
        node: "hostile",
        http_port,
        applier: webhook(hook_port),
        node_extra: "",
        tables_extra: "",
    }
    .write();
    let log_path = f.dir.path().join("agent.log");
    let log_file = std::fs::File::create(&log_path).unwrap();
    let mut agent = Agent::spawn_with_stderr(&config, http_port, log_file.into());
    let ready = async {
        while agent.get("/readyz").await.map(|r| r.0) != Some(200) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    within(Duration::from_secs(30), ready).await;

    let mut v = content(json!([{ "kind": "refresh_ids", "ids": [1] }]));
    v["format"] = json!(7);
    let other = valid(
        "other",
        &defs()[2].id.to_string(),
        json!([{ "kind": "refresh_all" }]),
    );
    let injected: Vec<(&str, Vec<u8>)> = vec![
        ("invalog.content", b"{not json".to_vec()),
        ("invalog.content", bytes(&v)),
        ("invalog.media", vec![0xc3, 0x28]),
        ("invalog.other", bytes(&other)),
    ];
    let mut sequences = Vec::new();
    for (subject, body) in injected {
        let ack =
            f.js.publish(subject, body.into())
                .await
                .unwrap()
                .await
                .unwrap();
        sequences.push(ack.sequence);
    }
    let after = f
        .publisher()
        .refresh_ids("content", &[9])
        .await
        .unwrap()
        .sequence()
        .unwrap();
    let (code, _) = agent
        .get(&format!("/applied?seq={after}&timeout=20s"))
        .await
        .unwrap();
    assert_eq!(code, 200, "applied past the hostile messages");
    assert_eq!(agent.get("/readyz").await.unwrap().0, 200);

    assert_eq!(agent.metric("invalog_decode_errors_total").await, Some(3.0));
    assert_eq!(
        agent.metric("invalog_unhosted_messages_total").await,
        Some(1.0)
    );
    // The two undecodable `content` messages cost one or two refresh-alls:
    // the second is coalesced when it was stored before the first one's
    // refresh-all began.
    let content_escalations = agent
        .metric("invalog_escalations_total{refresher=\"content\"}")
        .await
        .unwrap();
    let coalesced = agent
        .metric("invalog_escalations_coalesced_total")
        .await
        .unwrap();
    assert_eq!(content_escalations + coalesced, 2.0);
    assert_eq!(
        agent
            .metric("invalog_escalations_total{refresher=\"media\"}")
            .await,
        Some(1.0)
    );
    let bodies = hook.bodies.lock().unwrap().clone();
    let kinds: Vec<(String, String)> = bodies
        .iter()
        .map(|b| {
            (
                b["refresher"]["name"].as_str().unwrap().to_owned(),
                b["trigger"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let pair = |r: &str, t: &str| (r.to_owned(), t.to_owned());
    let mut expected = vec![pair("content", "refresh_all")];
    if content_escalations == 2.0 {
        expected.push(pair("content", "refresh_all"));
    }
    expected.extend([pair("media", "refresh_all"), pair("content", "batch")]);
    assert_eq!(kinds, expected);
    agent.terminate();
    assert_eq!(agent.exit_code().await, 0);

    let log = std::fs::read_to_string(&log_path).unwrap();
    for seq in &sequences[..3] {
        let logged = log.lines().any(|line| {
            serde_json::from_str::<Value>(line).is_ok_and(|l| {
                l["fields"]["sequence"] == json!(seq)
                    && l["fields"]["message"]
                        .as_str()
                        .is_some_and(|m| m.contains("undecodable"))
            })
        });
        assert!(logged, "no log line for undecodable message {seq}:\n{log}");
    }
}
