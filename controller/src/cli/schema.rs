//! `atropos schema`: the JSON Schema of experiment files, for editors.

use super::EXIT_OK;

pub(super) fn main() -> u8 {
    let schema = crate::spec::json_schema();
    println!(
        "{}",
        serde_json::to_string_pretty(&schema).expect("a JSON value always prints")
    );
    EXIT_OK
}
