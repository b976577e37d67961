//! The JSON documents the `invalog` command prints (`status --json`,
//! `history --json`, `explain --json`, `probe --json`), each documented
//! field by field in docs/operations/ and versioned by a `format` field:
//! fields may be added, never renamed or removed. They live with the
//! command that prints them; the wire format of the log is the library's
//! (`invalog::wire`).

pub mod history;
pub mod probe;
pub mod status;
