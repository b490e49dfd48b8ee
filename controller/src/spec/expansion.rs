//! The size of a document as its aliases expand it, counted before anything is copied.
//!
//! The YAML library replays an anchored value at every alias: a 1 MB string aliased 999
//! times became 1 GB of `String`s, 20,000 times an abort for lack of memory. Its own guard
//! counts jumps, not bytes. This walk visits the parsed document as the experiment's types
//! would, but only adds up scalar bytes (borrowed, never copied) and values, and stops at
//! the first budget exceeded, so the expensive copy never starts.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use super::limits::{MAX_EXPANDED_BYTES, MAX_VALUES};

/// Walks the single document in `doc`; the error says which budget ran out, located by the
/// YAML library at the value being replayed.
pub fn check_expansion(doc: &str) -> Result<(), serde_yaml::Error> {
    let mut budget = Budget {
        bytes: 0,
        values: 0,
    };
    Walk(&mut budget).deserialize(serde_yaml::Deserializer::from_str(doc))
}

struct Budget {
    bytes: usize,
    values: usize,
}

impl Budget {
    fn take<E: de::Error>(&mut self, bytes: usize) -> Result<(), E> {
        self.values += 1;
        self.bytes = self.bytes.saturating_add(bytes);
        if self.values > MAX_VALUES {
            return Err(E::custom(format!(
                "the document holds more than {MAX_VALUES} values once its aliases are \
                 expanded; expected an experiment of a few hundred"
            )));
        }
        if self.bytes > MAX_EXPANDED_BYTES {
            return Err(E::custom(format!(
                "the document holds more than {} KiB of text once its aliases are expanded \
                 (each `*alias` repeats its anchored value); expected far less",
                MAX_EXPANDED_BYTES >> 10
            )));
        }
        Ok(())
    }
}

struct Walk<'b>(&'b mut Budget);

impl<'de> DeserializeSeed<'de> for Walk<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Walk<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.0.take(1)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.0.take(8)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.0.take(8)
    }

    fn visit_i128<E: de::Error>(self, _: i128) -> Result<(), E> {
        self.0.take(16)
    }

    fn visit_u128<E: de::Error>(self, _: u128) -> Result<(), E> {
        self.0.take(16)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        self.0.take(8)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.0.take(v.len())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.0.take(0)
    }

    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        self.0.take(0)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        Walk(self.0).deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.0.take(0)?;
        while seq.next_element_seed(Walk(self.0))?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        self.0.take(0)?;
        while map.next_key_seed(Walk(self.0))?.is_some() {
            map.next_value_seed(Walk(self.0))?;
        }
        Ok(())
    }

    fn visit_enum<A: de::EnumAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        // Only a tagged value reaches here, and the pre-scan has refused tags already.
        Err(de::Error::custom(
            "a tagged value; tags are not part of the experiment format",
        ))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]

    use super::*;

    fn aliased(len: usize, uses: usize) -> String {
        let mut doc = format!("a: &big {}\nb:\n", "x".repeat(len));
        for _ in 0..uses {
            doc.push_str("  - *big\n");
        }
        doc
    }

    #[test]
    fn aliases_within_the_budget_pass() {
        check_expansion(&aliased(1000, 100)).unwrap();
        check_expansion("a: &x { b: [1, 2] }\nc: *x\n").unwrap();
    }

    #[test]
    fn a_big_value_aliased_many_times_stops_at_the_budget_with_its_location() {
        let err = check_expansion(&aliased(250_000, 999)).unwrap_err();
        assert!(err.to_string().contains("KiB of text"), "{err}");
        let at = err.location().unwrap();
        assert_eq!((at.line(), at.column()), (1, 4), "{err}");
    }

    #[test]
    fn nested_aliases_stop_at_the_value_count() {
        let mut doc = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..9 {
            let p = i - 1;
            doc.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        let err = check_expansion(&doc).unwrap_err();
        assert!(err.to_string().contains("values"), "{err}");
    }
}
