//! How times, durations and rates are shown, on the dashboard and in the terminal.
//!
//! The functions take `impl Borrow<T>`: templates pass references, Rust code values.

use std::borrow::Borrow;

/// A wall-clock time (seconds since the epoch) as `2026-11-26 13:04:05` (UTC).
pub fn time(secs: impl Borrow<f64>) -> String {
    let secs = *secs.borrow();
    #[expect(
        clippy::cast_possible_truncation,
        reason = "seconds since 1970 fit an i64"
    )]
    let secs = secs.floor() as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's
/// `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// A duration in nanoseconds as every report writes it
/// ([`human_ns`](crate::report::model::human_ns)): `850ns`, `12.3µs`, `1.5ms`, `2.4s`.
pub fn ns(v: impl Borrow<u64>) -> String {
    crate::report::model::human_ns(*v.borrow())
}

/// An optional duration; `–` when absent.
pub fn opt_ns(v: impl Borrow<Option<u64>>) -> String {
    v.borrow().map_or_else(|| "–".to_owned(), ns)
}

/// Seconds between two wall-clock times, as a duration.
pub fn span(from: impl Borrow<f64>, to: impl Borrow<Option<f64>>) -> String {
    let from = *from.borrow();
    match *to.borrow() {
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "a positive span in ns"
        )]
        Some(to) if to >= from => ns(((to - from) * 1e9) as u64),
        _ => "–".to_owned(),
    }
}

/// The first 12 characters of a hash or commit.
pub fn short(hash: &str) -> &str {
    hash.get(..12).unwrap_or(hash)
}

/// An optional percentage: `97%`, or `–`.
pub fn percent(v: impl Borrow<Option<u64>>) -> String {
    v.borrow()
        .map_or_else(|| "–".to_owned(), |p| format!("{p}%"))
}

/// A plain-text table: columns padded to their widest cell, two spaces apart.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut out = String::new();
        for (i, cell) in cells.enumerate() {
            if i > 0 {
                out.push_str("  ");
            }
            out.push_str(cell);
            let pad = widths
                .get(i)
                .copied()
                .unwrap_or(0)
                .saturating_sub(cell.chars().count());
            out.extend(std::iter::repeat_n(' ', pad));
        }
        out.truncate(out.trim_end().len());
        out.push('\n');
        out
    };
    let mut out = line(&mut headers.iter().copied());
    for row in rows {
        out.push_str(&line(&mut row.iter().map(String::as_str)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_utc_calendar_dates() {
        assert_eq!(time(0.0), "1970-01-01 00:00:00");
        assert_eq!(time(1_764_162_245.9), "2025-11-26 13:04:05");
        assert_eq!(time(951_782_400.0), "2000-02-29 00:00:00");
    }

    #[test]
    fn durations_keep_three_digits() {
        assert_eq!(ns(850), "850ns");
        assert_eq!(ns(12_345), "12.3µs");
        assert_eq!(ns(1_500_000), "1.5ms");
        assert_eq!(ns(2_400_000_000), "2.4s");
        assert_eq!(ns(250_000_000), "250ms");
        assert_eq!(span(10.0, Some(11.5)), "1.5s");
        assert_eq!(span(10.0, None), "–");
    }

    #[test]
    fn tables_align_their_columns() {
        let t = table(
            &["a", "long header"],
            &[
                vec!["wide cell".into(), "x".into()],
                vec!["b".into(), String::new()],
            ],
        );
        assert_eq!(t, "a          long header\nwide cell  x\nb\n");
    }
}
