//! `invalog replay --dry-run` marks what a catching-up node would
//! supersede: the real binary, against a real server, over a log of content
//! and media messages with one refresh-all of each. The test asserts every
//! message's outcome and cover for the default window, for a window from the
//! configuration (`[node] catch_up_lookahead`) too small to reach any
//! refresh-all, for `--lookahead` (which overrides the configuration), and
//! with a refresher filter (filtered messages are never superseded but
//! still take a slot of the window).

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::probe_replay::invalog;
use crate::support::Fixture;

/// A client configuration hosting `content` and `media` (no appliers: a
/// dry run needs none), with `node` lines added to `[node]`.
fn config(f: &Fixture, name: &str, node: &str) -> PathBuf {
    let path = f.dir.path().join(format!("{name}.toml"));
    let text = format!(
        "[node]\n{node}\n\n[nats]\nurls = [\"{url}\"]\n\n\
         [[refreshers]]\nname = \"content\"\nid = \"00000000-0000-0000-0000-000000000001\"\n\n\
         [[refreshers]]\nname = \"media\"\nid = \"00000000-0000-0000-0000-000000000002\"\n",
        url = f.server.url(),
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// Sequences 1..=8: content 1, media 2, content 3, media 4, content
/// refresh-all 5, content 6, media refresh-all 7, content 8.
async fn publish(f: &Fixture) {
    let p = f.publisher();
    p.refresh_ids("content", &[1]).await.unwrap();
    p.refresh_ids("media", &[2]).await.unwrap();
    p.refresh_ids("content", &[3]).await.unwrap();
    p.refresh_ids("media", &[4]).await.unwrap();
    assert_eq!(p.refresh_all("content").await.unwrap().sequence(), Some(5));
    p.refresh_ids("content", &[6]).await.unwrap();
    p.refresh_all("media").await.unwrap();
    let last = p.refresh_ids("content", &[8]).await.unwrap().sequence();
    assert_eq!(last, Some(8));
}

/// Runs `replay --from-seq 1 --dry-run --json` with `extra` arguments:
/// per message (sequence, outcome, superseded_by), then the summary.
async fn dry_run(config: &Path, extra: &[&str]) -> (Vec<(u64, String, Option<u64>)>, Value) {
    let mut args = vec!["replay", "--from-seq", "1", "--dry-run", "--json"];
    args.extend_from_slice(extra);
    let (code, stdout, stderr) = invalog(&args, config).await;
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    let mut lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let summary = lines.pop().unwrap()["summary"].clone();
    let messages = lines
        .iter()
        .map(|l| {
            (
                l["sequence"].as_u64().unwrap(),
                l["outcome"].as_str().unwrap().to_owned(),
                l["superseded_by"].as_u64(),
            )
        })
        .collect();
    (messages, summary)
}

fn expect(list: &[(u64, &str, Option<u64>)]) -> Vec<(u64, String, Option<u64>)> {
    list.iter().map(|&(s, o, c)| (s, o.to_owned(), c)).collect()
}

fn counts(summary: &Value) -> [u64; 4] {
    ["superseded", "would_apply", "filtered_out", "lookahead"].map(|k| summary[k].as_u64().unwrap())
}

#[tokio::test]
async fn a_dry_run_marks_what_a_catching_up_node_would_supersede() {
    let f = Fixture::new().await;
    publish(&f).await;
    let s = "superseded";
    let w = "would_apply";

    // The default window (1000) reaches both refresh-alls.
    let default = config(&f, "default", "");
    let (messages, summary) = dry_run(&default, &[]).await;
    let all = expect(&[
        (1, s, Some(5)),
        (2, s, Some(7)),
        (3, s, Some(5)),
        (4, s, Some(7)),
        (5, w, None),
        (6, w, None),
        (7, w, None),
        (8, w, None),
    ]);
    assert_eq!(messages, all);
    assert_eq!(counts(&summary), [4, 4, 0, 1000]);
    assert_eq!(summary["clean"], true);

    // A window of 1 from the configuration: 4 (media) is followed by the
    // content refresh-all, 6 (content) by the media one; nothing is reached.
    let narrow = config(&f, "narrow", "catch_up_lookahead = 1");
    let (messages, summary) = dry_run(&narrow, &[]).await;
    let none: Vec<_> = (1..=8).map(|q| (q, w.to_owned(), None)).collect();
    assert_eq!(messages, none);
    assert_eq!(counts(&summary), [0, 8, 0, 1]);

    // `--lookahead` overrides it: with 2, only 3 reaches the refresh-all at 5.
    let (messages, summary) = dry_run(&narrow, &["--lookahead", "2"]).await;
    let mut only_3 = none.clone();
    only_3[2] = (3, s.to_owned(), Some(5));
    assert_eq!(messages, only_3);
    assert_eq!(counts(&summary), [1, 7, 0, 2]);
    // 0 turns it off.
    let (messages, _) = dry_run(&default, &["--lookahead", "0"]).await;
    assert_eq!(messages, none);

    // Filtered-out content messages are not reported but take slots: with
    // a window of 3, media 2 reaches only sequence 5, media 4 reaches 7.
    let (messages, summary) = dry_run(&narrow, &["--refresher", "media", "--lookahead", "3"]).await;
    assert_eq!(
        messages,
        expect(&[(2, w, None), (4, s, Some(7)), (7, w, None)])
    );
    assert_eq!(counts(&summary), [1, 2, 5, 3]);

    // The table says it in words; a real replay applies everything.
    let args = ["replay", "--from-seq", "1", "--to-seq", "5", "--dry-run"];
    let (code, stdout, stderr) = invalog(&args, &default).await;
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    let line = stdout
        .lines()
        .find(|l| l.starts_with("1 "))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(
        line.contains("superseded")
            && line.ends_with("would be superseded while catching up (refresh_all at 5)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("3 would be applied, 2 superseded while catching up (lookahead 1000)"),
        "{stdout}"
    );
}

#[tokio::test]
async fn a_dry_run_without_a_refresh_all_of_the_same_refresher_supersedes_nothing() {
    let f = Fixture::new().await;
    let p = f.publisher();
    p.refresh_ids("content", &[1]).await.unwrap();
    p.refresh_all("media").await.unwrap();
    p.refresh_ids("content", &[3]).await.unwrap();
    // Only `content` hosted: the media refresh-all is not hosted here.
    let path = f.dir.path().join("content-only.toml");
    let text = format!(
        "[nats]\nurls = [\"{}\"]\n\n[[refreshers]]\nname = \"content\"\n\
         id = \"00000000-0000-0000-0000-000000000001\"\n",
        f.server.url()
    );
    std::fs::write(&path, text).unwrap();
    let (messages, summary) = dry_run(&path, &[]).await;
    assert_eq!(
        messages,
        expect(&[
            (1, "would_apply", None),
            (2, "not_hosted", None),
            (3, "would_apply", None)
        ])
    );
    assert_eq!(summary["superseded"], 0);
}
