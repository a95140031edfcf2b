//! The session a browser carries in its cookie, and the login state of one login attempt.

pub mod codec;
pub mod cookies;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub use codec::KeyRing;

/// ID-token claims that describe the token, not the user: dropped to keep the cookie small.
const TOKEN_BOOKKEEPING: &[&str] = &[
    "iss",
    "aud",
    "exp",
    "iat",
    "nbf",
    "nonce",
    "at_hash",
    "c_hash",
    "s_hash",
    "auth_time",
    "jti",
    "typ",
    "azp",
    "sid",
    "session_state",
    "acr",
    "amr",
];

/// First plaintext byte of a deflated session (plain JSON starts with `{`).
const DEFLATED: u8 = 0x01;
/// Smaller sessions stay plain JSON: inflating would cost more per request than it saves.
const COMPRESS_ABOVE: usize = 1024;
/// Bound on an inflated session, in case a key ever sealed something hostile.
const MAX_INFLATED: usize = 256 * 1024;

/// What a logged-in browser carries, sealed in the session cookie.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Session {
    /// Unix time after which the session is over.
    pub exp: u64,
    /// Unix time of the login.
    pub iat: u64,
    /// The provider's session id, for logout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    /// Identity claims from the ID token (`sub`, `preferred_username`, `email`, `groups`…).
    pub claims: Map<String, Value>,
}

impl Session {
    /// Builds a session from verified ID-token claims.
    pub fn from_id_token(mut claims: Map<String, Value>, now: u64, lifetime: u64) -> Session {
        let sid = match claims.get("sid") {
            Some(Value::String(s)) => Some(s.clone()),
            _ => None,
        };
        claims.retain(|k, _| !TOKEN_BOOKKEEPING.contains(&k.as_str()));
        Session {
            exp: now + lifetime,
            iat: now,
            sid,
            claims,
        }
    }

    pub fn is_valid_at(&self, now: u64) -> bool {
        now < self.exp && self.claims.contains_key("sub")
    }

    /// The user name for `X-Auth-Request-User`: `preferred_username`, else `sub`.
    pub fn user(&self) -> Option<String> {
        self.claim("preferred_username")
            .or_else(|| self.claim("sub"))
    }

    /// A top-level claim as header text: arrays joined by `,`, objects as JSON.
    pub fn claim(&self, name: &str) -> Option<String> {
        claim_text(self.claims.get(name)?)
    }

    /// Seals the session; large ones (many groups) are deflated first so that they fit in
    /// few cookies and nginx's default header buffers.
    pub fn seal(&self, keys: &KeyRing, aad: &[u8]) -> Result<String, codec::SealError> {
        let json = serde_json::to_vec(self).map_err(|_| codec::SealError)?;
        if json.len() > COMPRESS_ABOVE {
            let mut packed = vec![DEFLATED];
            packed.extend(miniz_oxide::deflate::compress_to_vec(&json, 6));
            if packed.len() < json.len() {
                return keys.seal(aad, &packed);
            }
        }
        keys.seal(aad, &json)
    }

    /// Opens a cookie value; `None` for anything not intact, not ours or not a session.
    pub fn open(keys: &KeyRing, aad: &[u8], value: &str) -> Option<Session> {
        let plain = keys.open(aad, value)?;
        if plain.first() == Some(&DEFLATED) {
            let json =
                miniz_oxide::inflate::decompress_to_vec_with_limit(&plain[1..], MAX_INFLATED)
                    .ok()?;
            return serde_json::from_slice(&json).ok();
        }
        serde_json::from_slice(&plain).ok()
    }
}

fn claim_text(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        Value::Array(items) => Some(
            items
                .iter()
                .filter_map(|i| match i {
                    Value::String(s) => Some(s.clone()),
                    Value::Null => None,
                    other => Some(other.to_string()),
                })
                .collect::<Vec<_>>()
                .join(","),
        ),
        Value::Object(_) => Some(v.to_string()),
    }
}

/// What a login attempt must remember between the redirect to the provider and the callback.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LoginState {
    pub state: String,
    pub nonce: String,
    pub verifier: String,
    /// Where to send the browser after login (a checked relative path).
    pub rd: String,
    /// Unix time after which the attempt is void.
    pub exp: u64,
}

impl LoginState {
    /// Cookie name of this attempt: one cookie per attempt lets several tabs log in at once.
    pub fn cookie_name(cookie_name: &str, state: &str) -> String {
        let tag: String = state.chars().take(12).collect();
        format!("{cookie_name}_st_{tag}")
    }

    /// Prefix shared by all login-state cookies of `cookie_name`.
    pub fn cookie_prefix(cookie_name: &str) -> String {
        format!("{cookie_name}_st_")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn a_session_keeps_identity_claims_and_drops_token_bookkeeping() {
        let s = Session::from_id_token(
            claims(
                json!({"sub":"u1","iss":"x","aud":"test","nonce":"n","sid":"s1",
                "preferred_username":"demo","groups":["/a","/b"],"email_verified":true}),
            ),
            1000,
            60,
        );
        assert_eq!(s.exp, 1060);
        assert_eq!(s.sid.as_deref(), Some("s1"));
        assert!(!s.claims.contains_key("iss") && !s.claims.contains_key("nonce"));
        assert_eq!(s.user().as_deref(), Some("demo"));
        assert_eq!(s.claim("groups").as_deref(), Some("/a,/b"));
        assert_eq!(s.claim("email_verified").as_deref(), Some("true"));
        assert_eq!(s.claim("missing"), None);
        assert!(s.is_valid_at(1059) && !s.is_valid_at(1060));
    }

    #[test]
    fn the_user_falls_back_to_sub() {
        let s = Session::from_id_token(claims(json!({"sub":"u1"})), 0, 1);
        assert_eq!(s.user().as_deref(), Some("u1"));
    }

    #[test]
    fn a_session_survives_sealing_and_refuses_another_binding() {
        let keys = KeyRing::parse(&codec::generate_key_line().unwrap()).unwrap();
        let s = Session::from_id_token(claims(json!({"sub":"u1","name":"Ü"})), 5, 10);
        let v = s.seal(&keys, b"_oidc|kc").unwrap();
        assert_eq!(Session::open(&keys, b"_oidc|kc", &v), Some(s));
        assert_eq!(Session::open(&keys, b"_oidc|x", &v), None);
    }

    #[test]
    fn a_session_with_150_groups_is_compressed_to_fit_one_cookie() {
        let keys = KeyRing::parse(&codec::generate_key_line().unwrap()).unwrap();
        let groups: Vec<String> = (1..=150)
            .map(|i| format!("/department-{i:04}/team-with-a-long-name-{i:04}"))
            .collect();
        let s = Session::from_id_token(claims(json!({"sub":"u1","groups":groups})), 5, 10);
        let json_len = serde_json::to_vec(&s).unwrap().len();
        let v = s.seal(&keys, b"a").unwrap();
        assert!(
            v.len() < cookies::MAX_COOKIE_BYTES,
            "{} bytes from {json_len}",
            v.len()
        );
        assert_eq!(Session::open(&keys, b"a", &v), Some(s));
    }

    #[test]
    fn login_state_cookies_are_named_per_attempt() {
        assert_eq!(
            LoginState::cookie_name("_oidc", "abcdefghijklmnop"),
            "_oidc_st_abcdefghijkl"
        );
        assert!(
            LoginState::cookie_name("_oidc", "x").starts_with(&LoginState::cookie_prefix("_oidc"))
        );
    }
}
