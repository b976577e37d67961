//! Terminal escapes from publishers and nodes against the real binary: a
//! batch with `ESC[31m` in its origin, actor, reason, trace id and a key, and
//! a presence report with escapes in its node id and reason, printed by
//! `invalog history`, `explain` and `status` as tables with no raw control
//! character; their JSON output keeps the exact strings (serde escapes).
//! Runs the binary through `history_cmd::invalog`.

use std::time::SystemTime;

use async_nats::jetstream::kv;
use invalog::{Batch, Instruction, Provenance};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::agent_support::client_config;
use crate::history_cmd::invalog;
use crate::support::{defs, Fixture};

const RED: &str = "\u{1b}[31m";

/// No control character but the newlines that end lines.
fn assert_printable(what: &str, text: &str) {
    assert!(!text.contains('\u{1b}'), "{what}: raw ESC in\n{text}");
    assert!(
        !text.chars().any(|c| c != '\n' && c.is_control()),
        "{what}: control character in {text:?}"
    );
    assert!(
        text.contains("\\u{1b}[31m"),
        "{what}: escaped ESC in\n{text}"
    );
}

#[tokio::test]
async fn history_explain_and_status_escape_what_publishers_and_nodes_wrote() {
    let f = Fixture::new().await;
    let content = defs()[0].clone();
    let batch = Batch {
        id: Uuid::now_v7(),
        origin: format!("{RED}origin"),
        published_at: SystemTime::now(),
        refresher: content.clone(),
        provenance: Provenance {
            actor: Some(format!("{RED}actor")),
            reason: Some(format!("{RED}reason")),
            trace_id: Some(format!("{RED}trace")),
        },
        applied_at_origin: false,
        instructions: vec![Instruction::RefreshKeys(vec![format!("{RED}key")])],
    };
    f.js.publish(
        f.log.subject(&content.name),
        invalog::wire::encode(&batch).into(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    let config = client_config(&f);
    let config = config.to_str().unwrap();

    let (code, out, err) = invalog(&["history", "-c", config]).await;
    assert_eq!(code, 0, "{err}");
    assert_printable("history", &out);
    let (code, out, err) = invalog(&["history", "-c", config, "--json"]).await;
    assert_eq!(code, 0, "{err}");
    let line: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        line["batch"]["origin"],
        json!(format!("{RED}origin")),
        "{line}"
    );
    assert_eq!(
        line["batch"]["instructions"][0]["keys"][0],
        json!(format!("{RED}key"))
    );
    assert!(!out.contains('\u{1b}'), "JSON escapes ESC itself");

    let key = format!("{RED}key");
    let explain = ["explain", "-c", config, "--refresher", "content", "--id"];
    let (code, out, err) = invalog(&[&explain[..], &[key.as_str()]].concat()).await;
    assert_eq!(code, 0, "{err}");
    assert_printable("explain", &out);

    // A report in the presence bucket, as a misbehaving node could write it.
    let bucket =
        f.js.create_key_value(kv::Config {
            bucket: "invalog_nodes".into(),
            history: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    let now = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let report = json!({
        "format": 1, "node": format!("{RED}web-1"), "version": format!("{RED}0.1"),
        "applied": 1, "stored": 1, "stream_last": 1, "lag": 0,
        "state": format!("{RED}stalled"), "ready": false, "reason": format!("{RED}reason"),
        "started_at": now, "reported_at": now, "refreshers": ["content"],
    });
    bucket
        .put("web-1", serde_json::to_vec(&report).unwrap().into())
        .await
        .unwrap();
    let (_, out, err) = invalog(&["status", "-c", config]).await;
    assert!(out.contains("web-1"), "{err}");
    assert_printable("status", &out);
}
