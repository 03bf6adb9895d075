//! The event crate's integration tests: the wire form against its JSON Schema, checked by an
//! independent validator (Python jsonschema).

/// The repository's top directory, as a literal for `concat!`.
macro_rules! repo {
    () => {
        concat!(env!("CARGO_MANIFEST_DIR"), "/../..")
    };
}

mod event_schema;
