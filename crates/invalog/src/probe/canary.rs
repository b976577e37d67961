//! The canary instruction's JSON and the reply a node sends when it applied
//! a canary (see `crate::probe`). Nodes and probes of other invalog
//! versions read them: fields may be added, never renamed or removed.

use serde::{Deserialize, Serialize};

/// What a canary asks for, read from its `refresh_json` instruction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Canary {
    /// The probe run.
    pub probe: String,
    /// The canary's number in the run.
    pub canary: u64,
    /// Core NATS subject for the replies; nodes answer only if it is
    /// `_INVALOG.probe.<probe>` (`crate::probe::check_reply`).
    pub reply: String,
}

#[derive(Serialize, Deserialize)]
struct CanaryJson {
    probe: String,
    canary: u64,
    reply: String,
}

/// A node's answer to a canary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeReply {
    /// The probe run.
    pub probe: String,
    /// The canary's number.
    pub canary: u64,
    /// The node that applied it.
    pub node: String,
    /// The canary's stream sequence.
    pub sequence: u64,
}

#[derive(Serialize, Deserialize)]
struct ProbeReplyJson {
    probe: String,
    canary: u64,
    node: String,
    sequence: u64,
}

/// The JSON document of a canary's `refresh_json` instruction.
pub fn canary_json(canary: &Canary) -> serde_json::Value {
    serde_json::to_value(CanaryJson {
        probe: canary.probe.clone(),
        canary: canary.canary,
        reply: canary.reply.clone(),
    })
    .expect("a canary always serializes")
}

/// Reads a canary from a `refresh_json` document; `None` if it is not one.
pub fn parse_canary(json: &serde_json::Value) -> Option<Canary> {
    let c = CanaryJson::deserialize(json).ok()?;
    Some(Canary {
        probe: c.probe,
        canary: c.canary,
        reply: c.reply,
    })
}

/// Encodes a node's reply.
pub fn encode_probe_reply(reply: &ProbeReply) -> Vec<u8> {
    serde_json::to_vec(&ProbeReplyJson {
        probe: reply.probe.clone(),
        canary: reply.canary,
        node: reply.node.clone(),
        sequence: reply.sequence,
    })
    .expect("a reply always serializes")
}

/// Decodes a node's reply.
pub fn decode_probe_reply(bytes: &[u8]) -> Result<ProbeReply, crate::wire::DecodeError> {
    let r: ProbeReplyJson = serde_json::from_slice(bytes)
        .map_err(|e| crate::wire::DecodeError::Invalid(e.to_string()))?;
    Ok(ProbeReply {
        probe: r.probe,
        canary: r.canary,
        node: r.node,
        sequence: r.sequence,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canaries_and_replies_round_trip() {
        let c = Canary {
            probe: "run-1".into(),
            canary: 7,
            reply: "_INVALOG.probe.run-1".into(),
        };
        assert_eq!(parse_canary(&canary_json(&c)), Some(c));
        assert_eq!(parse_canary(&serde_json::json!({"a": 1})), None);
        let r = ProbeReply {
            probe: "run-1".into(),
            canary: 7,
            node: "web-1".into(),
            sequence: 42,
        };
        assert_eq!(decode_probe_reply(&encode_probe_reply(&r)).unwrap(), r);
    }
}
