//! Durable queue.
