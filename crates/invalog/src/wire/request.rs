//! The JSON-lines input of `invalog publish --stdin`: one publish request
//! per line, with instructions in the same shape as in a message
//! (docs/wire-format.md), so shell scripts and non-Rust services can publish
//! through the CLI.

use serde::Deserialize;

use super::v1::{from_wire, Wire};
use crate::model::{Instruction, Provenance};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Request {
    refresher: String,
    instructions: Vec<Wire>,
    #[serde(default)]
    actor: Option<String>,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    trace_id: Option<String>,
}

/// One line of `invalog publish --stdin`.
#[derive(Debug, Clone, PartialEq)]
pub struct PublishRequest {
    /// The refresher's name.
    pub refresher: String,
    /// What to publish.
    pub instructions: Vec<Instruction>,
    /// Who and why.
    pub provenance: Provenance,
}

/// Why a request line could not be read: what is wrong, and where in the
/// line (a request is one line, so only the column is given).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("column {column}: {problem}")]
pub struct RequestError {
    /// The column (1-based) where reading stopped.
    pub column: usize,
    /// What is wrong, as serde_json says it, without its position.
    pub problem: String,
}

/// Decodes one request line:
/// `{"refresher":"content","instructions":[{"kind":"refresh_ids","ids":[1,2]}],"actor":"ops"}`.
pub fn decode_publish_request(line: &[u8]) -> Result<PublishRequest, RequestError> {
    let request: Request = serde_json::from_slice(line).map_err(|e| {
        let text = e.to_string();
        let position = format!(" at line {} column {}", e.line(), e.column());
        let problem = text.strip_suffix(&position).unwrap_or(&text);
        let problem = if e.is_syntax() || e.is_eof() {
            format!("not valid JSON: {problem}")
        } else {
            problem.to_owned()
        };
        RequestError {
            column: e.column(),
            problem,
        }
    })?;
    Ok(PublishRequest {
        refresher: request.refresher,
        instructions: request.instructions.into_iter().map(from_wire).collect(),
        provenance: Provenance {
            actor: request.actor,
            reason: request.reason,
            trace_id: request.trace_id,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_a_line_and_names_what_is_wrong() {
        let r = decode_publish_request(
            br#"{"refresher":"content","instructions":[{"kind":"refresh_ids","ids":[1,2]},{"kind":"refresh_all"}],"reason":"import"}"#,
        )
        .unwrap();
        assert_eq!(r.refresher, "content");
        assert_eq!(
            r.instructions,
            vec![Instruction::RefreshIds(vec![1, 2]), Instruction::RefreshAll]
        );
        assert_eq!(r.provenance.reason.as_deref(), Some("import"));
        let err = decode_publish_request(br#"{"refresher":"c","instructions":[{"kind":"nope"}]}"#)
            .unwrap_err();
        assert!(err.to_string().contains("unknown variant `nope`"), "{err}");
        assert!(!err.to_string().contains("line"), "{err}");
        assert_eq!(err.column, 47, "{err}");
        let err = decode_publish_request(b"{").unwrap_err();
        assert_eq!(
            err.to_string(),
            "column 1: not valid JSON: EOF while parsing an object"
        );
    }
}
