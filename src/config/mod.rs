//! Configuration: TOML files in, validated settings out.
