//! The harnesses' own tests: the private servers of `linesentry_common::local` that every
//! crate's tests (and the collector's demo) rely on leave nothing behind and restart in
//! place.

mod local_servers;
