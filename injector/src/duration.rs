//! How a duration is written, everywhere: every report of atropos and the injector's own
//! reason lines (skipped steps) use this one function.

/// A duration in nanoseconds with at most three significant digits and no trailing zeros:
/// `850ns`, `9.9µs`, `12.3µs`, `1.25ms`, `1.5s`, `250ms`.
///
/// The value is first rounded to three significant digits ([`round3`]), so that a figure
/// computed from rounded values (the latency percentiles) reads exactly as the same figure
/// computed from exact ones.
pub fn human_ns(ns: u64) -> String {
    let v = round3(ns);
    if v < 1_000 {
        return format!("{v}ns");
    }
    let (unit_ns, unit) = if v < 1_000_000 {
        (1_000, "µs")
    } else if v < 1_000_000_000 {
        (1_000_000, "ms")
    } else {
        (1_000_000_000, "s")
    };
    let whole = v / unit_ns;
    // Three significant digits: as many decimals as the whole part leaves room for.
    let decimals = match whole {
        0..=9 => 2,
        10..=99 => 1,
        _ => 0,
    };
    let scale = 10u64.pow(decimals);
    let frac = (v % unit_ns) / (unit_ns / scale);
    let mut text = format!("{whole}");
    if frac > 0 {
        let digits = format!("{frac:0width$}", width = decimals as usize);
        text.push('.');
        text.push_str(digits.trim_end_matches('0'));
    }
    text.push_str(unit);
    text
}

/// `ns` rounded (half up) to three significant digits: 9,898 → 9,900; 1,234,567 → 1,230,000.
pub fn round3(ns: u64) -> u64 {
    if ns < 1_000 {
        return ns;
    }
    let mut scale = 1u64;
    while ns / scale >= 1_000 {
        scale *= 10;
    }
    let rounded = (ns + scale / 2) / scale * scale;
    // 999,5xx rounds up to 1,000,000: still three digits.
    rounded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_keep_three_significant_digits_without_trailing_zeros() {
        assert_eq!(human_ns(850), "850ns");
        assert_eq!(human_ns(9_898), "9.9µs", "not 9µs");
        assert_eq!(human_ns(1_500_000_000), "1.5s", "not 1.500s");
        assert_eq!(human_ns(12_345), "12.3µs");
        assert_eq!(human_ns(1_250_000), "1.25ms");
        assert_eq!(human_ns(250_000_000), "250ms");
        assert_eq!(human_ns(5_000_000_000), "5s");
        assert_eq!(human_ns(168_400), "168µs");
        assert_eq!(
            human_ns(999_600),
            "1ms",
            "rounding may carry into the next unit"
        );
        assert_eq!(human_ns(1_000), "1µs");
    }

    #[test]
    fn rounding_to_three_digits_is_half_up() {
        assert_eq!(round3(999), 999);
        assert_eq!(round3(9_898), 9_900);
        assert_eq!(round3(1_234_567), 1_230_000);
        assert_eq!(round3(1_235_000), 1_240_000);
    }
}
