//! The clock that session and token lifetimes are measured against.

/// Seconds since the Unix epoch (0 if the clock is before it), the unit of `exp`, `iat` and
/// every lifetime in the session (RFC 7519 §2 NumericDate).
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
