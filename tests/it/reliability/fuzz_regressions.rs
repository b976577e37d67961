//! Inputs the decoder fuzz target (`fuzz/fuzz_targets/decode.rs`) found,
//! kept in `tests/fuzz_regressions/` (every file except `README.md`), plus
//! the documented invalid examples: each decodes or yields a typed error,
//! and whatever decodes survives an encode/decode round trip — the fuzz
//! target's own checks, run on every `cargo test`.

use std::path::Path;

fn check(name: &str, data: &[u8]) {
    let outcome = std::panic::catch_unwind(|| {
        if let Ok(batch) = invalog::wire::decode(data) {
            let again = invalog::wire::decode(&invalog::wire::encode(&batch))
                .expect("an accepted batch re-encodes to something decodable");
            assert_eq!(again, batch, "round trip");
        }
        let split = data.iter().position(|b| *b == b'\n').unwrap_or(0);
        let subject = String::from_utf8_lossy(&data[..split]);
        let _ = invalog::wire::decode_on_subject(&subject, &data[split..]);
    });
    assert!(outcome.is_ok(), "{name}: the decoder panicked");
}

#[test]
fn fuzz_regressions_and_invalid_examples_never_panic() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut checked = 0;
    for dir in [
        "tests/fuzz_regressions",
        "docs/wire-format/invalid",
        "docs/wire-format/examples",
    ] {
        for entry in std::fs::read_dir(root.join(dir)).unwrap() {
            let path = entry.unwrap().path();
            if path.file_name().is_some_and(|n| n == "README.md") {
                continue;
            }
            check(&path.display().to_string(), &std::fs::read(&path).unwrap());
            checked += 1;
        }
    }
    assert!(checked > 40, "{checked} inputs");
}
