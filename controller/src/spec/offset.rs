//! `offset:` values: a fixed duration, `random` within the phase, or `random(a..b)`.

use std::fmt;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The delay between a phase marker and a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, JsonSchema)]
#[schemars(with = "String")]
pub enum Offset {
    /// Exactly this long.
    Fixed(Duration),
    /// Uniformly random within the phase, as long as the baseline trial measured it.
    Random,
    /// Uniformly random in `[from, to)`.
    Between(Duration, Duration),
}

impl std::str::FromStr for Offset {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s == "random" {
            return Ok(Offset::Random);
        }
        if let Some(inner) = s.strip_prefix("random(").and_then(|r| r.strip_suffix(')')) {
            let (a, b) = inner.split_once("..").ok_or_else(|| {
                format!(
                    "`{s}` is not an offset; expected random(FROM..TO), like random(10ms..200ms)"
                )
            })?;
            let from = parse_duration(a)?;
            let to = parse_duration(b)?;
            if to <= from {
                return Err(format!(
                    "`{s}`: the end of the window must be after its start"
                ));
            }
            return Ok(Offset::Between(from, to));
        }
        parse_duration(s).map(Offset::Fixed).map_err(|_| {
            format!("`{s}` is not an offset; expected a duration like 100ms, `random`, or random(10ms..200ms)")
        })
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(s)
        .map_err(|e| format!("`{s}` is not a duration ({e}); expected e.g. 150ms or 5s"))
}

impl fmt::Display for Offset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Offset::Fixed(d) => write!(f, "{}", humantime::format_duration(*d)),
            Offset::Random => f.write_str("random"),
            Offset::Between(a, b) => {
                write!(
                    f,
                    "random({}..{})",
                    humantime::format_duration(*a),
                    humantime::format_duration(*b)
                )
            }
        }
    }
}

impl Serialize for Offset {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Offset {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Offset;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration like 100ms, `random`, or random(10ms..200ms)")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Offset, E> {
                v.parse().map_err(E::custom)
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Offset, E> {
                if v == 0 {
                    Ok(Offset::Fixed(Duration::ZERO))
                } else {
                    Err(E::custom(format!("`{v}` has no unit; expected e.g. {v}ms")))
                }
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]

    use super::*;

    #[test]
    fn parses_fixed_random_and_windows() {
        assert_eq!(
            "100ms".parse::<Offset>().unwrap(),
            Offset::Fixed(Duration::from_millis(100))
        );
        assert_eq!("random".parse::<Offset>().unwrap(), Offset::Random);
        assert_eq!(
            "random(10ms..2s)".parse::<Offset>().unwrap(),
            Offset::Between(Duration::from_millis(10), Duration::from_secs(2))
        );
        assert!(
            "random(2s..1s)"
                .parse::<Offset>()
                .unwrap_err()
                .contains("after its start")
        );
        assert!(
            "soon"
                .parse::<Offset>()
                .unwrap_err()
                .contains("expected a duration")
        );
    }
}
