//! What one worker remembers about a provider: its discovery document and keys.

use super::jws::JwkSet;

use super::discovery::Discovery;

/// How long a discovery document or JWKS is used before it is fetched again.
pub const TTL: u64 = 3600;
/// An unknown `kid` triggers a JWKS refetch at most this often (a forged token must not turn
/// every request into a provider call).
pub const JWKS_REFETCH_INTERVAL: u64 = 10;

/// One provider's discovery document and JWKS as a worker last fetched them, with the Unix
/// time (seconds) of each fetch.
#[derive(Default)]
pub struct ProviderCache {
    discovery: Option<(Discovery, u64)>,
    jwks: Option<(JwkSet, u64)>,
}

/// Whether the JWKS at hand can verify a token.
pub enum Keys<'a> {
    /// These keys are fresh enough (or were just fetched): verify with them.
    Ready(&'a JwkSet),
    /// Fetch the JWKS (again) first.
    Fetch,
}

impl ProviderCache {
    /// The discovery document, when fetched less than [`TTL`] ago.
    pub fn discovery(&self, now: u64) -> Option<&Discovery> {
        self.discovery
            .as_ref()
            .filter(|(_, at)| now < at + TTL)
            .map(|(d, _)| d)
    }

    /// Any discovery document ever fetched: better than none while the provider is down.
    pub fn stale_discovery(&self) -> Option<&Discovery> {
        self.discovery.as_ref().map(|(d, _)| d)
    }

    /// Keeps `d`, fetched at `now` (Unix seconds).
    pub fn set_discovery(&mut self, d: Discovery, now: u64) {
        self.discovery = Some((d, now));
    }

    /// Keys for a token signed with `kid`: fetch when there are none, when they are old, or when
    /// the key is unknown and the last fetch is not too recent (providers rotate keys).
    pub fn keys(&self, kid: Option<&str>, now: u64) -> Keys<'_> {
        match &self.jwks {
            None => Keys::Fetch,
            Some((_, at)) if now >= at + TTL => Keys::Fetch,
            Some((set, at)) => {
                let known = kid.is_none_or(|k| set.find(k).is_some());
                if known || now < at + JWKS_REFETCH_INTERVAL {
                    Keys::Ready(set)
                } else {
                    Keys::Fetch
                }
            }
        }
    }

    /// Keys from an earlier fetch, for when a refetch failed.
    pub fn stale_keys(&self) -> Option<&JwkSet> {
        self.jwks.as_ref().map(|(s, _)| s)
    }

    /// Keeps the JWKS `set`, fetched at `now` (Unix seconds).
    pub fn set_keys(&mut self, set: JwkSet, now: u64) {
        self.jwks = Some((set, now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(kid: &str) -> JwkSet {
        serde_json::from_str(&format!(
            r#"{{"keys":[{{"kty":"RSA","kid":"{kid}","n":"AQAB","e":"AQAB"}}]}}"#
        ))
        .unwrap()
    }

    #[test]
    fn keys_are_fetched_when_missing_old_or_rotated() {
        let mut c = ProviderCache::default();
        assert!(matches!(c.keys(Some("a"), 100), Keys::Fetch));
        c.set_keys(set("a"), 100);
        assert!(matches!(c.keys(Some("a"), 101), Keys::Ready(_)));
        assert!(matches!(c.keys(None, 101), Keys::Ready(_)));
        // An unknown kid right after a fetch does not fetch again…
        assert!(matches!(c.keys(Some("b"), 101), Keys::Ready(_)));
        // …but does once the refetch interval has passed.
        assert!(matches!(
            c.keys(Some("b"), 100 + JWKS_REFETCH_INTERVAL),
            Keys::Fetch
        ));
        assert!(matches!(c.keys(Some("a"), 100 + TTL), Keys::Fetch));
        assert!(c.stale_keys().is_some());
    }

    #[test]
    fn discovery_expires_but_stays_available_as_stale() {
        let mut c = ProviderCache::default();
        let d = Discovery {
            issuer: "i".into(),
            authorization_endpoint: "a".into(),
            token_endpoint: "t".into(),
            jwks_uri: "j".into(),
            userinfo_endpoint: None,
            end_session_endpoint: None,
            authorization_response_iss_parameter_supported: false,
        };
        c.set_discovery(d, 0);
        assert!(c.discovery(TTL - 1).is_some());
        assert!(c.discovery(TTL).is_none());
        assert!(c.stale_discovery().is_some());
    }
}
