//! Text from outside (a publisher's origin, actor, trace id, keys; a
//! command applier's stderr) made safe to print on a terminal: every
//! control character — C0 (newline and tab included), DEL, C1, and so ESC,
//! which starts terminal escape sequences — and the bidirectional
//! overrides and isolates (U+202A–U+202E, U+2066–U+2069), which reorder
//! what is shown, are written as Rust-style escapes such as `\u{1b}`.
//! Used at output time by the human (table/text) output of the CLI; JSON
//! output is left exact (serde escapes control characters itself).

use std::borrow::Cow;
use std::fmt::Write as _;

/// Whether `c` is escaped by [`printable`].
pub fn is_unprintable(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `text` with every character of [`is_unprintable`] written as
/// `\u{XX}`; borrowed when there is none.
pub fn printable(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_unprintable) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if is_unprintable(c) {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// [`printable`] for a text of several lines: its newlines are kept, every
/// other character of [`is_unprintable`] escaped. A last pass over human
/// output whose fields were escaped one by one.
pub fn printable_lines(text: &str) -> Cow<'_, str> {
    if !text.chars().any(|c| c != '\n' && is_unprintable(c)) {
        return Cow::Borrowed(text);
    }
    let lines: Vec<Cow<'_, str>> = text.split('\n').map(printable).collect();
    Cow::Owned(lines.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(printable("\u{1b}[31mred"), "\\u{1b}[31mred");
        assert_eq!(
            printable("a\nb\tc\u{7f}\u{9b}"),
            "a\\u{a}b\\u{9}c\\u{7f}\\u{9b}"
        );
        assert_eq!(printable("x\u{202e}y\u{2066}"), "x\\u{202e}y\\u{2066}");
        assert!(matches!(printable("plain é ü 日本"), Cow::Borrowed(_)));
        assert_eq!(printable_lines("a\u{1b}\nb\n"), "a\\u{1b}\nb\n");
        assert!(matches!(printable_lines("a\nb\n"), Cow::Borrowed(_)));
    }
}
