//! The stale-fill race, reproduced step by step against a real nats-server:
//! a value is read from the database (ticket taken), the invalidation of
//! that key is published and applied, then the read value is inserted. The
//! naive insert caches the stale value; the guard refuses it. Also: another
//! key's invalidation lets the fill through; a refresh-all, a ticket older
//! than the window, a cold boot (recreated stream) and a restart refuse it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use invalog::node::{FillKey, FillVerdict, Unknowable};
use invalog::{FileStore, Node, NodeId, NodeSettings, RefreshResult, Refresher, Registry};

use crate::support::{defs, within, Fixture};

/// A map from id to value, standing in for a database or a cache.
#[derive(Clone, Default)]
struct Map(Arc<Mutex<HashMap<i64, String>>>);

impl Map {
    fn get(&self, id: i64) -> Option<String> {
        self.0.lock().unwrap().get(&id).cloned()
    }

    fn put(&self, id: i64, value: &str) {
        self.0.lock().unwrap().insert(id, value.to_owned());
    }

    fn remove(&self, id: i64) {
        self.0.lock().unwrap().remove(&id);
    }
}

/// The `content` refresher of a cache: drops what it names.
struct Evict(Map);

#[async_trait]
impl Refresher for Evict {
    async fn refresh_all(&self) -> RefreshResult {
        self.0 .0.lock().unwrap().clear();
        Ok(())
    }
    async fn refresh_ids(&self, ids: &[i64]) -> RefreshResult {
        ids.iter().for_each(|&id| self.0.remove(id));
        Ok(())
    }
    async fn remove_ids(&self, ids: &[i64]) -> RefreshResult {
        self.refresh_ids(ids).await
    }
}

/// A node hosting `content` (the cache) and `media` (a cache of nothing),
/// with a fill-guard window of `window` entries.
async fn node(fx: &Fixture, cache: &Map, window: Option<usize>) -> Node {
    let mut registry = Registry::new();
    let d = defs();
    registry
        .register(d[0].clone(), Evict(cache.clone()))
        .unwrap();
    registry
        .register(d[1].clone(), Evict(Map::default()))
        .unwrap();
    let mut settings = NodeSettings::new(NodeId::new("filler").unwrap());
    settings.fill_guard_window = window;
    let store = FileStore::new(fx.checkpoint_path("filler"));
    let node = Node::start(fx.js.clone(), fx.log.clone(), settings, registry, store)
        .await
        .expect("node starts");
    within(Duration::from_secs(10), node.ready()).await.unwrap();
    node
}

async fn applied(node: &Node, receipt: invalog::Receipt) {
    let token = receipt.token().expect("published");
    within(Duration::from_secs(10), node.wait_token(&token))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_value_read_before_an_applied_invalidation_is_not_cached() {
    let fx = Fixture::new().await;
    let publisher = fx.publisher();
    let (db, cache) = (Map::default(), Map::default());
    db.put(7, "old");
    let node = node(&fx, &cache, Some(64)).await;

    // A miss: take the ticket, read the database.
    let ticket = node.fill_ticket();
    let read = db.get(7).unwrap();
    // Meanwhile a writer commits and publishes; the node applies it.
    db.put(7, "new");
    applied(&node, publisher.refresh_ids("content", &[7]).await.unwrap()).await;

    // The naive insert writes the stale value back: it stays until the next change.
    cache.put(7, &read);
    assert_eq!(cache.get(7).as_deref(), Some("old"), "naive fill: stale");
    assert_eq!(db.get(7).as_deref(), Some("new"));
    cache.remove(7);

    // The guarded insert is refused.
    let guarded = node.fill_if_fresh(&ticket, &[("content", FillKey::Id(7))], || {
        cache.put(7, &read)
    });
    assert!(
        matches!(
            guarded,
            Err(FillVerdict::Changed {
                whole_refresher: false,
                ..
            })
        ),
        "{guarded:?}"
    );
    assert_eq!(cache.get(7), None, "nothing stale cached");

    // Another key's invalidation does not stop a fill.
    let ticket = node.fill_ticket();
    let read = db.get(7).unwrap();
    applied(&node, publisher.refresh_ids("content", &[8]).await.unwrap()).await;
    applied(&node, publisher.refresh_ids("media", &[7]).await.unwrap()).await;
    let filled = node.fill_if_fresh(&ticket, &[("content", FillKey::Id(7))], || {
        cache.put(7, &read)
    });
    assert_eq!(filled, Ok(()));
    assert_eq!(cache.get(7).as_deref(), Some("new"));

    // A refresh-all of the refresher after the ticket refuses every key.
    let ticket = node.fill_ticket();
    applied(&node, publisher.refresh_all("content").await.unwrap()).await;
    let verdict = node.may_fill(&ticket, "content", FillKey::Id(7));
    assert!(
        matches!(
            verdict,
            FillVerdict::Changed {
                whole_refresher: true,
                ..
            }
        ),
        "{verdict:?}"
    );
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_guard_says_do_not_cache_when_it_cannot_know() {
    let fx = Fixture::new().await;
    let publisher = fx.publisher();
    let cache = Map::default();
    let node = node(&fx, &cache, Some(4)).await;

    // More invalidations after the ticket than the window holds.
    let ticket = node.fill_ticket();
    for id in 100..105 {
        applied(&node, publisher.refresh_ids("media", &[id]).await.unwrap()).await;
    }
    assert!(
        matches!(
            node.may_fill(&ticket, "content", FillKey::Id(7)),
            FillVerdict::Unknown(Unknowable::OlderThanWindow { .. })
        ),
        "a ticket older than the window is never safe"
    );
    assert_eq!(
        node.may_fill(&node.fill_ticket(), "content", FillKey::Id(7)),
        FillVerdict::Fill
    );

    // A cold boot (the stream was recreated) after the ticket.
    let ticket = node.fill_ticket();
    let before = node.position().incarnation;
    fx.recreate_stream().await;
    let mut position = node.watch_position();
    within(
        Duration::from_secs(10),
        position.wait_for(|p| p.incarnation != before && p.state.is_ready()),
    )
    .await
    .unwrap();
    assert_eq!(
        node.may_fill(&ticket, "content", FillKey::Id(7)),
        FillVerdict::Unknown(Unknowable::OtherEpoch)
    );

    // A restart: the new process knows nothing of what the old one applied
    // after its ticket.
    let ticket = node.fill_ticket();
    assert_eq!(
        node.may_fill(&ticket, "content", FillKey::Id(7)),
        FillVerdict::Fill
    );
    node.shutdown().await.unwrap();
    let restarted = self::node(&fx, &cache, Some(4)).await;
    assert_eq!(
        restarted.may_fill(&ticket, "content", FillKey::Id(7)),
        FillVerdict::Unknown(Unknowable::OtherEpoch)
    );
    restarted.shutdown().await.unwrap();

    // A node without a guard never says "fill".
    let unguarded = self::node(&fx, &cache, None).await;
    assert_eq!(
        unguarded.may_fill(&unguarded.fill_ticket(), "content", FillKey::Id(7)),
        FillVerdict::Unknown(Unknowable::GuardOff)
    );
}

/// The same guard through the agent's HTTP API, as an app in any language
/// uses it: `/fill-ticket` before reading, `/may-fill` after.
#[tokio::test]
async fn the_guard_over_the_agent_http_api() {
    use crate::agent_http::kit::{start_node, Api};
    use crate::support::Recorder;

    let fx = Fixture::new().await;
    let publisher = fx.publisher();
    let node = start_node(&fx, "web-1", Arc::new(Recorder::default()), |s| {
        s.fill_guard_window = Some(64)
    })
    .await;
    within(Duration::from_secs(10), node.ready()).await.unwrap();
    let api = Api::serve(&fx, &node).await;

    let (status, body) = api.json("/fill-ticket").await;
    assert_eq!(status, 200, "{body}");
    let ticket = body["ticket"].as_str().unwrap().to_owned();
    let token = publisher
        .refresh_ids("content", &[7])
        .await
        .unwrap()
        .token()
        .unwrap();
    let (status, body) = api.json(&format!("/applied?token={token}")).await;
    assert_eq!(status, 200, "{body}");

    let api = &api;
    let ask = |query: &str| {
        let path = format!("/may-fill?ticket={ticket}&{query}");
        async move { api.json(&path).await }
    };
    let (status, body) = ask("refresher=content&id=7").await;
    assert_eq!((status, &body["fill"]), (200, &false.into()), "{body}");
    assert!(
        body["why"]
            .as_str()
            .unwrap()
            .contains("invalidation of this entry"),
        "{body}"
    );
    let (status, body) = ask("refresher=content,media&id=8").await;
    assert_eq!(
        (status, &body["fill"]),
        (200, &true.into()),
        "another key: {body}"
    );
    let (_, body) = ask("refresher=contnet&id=8").await;
    assert_eq!(
        body["fill"], false,
        "a refresher the agent does not host: {body}"
    );
    assert!(
        body["why"].as_str().unwrap().contains("hosts no refresher"),
        "{body}"
    );
    let (status, body) = ask("refresher=content").await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = api
        .json("/may-fill?ticket=7@ff&refresher=content&id=1")
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("bad fill ticket"),
        "{body}"
    );

    let token = publisher
        .refresh_all("content")
        .await
        .unwrap()
        .token()
        .unwrap();
    let (status, _) = api.json(&format!("/applied?token={token}")).await;
    assert_eq!(status, 200);
    let (_, body) = ask("refresher=content&key=home").await;
    assert_eq!(
        body["fill"], false,
        "a refresh-all after the ticket: {body}"
    );
}
