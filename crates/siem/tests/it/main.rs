//! The SIEM encoders' integration tests: every catalogue type in every format, hostile data,
//! the golden samples, the OCSF output against the official schema (validated by Python's
//! `ocsf-json-schema` + `jsonschema`), and `docs/SIEM.md` against the code.
//!
//! `LINESENTRY_BLESS=1` rewrites the golden files and the generated parts of `docs/SIEM.md`.

/// The repository's top directory, as a literal for `concat!`.
macro_rules! repo {
    () => {
        concat!(env!("CARGO_MANIFEST_DIR"), "/../..")
    };
}

mod docs;
mod formats;
mod golden;
mod hostile;
mod independent;
mod ocsf_schema;
mod parse;
mod samples;
#[cfg(feature = "transport")]
mod transport;
