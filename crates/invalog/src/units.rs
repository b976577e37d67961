//! Durations and sizes as people write them: `7d`, `2m`, `1500ms`, `10GiB`,
//! `1MiB` — the forms the configuration accepts — for messages, `invalog
//! stream show` and the effective configuration.

use std::time::Duration;

/// The largest unit (`d`, `h`, `m`, `s`, `ms`) that divides `d` exactly,
/// like `7d` or `90s`; finer durations as humantime writes them.
pub fn duration(d: Duration) -> String {
    const UNITS: [(u64, &str); 4] = [(86_400, "d"), (3600, "h"), (60, "m"), (1, "s")];
    if d.is_zero() {
        return "0s".into();
    }
    if d.subsec_nanos() == 0 {
        let secs = d.as_secs();
        if let Some((unit, name)) = UNITS.iter().find(|(unit, _)| secs.is_multiple_of(*unit)) {
            return format!("{}{name}", secs / unit);
        }
    }
    if d.subsec_nanos().is_multiple_of(1_000_000) {
        return format!("{}ms", d.as_millis());
    }
    humantime::format_duration(d).to_string()
}

/// Whole GiB, MiB or KiB with their unit (`10GiB`), anything else in bytes
/// (`1000B`).
pub fn size(bytes: u64) -> String {
    const UNITS: [(u64, &str); 3] = [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
    match UNITS
        .iter()
        .find(|(unit, _)| bytes > 0 && bytes.is_multiple_of(*unit))
    {
        Some((unit, name)) => format!("{}{name}", bytes / unit),
        None => format!("{bytes}B"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_in_the_largest_exact_unit() {
        let s = Duration::from_secs;
        assert_eq!(duration(s(7 * 86_400)), "7d");
        assert_eq!(duration(s(36 * 3600)), "36h");
        assert_eq!(duration(s(120)), "2m");
        assert_eq!(duration(s(90)), "90s");
        assert_eq!(duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(duration(Duration::ZERO), "0s");
        assert_eq!(duration(Duration::from_micros(1500)), "1ms 500us");
        for text in ["7d", "36h", "2m", "90s", "1500ms"] {
            let parsed = humantime::parse_duration(text).unwrap();
            assert_eq!(duration(parsed), text, "round trip");
        }
    }

    #[test]
    fn sizes_in_whole_binary_units() {
        assert_eq!(size(10 << 30), "10GiB");
        assert_eq!(size(1 << 20), "1MiB");
        assert_eq!(size(512 << 10), "512KiB");
        assert_eq!(size(1000), "1000B");
        assert_eq!(size(0), "0B");
        for text in ["10GiB", "1MiB", "512KiB", "1000B"] {
            let parsed: bytesize::ByteSize = text.parse().unwrap();
            assert_eq!(size(parsed.as_u64()), text, "round trip");
        }
    }
}
