//! Signals as a domain type: parsed once at the edge, shown by name everywhere else.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A POSIX signal, by its conventional name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Signal(nix::sys::signal::Signal);

/// A signal name or number that is not a signal.
#[derive(Debug, thiserror::Error)]
#[error("`{0}` is not a signal; expected a name like SIGTERM or TERM, or a number like 15")]
pub struct UnknownSignal(pub String);

impl Signal {
    /// SIGTERM.
    pub const TERM: Signal = Signal(nix::sys::signal::Signal::SIGTERM);
    /// SIGKILL.
    pub const KILL: Signal = Signal(nix::sys::signal::Signal::SIGKILL);
    /// SIGINT.
    pub const INT: Signal = Signal(nix::sys::signal::Signal::SIGINT);
    /// SIGSTOP.
    pub const STOP: Signal = Signal(nix::sys::signal::Signal::SIGSTOP);
    /// SIGCONT.
    pub const CONT: Signal = Signal(nix::sys::signal::Signal::SIGCONT);

    /// The signal number.
    pub fn number(self) -> i32 {
        self.0 as i32
    }

    /// Builds a signal from its number, as found in a wait status.
    pub fn from_number(n: i32) -> Option<Signal> {
        nix::sys::signal::Signal::try_from(n).ok().map(Signal)
    }

    /// The conventional name, `SIGTERM`.
    pub fn name(self) -> &'static str {
        self.0.as_str()
    }
}

impl FromStr for Signal {
    type Err = UnknownSignal;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let trimmed = s.trim();
        if let Ok(n) = trimmed.parse::<i32>() {
            return Signal::from_number(n).ok_or_else(|| UnknownSignal(s.to_owned()));
        }
        let upper = trimmed.to_ascii_uppercase();
        let full = if upper.starts_with("SIG") {
            upper
        } else {
            format!("SIG{upper}")
        };
        nix::sys::signal::Signal::from_str(&full)
            .map(Signal)
            .map_err(|_| UnknownSignal(s.to_owned()))
    }
}

impl TryFrom<&str> for Signal {
    type Error = UnknownSignal;

    fn try_from(s: &str) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl utoipa::PartialSchema for Signal {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some("^SIG[A-Z0-9+-]+$"))
            .description(Some("A signal by name: SIGTERM, SIGKILL, SIGRTMIN+3, ..."))
            .into()
    }
}

impl utoipa::ToSchema for Signal {}

impl Serialize for Signal {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for Signal {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Signal;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a signal name like SIGTERM or TERM, or a number like 15")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Signal, E> {
                v.parse().map_err(E::custom)
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Signal, E> {
                i32::try_from(v)
                    .ok()
                    .and_then(Signal::from_number)
                    .ok_or_else(|| E::custom(UnknownSignal(v.to_string())))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Signal, E> {
                i32::try_from(v)
                    .ok()
                    .and_then(Signal::from_number)
                    .ok_or_else(|| E::custom(UnknownSignal(v.to_string())))
            }
        }
        d.deserialize_any(Visitor)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]

    use super::*;

    #[test]
    fn parses_full_name_short_name_lowercase_and_number() {
        for text in ["SIGTERM", "TERM", "sigterm", "term", "15"] {
            assert_eq!(text.parse::<Signal>().unwrap(), Signal::TERM, "{text}");
        }
        assert_eq!("SIGUSR1".parse::<Signal>().unwrap().to_string(), "SIGUSR1");
    }

    #[test]
    fn rejects_unknown_names_and_numbers_with_a_hint() {
        let err = "SIGTREM".parse::<Signal>().unwrap_err().to_string();
        assert!(err.contains("SIGTREM") && err.contains("expected"), "{err}");
        assert!("999".parse::<Signal>().is_err());
    }
}
