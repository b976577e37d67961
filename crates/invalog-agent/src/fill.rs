//! The stale-fill guard over HTTP (docs/http-api.md): `/fill-ticket` hands
//! out a ticket (the node's applied position and the guard's epoch) to take
//! before reading the source of truth; `/may-fill?ticket=T&refresher=R&id=N`
//! (or `uuid=`, `key=`) answers `{"fill": true|false, "why": …}`: true only
//! if nothing that changes that entry was applied after the ticket. Both are
//! answered from memory, without waiting. See `invalog::node::FillTicket`.

use std::collections::HashMap;

use axum::extract::rejection::QueryRejection;
use axum::extract::Query;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use uuid::Uuid;

use super::http::error;
use invalog::node::{FillKey, FillTicket, FillVerdict};
use invalog::Node;

/// `GET /fill-ticket`.
pub(super) fn ticket(node: &Node) -> Response {
    let ticket = node.fill_ticket();
    let body = json!({
        "ticket": ticket.to_string(),
        "applied_sequence": ticket.position.sequence,
    });
    (StatusCode::OK, Json(body)).into_response()
}

/// `GET /may-fill?ticket=T&refresher=R&id=N` (or `uuid=`, `key=`); several
/// refreshers, comma-separated, must all allow the fill.
pub(super) fn may_fill(
    node: &Node,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Response {
    let query = match query {
        Ok(Query(query)) => query,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text(), json!({})),
    };
    let (ticket, refreshers, key) = match parse(&query) {
        Ok(parsed) => parsed,
        Err(message) => return error(StatusCode::BAD_REQUEST, message, json!({})),
    };
    let key = match &key {
        Entry::Id(id) => FillKey::Id(*id),
        Entry::Uuid(id) => FillKey::Uuid(*id),
        Entry::Key(key) => FillKey::Key(key),
    };
    let verdict = refreshers
        .iter()
        .map(|refresher| node.may_fill(&ticket, refresher, key))
        .find(|verdict| !verdict.may_fill())
        .unwrap_or(FillVerdict::Fill);
    let body = json!({
        "fill": verdict.may_fill(),
        "why": verdict.to_string(),
        "ticket": ticket.to_string(),
    });
    (StatusCode::OK, Json(body)).into_response()
}

/// The entry asked about, as parsed from the query.
#[derive(Debug, PartialEq)]
enum Entry {
    Id(i64),
    Uuid(Uuid),
    Key(String),
}

type Parsed = (FillTicket, Vec<String>, Entry);

/// `ticket`, `refresher` (one or more, comma-separated) and exactly one of
/// `id`, `uuid`, `key`; or a message for a 400.
fn parse(query: &HashMap<String, String>) -> Result<Parsed, String> {
    let example =
        "for example /may-fill?ticket=42@18a3c5e2f0b1d400.6c1f0a2e9b3d4f58&refresher=products&id=7";
    let ticket = query
        .get("ticket")
        .ok_or_else(|| {
            format!("missing query parameter `ticket`: take one from /fill-ticket before reading the source of truth ({example})")
        })?
        .parse::<FillTicket>()
        .map_err(|e| e.to_string())?;
    let refreshers: Vec<String> = query
        .get("refresher")
        .map(|r| r.split(',').map(|r| r.trim().to_owned()).collect())
        .unwrap_or_default();
    if refreshers.is_empty() || refreshers.iter().any(String::is_empty) {
        return Err(format!(
            "missing query parameter `refresher`: the refresher(s) whose invalidations change the entry, comma-separated ({example})"
        ));
    }
    let key = match (query.get("id"), query.get("uuid"), query.get("key")) {
        (Some(id), None, None) => Entry::Id(id.trim().parse().map_err(|_| {
            format!("bad `id` {id:?}: expected a whole number such as 7")
        })?),
        (None, Some(id), None) => Entry::Uuid(id.trim().parse().map_err(|_| {
            format!("bad `uuid` {id:?}: expected a UUID such as 67e55044-10b1-426f-9247-bb680e5fe0c8")
        })?),
        (None, None, Some(key)) => Entry::Key(key.clone()),
        _ => {
            return Err(format!(
                "give exactly one of `id`, `uuid` or `key`: the entry as the refresher's instructions name it ({example})"
            ))
        }
    };
    Ok((ticket, refreshers, key))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_pairs(pairs: &[(&str, &str)]) -> Result<Parsed, String> {
        let q = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        parse(&q)
    }

    #[test]
    fn may_fill_query() {
        let (ticket, refreshers, key) = parse_pairs(&[
            ("ticket", "4@ff.2"),
            ("refresher", "products, prices"),
            ("id", "7"),
        ])
        .unwrap();
        assert_eq!(ticket.to_string(), "4@ff.2");
        assert_eq!(refreshers, ["products", "prices"]);
        assert_eq!(key, Entry::Id(7));
        let key = parse_pairs(&[("ticket", "4@ff.2"), ("refresher", "p"), ("key", "a b")]);
        assert_eq!(key.unwrap().2, Entry::Key("a b".into()));
        for (pairs, expected) in [
            (
                &[("refresher", "p"), ("id", "1")][..],
                "missing query parameter `ticket`",
            ),
            (
                &[("ticket", "4@ff"), ("refresher", "p"), ("id", "1")],
                "bad fill ticket",
            ),
            (
                &[("ticket", "4@ff.2"), ("id", "1")],
                "missing query parameter `refresher`",
            ),
            (
                &[("ticket", "4@ff.2"), ("refresher", "p,"), ("id", "1")],
                "`refresher`",
            ),
            (
                &[("ticket", "4@ff.2"), ("refresher", "p")],
                "exactly one of",
            ),
            (
                &[
                    ("ticket", "4@ff.2"),
                    ("refresher", "p"),
                    ("id", "1"),
                    ("key", "k"),
                ],
                "exactly one of",
            ),
            (
                &[("ticket", "4@ff.2"), ("refresher", "p"), ("id", "x")],
                "bad `id`",
            ),
            (
                &[("ticket", "4@ff.2"), ("refresher", "p"), ("uuid", "x")],
                "bad `uuid`",
            ),
        ] {
            let message = parse_pairs(pairs).unwrap_err();
            assert!(message.contains(expected), "{pairs:?}: {message}");
        }
    }
}
