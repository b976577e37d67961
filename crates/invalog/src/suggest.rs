//! "Did you mean …?": the closest known name to a mistyped one, for error
//! messages that name the fix (unknown refreshers, configuration keys and
//! values).

/// The candidate closest to `given`, if one is close enough to be what was
/// meant: Jaro-Winkler similarity of at least 0.8, or (for words of four
/// letters or more) at most two edits, a transposition counting as one.
pub fn closest<'a>(given: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (c, strsim::jaro_winkler(given, c)))
        .filter(|(c, score)| {
            *score >= 0.8 || (given.len() >= 4 && strsim::osa_distance(given, c) <= 2)
        })
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(c, _)| c)
}

/// The end of an "unknown name" message: "did you mean `x`?" when one of
/// `known` is close to `given`, else the list ("known refreshers: a, b",
/// with `what` = "refreshers"), or "no refreshers are known".
pub fn did_you_mean<'a>(
    given: &str,
    known: impl IntoIterator<Item = &'a str>,
    what: &str,
) -> String {
    let mut known: Vec<&str> = known.into_iter().collect();
    known.sort_unstable();
    known.dedup();
    match closest(given, known.iter().copied()) {
        Some(best) => format!("did you mean `{best}`?"),
        None if known.is_empty() => format!("no {what} are known"),
        None => format!("known {what}: {}", known.join(", ")),
    }
}

/// "did you mean `x`?" or the list of valid choices.
pub fn suggestion(given: &str, candidates: &[&str]) -> String {
    match closest(given, candidates.iter().copied()) {
        Some(best) => format!("did you mean `{best}`?"),
        None => format!(
            "valid: {}",
            candidates
                .iter()
                .map(|c| format!("`{c}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions_catch_typos_and_transpositions() {
        let keys = ["urls", "name", "user", "password", "token"];
        assert_eq!(closest("ulr", keys), Some("urls"));
        assert_eq!(closest("pasword", keys), Some("password"));
        assert_eq!(closest("tokne", keys), Some("token"));
        assert_eq!(closest("completely_else", keys), None);
        assert_eq!(suggestion("zzz", &["a", "b"]), "valid: `a`, `b`");
        let names = ["media", "content", "content"];
        assert_eq!(
            did_you_mean("contnet", names, "refreshers"),
            "did you mean `content`?"
        );
        assert_eq!(
            did_you_mean("zzz", names, "refreshers"),
            "known refreshers: content, media"
        );
        assert_eq!(
            did_you_mean("zzz", [], "refreshers"),
            "no refreshers are known"
        );
    }
}
