//! The names of one provider's Redis keys and channel. Every name starts with the provider's
//! prefix (`cluster_store_prefix`), and names a session only by a digest
//! ([`crate::shared::key`]): Redis never sees a session id or token.

use crate::shared::Key;

/// Key and channel names of one provider's cluster store.
#[derive(Debug, Clone)]
pub struct Names {
    prefix: String,
}

impl Names {
    pub fn new(prefix: &str) -> Names {
        Names {
            prefix: prefix.to_string(),
        }
    }

    /// The Redis key of a revocation.
    pub fn key(&self, key: &Key) -> Vec<u8> {
        format!("{}rev:{}", self.prefix, hex(key)).into_bytes()
    }

    /// The `SCAN MATCH` pattern of every revocation of this provider.
    pub fn pattern(&self) -> Vec<u8> {
        format!("{}rev:*", self.prefix).into_bytes()
    }

    /// The zone key of a Redis key found by `SCAN`; `None` for a foreign key.
    pub fn parse_key(&self, redis_key: &[u8]) -> Option<Key> {
        let rest = redis_key.strip_prefix(self.prefix.as_bytes())?;
        unhex(rest.strip_prefix(b"rev:")?)
    }

    /// The lock a node takes in Redis before it refreshes the session whose refresh token
    /// digests to `key`.
    pub fn refresh_lock(&self, key: &Key) -> Vec<u8> {
        format!("{}lock:{}", self.prefix, hex(key)).into_bytes()
    }

    /// Where the refreshed session (sealed with the cookie key) waits for the requests that
    /// still carry the session before the refresh.
    pub fn refresh_result(&self, key: &Key) -> Vec<u8> {
        format!("{}refresh:{}", self.prefix, hex(key)).into_bytes()
    }

    /// The channel that announces revocations.
    pub fn channel(&self) -> Vec<u8> {
        format!("{}revoked", self.prefix).into_bytes()
    }
}

pub(crate) fn hex(key: &Key) -> String {
    key.iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn unhex(s: &[u8]) -> Option<Key> {
    if s.len() != 32 {
        return None;
    }
    let mut k = [0u8; 16];
    for (i, pair) in s.chunks(2).enumerate() {
        let pair = core::str::from_utf8(pair).ok()?;
        k[i] = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(k)
}
