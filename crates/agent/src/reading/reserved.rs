//! Reserved tag names: readings a source produces about the device itself rather than about
//! a profile tag. They start with `_` (profile tag names cannot) and the rules know them.

/// OPC UA `ServerStatus.State` (0 = Running), as an integer.
pub const SERVER_STATE: &str = "_server.state";
/// Prefix of a Modbus device's diagnostic counter readings (`_modbus.diag.<counter>`).
pub const MODBUS_DIAG_PREFIX: &str = "_modbus.diag.";
/// Modbus: requests the agent itself has sent to the unit since it started (cumulative),
/// handed over with every read of the diagnostic counters, so the rules can tell the agent's
/// own share of the device's message count from everyone else's.
pub const MODBUS_OWN_REQUESTS: &str = "_modbus.own.requests";
/// Modbus: exception responses the agent itself has received from the unit (cumulative),
/// likewise, against the device's exception count.
pub const MODBUS_OWN_EXCEPTIONS: &str = "_modbus.own.exceptions";
/// OPC UA `ServerStatus.StartTime`, RFC 3339 text.
pub const SERVER_START_TIME: &str = "_server.start_time";
/// OPC UA `ServerStatus.CurrentTime`, RFC 3339 text (clock skew).
pub const SERVER_CURRENT_TIME: &str = "_server.current_time";
/// OPC UA `BuildInfo.SoftwareVersion`.
pub const SOFTWARE_VERSION: &str = "_server.build.software_version";
/// OPC UA `ServerDiagnosticsSummary.CurrentSessionCount`.
pub const CURRENT_SESSIONS: &str = "_diag.current_session_count";
/// OPC UA: sessions this agent itself holds on the same server (every station of the
/// gateway that connects to that endpoint), so they are not taken for someone else's.
pub const OWN_SESSIONS: &str = "_agent.own_session_count";
/// OPC UA `ServerDiagnosticsSummary.SecurityRejectedSessionCount`.
pub const SECURITY_REJECTED_SESSIONS: &str = "_diag.security_rejected_session_count";
/// OPC UA `ServerDiagnosticsSummary.RejectedSessionCount`.
pub const REJECTED_SESSIONS: &str = "_diag.rejected_session_count";
/// Prefix of what endpoint discovery learns about a server's security, with or without a
/// session (`_security.best_policy`, `_security.offers_none`).
pub const SECURITY_PREFIX: &str = "_security.";
/// OPC UA: the strongest security policy the endpoints offer, as its short name
/// (`None`, `Basic128Rsa15`, `Basic256`, `Basic256Sha256`, `Aes128_Sha256_RsaOaep`,
/// `Aes256_Sha256_RsaPss`).
pub const BEST_POLICY: &str = "_security.best_policy";
/// Security policies by strength, weakest first, by the short name of their URI (the part
/// after `#`), as [`BEST_POLICY`] reports them.
pub const POLICY_STRENGTH: &[&str] = &[
    "None",
    "Basic128Rsa15",
    "Basic256",
    "Aes128_Sha256_RsaOaep",
    "Basic256Sha256",
    "Aes256_Sha256_RsaPss",
];
/// OPC UA: whether any endpoint offers security mode None (bool).
pub const OFFERS_NONE: &str = "_security.offers_none";

/// True for a reserved (source-produced) tag name.
pub fn is_reserved(tag: &str) -> bool {
    tag.starts_with('_')
}
