//! Event queries and stats (filled in with the query API).
