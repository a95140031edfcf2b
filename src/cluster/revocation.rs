//! How a revocation (a logged-out provider session) travels between nodes.
//!
//! Each is one Redis string `<prefix>rev:<hex of the zone key>` holding `<until> <since>`
//! (Unix times: until when it holds, and up to which login time it ends sessions, see
//! [`crate::shared::ALL_LOGINS`]), set with an expiry (`EX`) of the time left, so Redis
//! forgets it when no session could still carry it; and one message `<hex> <until> <since>`
//! on channel `<prefix>revoked`, so that nodes mirror it at once. The zone key is a digest of
//! the `sid` or `sub` ([`crate::shared::key`], [`crate::shared::subject_key`]): Redis never
//! sees a session id or user id.

use super::names::{hex, unhex};
use crate::shared::Key;

/// The message announcing a revocation (Unix seconds: until when, up to which login).
pub fn message(key: &Key, until: u64, since: u64) -> Vec<u8> {
    format!("{} {until} {since}", hex(key)).into_bytes()
}

/// Reads a message of [`message`]'s shape; anything else is ignored by the caller.
pub fn parse_message(m: &[u8]) -> Option<(Key, u64, u64)> {
    let s = core::str::from_utf8(m).ok()?;
    let (k, rest) = s.split_once(' ')?;
    let (until, since) = parse_times(rest)?;
    Some((unhex(k.as_bytes())?, until, since))
}

/// The value stored under a revocation's key.
pub fn value(until: u64, since: u64) -> Vec<u8> {
    format!("{until} {since}").into_bytes()
}

/// Reads a stored value: until, since.
pub fn parse_value(v: &[u8]) -> Option<(u64, u64)> {
    parse_times(core::str::from_utf8(v).ok()?)
}

fn parse_times(s: &str) -> Option<(u64, u64)> {
    let (until, since) = s.split_once(' ')?;
    Some((until.parse().ok()?, since.parse().ok()?))
}

/// Seconds Redis keeps a revocation that holds until `until`; `None` once it is over.
pub fn expiry(until: u64, now: u64) -> Option<u64> {
    (until > now).then(|| until - now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::names::Names;
    use crate::shared::{key, ALL_LOGINS};

    #[test]
    fn keys_and_messages_round_trip_and_carry_no_session_id() {
        let n = Names::new("ngx-oidc:kc:");
        let k = key(b"sid-42");
        let rk = n.key(&k);
        assert!(rk.starts_with(b"ngx-oidc:kc:rev:"));
        assert!(!String::from_utf8_lossy(&rk).contains("sid-42"));
        assert_eq!(n.parse_key(&rk), Some(k));
        assert_eq!(
            parse_message(&message(&k, 1700, ALL_LOGINS)),
            Some((k, 1700, ALL_LOGINS))
        );
        assert_eq!(parse_value(&value(1700, 1500)), Some((1700, 1500)));
    }

    #[test]
    fn another_prefix_or_garbage_is_not_ours() {
        let n = Names::new("a:");
        let k = key(b"s");
        assert_eq!(Names::new("b:").parse_key(&n.key(&k)), None);
        assert_eq!(n.parse_key(b"a:rev:zz"), None);
        assert_eq!(parse_message(b"nothex 12"), None);
        assert_eq!(parse_message(b""), None);
    }

    #[test]
    fn redis_forgets_a_revocation_when_it_is_over() {
        assert_eq!(expiry(110, 100), Some(10));
        assert_eq!(expiry(100, 100), None);
    }
}
