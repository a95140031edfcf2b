//! The session a browser carries in its cookie, and the login state of one login attempt.

pub mod cache;
pub mod codec;
pub mod cookies;
pub mod logins;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use zeroize::{Zeroize, Zeroizing};

use crate::header_value;
pub use codec::KeyRing;

use crate::oidc::id_token::ROLE_CLAIMS;

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
    /// Refresh token, when the provider issued one: it keeps the session alive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rt: Option<String>,
    /// Access token, kept only when a location passes it upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
    /// Unix time the access token expires (0: unknown, never refreshed).
    #[serde(default)]
    pub at_exp: u64,
    /// Unix time the access token was received (0 in sessions sealed before it was kept): with
    /// `at_exp` it gives the token's lifetime, which bounds the refresh leeway.
    #[serde(default)]
    pub at_iat: u64,
    /// The ID token, kept for `id_token_hint` at logout when it is small.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idt: Option<String>,
}

/// What the token endpoint gave, reduced to what a session keeps.
pub struct Tokens<'a> {
    /// The refresh token (RFC 6749 §6), when there is one.
    pub refresh_token: Option<&'a str>,
    /// The access token, when the session keeps it for the upstream.
    pub access_token: Option<&'a str>,
    /// Seconds the access token lives (`expires_in`, or the access token's own `exp`); `None`
    /// when the provider does not say.
    pub expires_in: Option<u64>,
    /// Seconds the refresh token lives (Keycloak's `refresh_expires_in`); `None` when unknown.
    pub refresh_expires_in: Option<u64>,
    /// The ID token, kept for `id_token_hint` when small enough.
    pub id_token: Option<&'a str>,
}

/// Largest ID token kept for the logout hint; bigger ones (users in many groups) would cost
/// a cookie chunk on every request, and providers accept logout with `client_id` instead.
pub const MAX_ID_TOKEN_HINT: usize = 2048;

/// Lifetime assumed for an access token that goes upstream when the provider tells neither
/// `expires_in` nor an `exp` in the token, and a refresh token can renew it: renewing it this
/// often is cheap, passing on a token that may have expired is not.
pub const ASSUMED_ACCESS_TOKEN_LIFETIME: u64 = 60;

impl Session {
    /// Builds a session from verified ID-token claims.
    pub fn from_id_token(claims: Map<String, Value>, now: u64, lifetime: u64) -> Session {
        let sid = match claims.get("sid") {
            Some(Value::String(s)) => Some(s.clone()),
            _ => None,
        };
        Session {
            exp: now + lifetime,
            iat: now,
            sid,
            claims: identity(claims),
            rt: None,
            at: None,
            at_exp: 0,
            at_iat: 0,
            idt: None,
        }
    }

    /// Takes the identity claims of a refreshed ID token: a group or role change at the
    /// provider shows from the next refresh, not only from the next login.
    /// Role claims the new ID token lacks stay as they were: they came from the access token.
    pub fn with_claims(mut self, claims: Map<String, Value>) -> Session {
        let mut claims = identity(claims);
        if !ROLE_CLAIMS.iter().any(|c| claims.contains_key(*c)) {
            for c in ROLE_CLAIMS {
                if let Some(v) = self.claims.remove(*c) {
                    claims.insert(c.to_string(), v);
                }
            }
        }
        self.claims = claims;
        self
    }

    /// Takes the role claims of a verified access token (see [`ROLE_CLAIMS`]): when it has
    /// any, they replace the session's, so that a role taken away at the provider is gone
    /// after the next refresh; when it has none, the ID token's (an administrator may have
    /// mapped roles there instead) stay.
    pub fn with_roles(mut self, roles: Map<String, Value>) -> Session {
        if ROLE_CLAIMS.iter().any(|c| roles.contains_key(*c)) {
            for c in ROLE_CLAIMS {
                self.claims.remove(*c);
            }
            self.claims.extend(
                roles
                    .into_iter()
                    .filter(|(k, _)| ROLE_CLAIMS.contains(&k.as_str())),
            );
        }
        self
    }

    /// Takes the tokens of a login or refresh. The session then lasts as long as the provider
    /// allows (`refresh_expires_in`), never past `iat + max_lifetime`.
    pub fn with_tokens(
        mut self,
        t: &Tokens,
        now: u64,
        max_lifetime: u64,
        keep_access_token: bool,
    ) -> Session {
        if let Some(rt) = t.refresh_token {
            self.rt = Some(rt.to_string());
        }
        if keep_access_token {
            self.at = t.access_token.map(str::to_string);
        }
        self.at_exp = match t.expires_in {
            Some(e) => now + e,
            None if keep_access_token && self.rt.is_some() => now + ASSUMED_ACCESS_TOKEN_LIFETIME,
            None => 0,
        };
        self.at_iat = now;
        if let Some(idt) = t.id_token.filter(|t| t.len() <= MAX_ID_TOKEN_HINT) {
            self.idt = Some(idt.to_string());
        }
        let cap = self.iat + max_lifetime;
        self.exp = match t.refresh_expires_in {
            Some(e) if e > 0 => (now + e).min(cap),
            _ if t.refresh_token.is_some() => cap,
            _ => self.exp.min(cap),
        };
        self
    }

    /// Keeps the ID token whatever its size, for `$oidc_id_token` (without that variable, an
    /// ID token over [`MAX_ID_TOKEN_HINT`] is left out of the cookie); `None` keeps the one
    /// the session has (a refresh answer need not carry a new one, OIDC Core §12.2).
    pub fn with_id_token(mut self, id_token: Option<&str>) -> Session {
        if let Some(idt) = id_token {
            self.idt = Some(idt.to_string());
        }
        self
    }

    /// Unix time from which the access token is due for a refresh: `leeway` seconds before it
    /// expires, but no earlier than half its lifetime, so that a token shorter than the leeway
    /// is not refreshed on every request. `None` when its expiry is unknown.
    pub fn refresh_due(&self, leeway: u64) -> Option<u64> {
        if self.at_exp == 0 {
            return None;
        }
        let lifetime = self.at_exp.saturating_sub(self.at_iat);
        Some(self.at_exp - leeway.min(lifetime / 2))
    }

    /// Whether the access token is due for a refresh (see [`Session::refresh_due`]) and can be
    /// refreshed.
    pub fn needs_refresh(&self, now: u64, leeway: u64) -> bool {
        self.rt.is_some() && self.refresh_due(leeway).is_some_and(|due| now >= due)
    }

    /// Whether the access token is still valid (or its expiry is unknown).
    pub fn access_token_valid(&self, now: u64) -> bool {
        self.at_exp == 0 || now < self.at_exp
    }

    /// Whether the session is still valid at `now` (Unix seconds) and names a user (`sub`).
    pub fn is_valid_at(&self, now: u64) -> bool {
        now < self.exp && self.claims.contains_key("sub")
    }

    /// The user name for `X-Auth-Request-User` and log lines, as header text (see
    /// [`Session::claim`]): the claim named `user_claim` (the provider's `user_claim`,
    /// `preferred_username` by default), else `sub`.
    pub fn user(&self, user_claim: &str) -> Option<String> {
        self.claim(user_claim).or_else(|| self.claim("sub"))
    }

    /// A top-level claim as header text, the one form in which claims reach headers, variables
    /// and logs: arrays joined by `,`, objects as JSON, every string percent-encoded by
    /// [`crate::header_value`] (control characters, non-ASCII and `%`; in array items `,` too).
    pub fn claim(&self, name: &str) -> Option<String> {
        claim_text(self.claims.get(name)?)
    }

    /// A top-level string claim as the provider sent it, for comparisons and JSON answers,
    /// never for a header.
    pub fn claim_str(&self, name: &str) -> Option<&str> {
        self.claims.get(name)?.as_str()
    }

    /// Seals the session; large ones (many groups) are deflated first so that they fit in
    /// few cookies and nginx's default header buffers.
    pub fn seal(&self, keys: &KeyRing, aad: &[u8]) -> Result<String, codec::SealError> {
        keys.seal(aad, &pack(self)?)
    }

    /// Opens a cookie value; `None` for anything not intact, not ours or not a session.
    pub fn open(keys: &KeyRing, aad: &[u8], value: &[u8]) -> Option<Session> {
        serde_json::from_slice(&unpack(&keys.open(aad, value)?)?).ok()
    }
}

/// `value` as cookie plaintext: JSON, deflated (after a [`DEFLATED`] byte) when it is large
/// and that makes it smaller.
fn pack(value: &impl Serialize) -> Result<Zeroizing<Vec<u8>>, codec::SealError> {
    // Sized up front so that growing does not leave copies of the tokens behind.
    let mut json = Zeroizing::new(Vec::with_capacity(8192));
    serde_json::to_writer(&mut *json, value).map_err(|_| codec::SealError)?;
    if json.len() > COMPRESS_ABOVE {
        let mut packed = Zeroizing::new(vec![DEFLATED]);
        packed.extend(Zeroizing::new(miniz_oxide::deflate::compress_to_vec(&json, 6)).iter());
        if packed.len() < json.len() {
            return Ok(packed);
        }
    }
    Ok(json)
}

/// The JSON of a plaintext made by [`pack`].
fn unpack(plain: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    if plain.first() == Some(&DEFLATED) {
        return miniz_oxide::inflate::decompress_to_vec_with_limit(&plain[1..], MAX_INFLATED)
            .ok()
            .map(Zeroizing::new);
    }
    Some(Zeroizing::new(plain.to_vec()))
}

/// The claims that describe the user (token bookkeeping dropped).
fn identity(mut claims: Map<String, Value>) -> Map<String, Value> {
    claims.retain(|k, _| !TOKEN_BOOKKEEPING.contains(&k.as_str()));
    claims
}

/// The tokens are credentials: wiped when a session leaves the cache or a request ends.
impl Drop for Session {
    fn drop(&mut self) {
        self.rt.zeroize();
        self.at.zeroize();
        self.idt.zeroize();
    }
}

fn claim_text(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(header_value::encode(s).into_owned()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        Value::Array(items) => Some(
            items
                .iter()
                .filter_map(|i| match i {
                    Value::String(s) => Some(header_value::encode_list_item(s).into_owned()),
                    Value::Null => None,
                    other => Some(header_value::encode_list_item(&other.to_string()).into_owned()),
                })
                .collect::<Vec<_>>()
                .join(","),
        ),
        Value::Object(_) => Some(header_value::encode(&v.to_string()).into_owned()),
    }
}

/// A session whose cookie opened, with the upstream headers it implies rendered once: this is
/// what the per-worker cache keeps.
pub struct Verified {
    /// The opened session.
    pub session: Session,
    /// `(name, lower-case name, value)` of each `X-Auth-Request-*` identity header.
    pub headers: Vec<(&'static str, &'static str, String)>,
    /// The user name (`Session::user` with the provider's `user_claim`).
    pub user: Option<String>,
}

impl Verified {
    /// Renders the headers of `session`; `user_claim` names the claim of
    /// `X-Auth-Request-User`.
    pub fn new(session: Session, user_claim: &str) -> Verified {
        let user = session.user(user_claim);
        let mut headers = Vec::with_capacity(4);
        let mut add = |k, lk, v: Option<String>| {
            if let Some(v) = v.filter(|v| !v.is_empty()) {
                headers.push((k, lk, v));
            }
        };
        add("X-Auth-Request-User", "x-auth-request-user", user.clone());
        add(
            "X-Auth-Request-Email",
            "x-auth-request-email",
            session.claim("email"),
        );
        add(
            "X-Auth-Request-Preferred-Username",
            "x-auth-request-preferred-username",
            session.claim("preferred_username"),
        );
        add(
            "X-Auth-Request-Groups",
            "x-auth-request-groups",
            session.claim("groups"),
        );
        Verified {
            session,
            headers,
            user,
        }
    }
}

/// What a login attempt must remember between the redirect to the provider and the callback.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LoginState {
    /// The `state` sent in the authorization request (RFC 6749 §10.12), base64url.
    pub state: String,
    /// The `nonce` sent in the authorization request (OpenID Connect Core §3.1.2.1).
    pub nonce: String,
    /// The PKCE `code_verifier` (RFC 7636 §4.1), base64url.
    pub verifier: String,
    /// Where to send the browser after login (a checked relative path).
    pub rd: String,
    /// Unix time after which the attempt is void.
    pub exp: u64,
}

/// The PKCE verifier and nonce prove this login: wiped when dropped.
impl Drop for LoginState {
    fn drop(&mut self) {
        self.verifier.zeroize();
        self.nonce.zeroize();
        self.state.zeroize();
    }
}

/// A login state sealed for its cookie.
pub struct SealedState {
    /// The cookie value (`v1.` + base64url, see [`codec`]).
    pub value: String,
    /// Set when the return URL asked for did not fit and a shorter one was kept.
    pub shortened: Option<Shortened>,
}

/// A return URL too big for the login-state cookie, and what the state keeps instead.
#[derive(Debug, PartialEq, Eq)]
pub struct Shortened {
    /// Length of the return URL asked for, in bytes.
    pub asked: usize,
    /// Bytes its login-state cookie (`name=value`) would have taken, compressed.
    pub cookie_bytes: usize,
    /// The return URL kept: its path without the query, else `/`.
    pub kept: String,
}

impl LoginState {
    /// Seals this login state for its cookie (see [`LoginState::cookie_name`]). The state
    /// holds the return URL, so a big one is deflated (app-state URLs like Kibana's
    /// `?_g=(…)&_a=(…)` shrink several times); the cookie, name and value together, must stay
    /// within [`cookies::MAX_COOKIE_BYTES`], as a browser drops a bigger one. A return URL that
    /// does not fit even so is replaced by its path without the query, else by `/`, and
    /// [`SealedState::shortened`] says so.
    ///
    /// Deflating next to the PKCE verifier is safe: each state has fresh random secrets, so a
    /// length oracle (CRIME) sees each secret once.
    pub fn seal_for_cookie(
        &mut self,
        keys: &KeyRing,
        aad: &[u8],
        cookie_name: &str,
    ) -> Result<SealedState, codec::SealError> {
        let name_bytes = LoginState::cookie_name(cookie_name, &self.state).len() + 1;
        let asked = self.rd.len();
        let mut first_bytes = 0;
        loop {
            let value = keys.seal(aad, &pack(self)?)?;
            let bytes = name_bytes + value.len();
            if first_bytes == 0 {
                first_bytes = bytes;
            }
            if bytes <= cookies::MAX_COOKIE_BYTES {
                let shortened = (self.rd.len() != asked).then(|| Shortened {
                    asked,
                    cookie_bytes: first_bytes,
                    kept: self.rd.clone(),
                });
                return Ok(SealedState { value, shortened });
            }
            let path = &self.rd[..self.rd.find('?').unwrap_or(self.rd.len())];
            self.rd = if path.len() < self.rd.len() && !path.is_empty() {
                path.to_string()
            } else if self.rd != "/" {
                "/".to_string()
            } else {
                return Err(codec::SealError);
            };
        }
    }

    /// The state in a plaintext opened from its cookie; `None` when it is not one.
    pub fn from_plaintext(plain: &[u8]) -> Option<LoginState> {
        serde_json::from_slice(&unpack(plain)?).ok()
    }

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
        assert_eq!(s.user("preferred_username").as_deref(), Some("demo"));
        assert_eq!(s.user("sub").as_deref(), Some("u1"));
        assert_eq!(s.claim("groups").as_deref(), Some("/a,/b"));
        assert_eq!(s.claim("email_verified").as_deref(), Some("true"));
        assert_eq!(s.claim("missing"), None);
        assert!(s.is_valid_at(1059) && !s.is_valid_at(1060));
    }

    #[test]
    fn roles_come_from_the_access_token_and_follow_it_after_a_refresh() {
        let login = Session::from_id_token(claims(json!({"sub":"u1","groups":["/a"]})), 1000, 60)
            .with_roles(claims(json!({"realm_access":{"roles":["admin"]},
                "resource_access":{"test":{"roles":["editor"]}},"scope":"openid","sid":"s"})));
        assert_eq!(login.claims["realm_access"], json!({"roles":["admin"]}));
        assert!(
            !login.claims.contains_key("scope"),
            "only the roles are kept"
        );
        // A refreshed ID token without roles keeps them; the refreshed access token replaces
        // them, also when a role claim disappears from it.
        let refreshed = login
            .with_claims(claims(json!({"sub":"u1","groups":["/b"]})))
            .with_roles(claims(json!({"realm_access":{"roles":["user"]}})));
        assert_eq!(refreshed.claims["realm_access"], json!({"roles":["user"]}));
        assert!(!refreshed.claims.contains_key("resource_access"));
        assert_eq!(refreshed.claim("groups").as_deref(), Some("/b"));
    }

    #[test]
    fn roles_an_administrator_mapped_into_the_id_token_stay_when_the_access_token_has_none() {
        let s = Session::from_id_token(
            claims(json!({"sub":"u1","realm_access":{"roles":["admin"]}})),
            1000,
            60,
        )
        .with_roles(claims(json!({"scope":"openid"})));
        assert_eq!(s.claims["realm_access"], json!({"roles":["admin"]}));
        let s = s.with_claims(claims(
            json!({"sub":"u1","realm_access":{"roles":["user"]}}),
        ));
        assert_eq!(s.claims["realm_access"], json!({"roles":["user"]}));
    }

    #[test]
    fn refreshed_claims_replace_the_logins_but_not_its_times() {
        let s = Session::from_id_token(claims(json!({"sub":"u1","groups":["/a"]})), 1000, 60)
            .with_claims(claims(
                json!({"sub":"u1","groups":["/b"],"nonce":"n","iat":2000}),
            ));
        assert_eq!(s.claim("groups").as_deref(), Some("/b"));
        assert!(!s.claims.contains_key("nonce") && !s.claims.contains_key("iat"));
        assert_eq!((s.iat, s.exp), (1000, 1060));
    }

    fn tokens(rt: Option<&'static str>, exp: Option<u64>, rexp: Option<u64>) -> Tokens<'static> {
        Tokens {
            refresh_token: rt,
            access_token: Some("at"),
            expires_in: exp,
            refresh_expires_in: rexp,
            id_token: Some("idt"),
        }
    }

    #[test]
    fn a_session_lives_as_long_as_the_refresh_token_capped_by_the_lifetime() {
        let s = Session::from_id_token(claims(json!({"sub":"u"})), 1000, 3600).with_tokens(
            &tokens(Some("r1"), Some(300), Some(1800)),
            1000,
            3600,
            false,
        );
        assert_eq!((s.exp, s.at_exp), (2800, 1300));
        assert_eq!(s.at, None);
        assert_eq!(s.idt.as_deref(), Some("idt"));
        assert!(!s.needs_refresh(1269, 30) && s.needs_refresh(1270, 30));
        // Keycloak extends the refresh token on use, but never past the configured lifetime.
        let s = s.with_tokens(&tokens(Some("r2"), Some(300), Some(1800)), 2500, 3600, true);
        assert_eq!(
            (s.exp, s.at_exp, s.rt.as_deref(), s.at.as_deref()),
            (4300, 2800, Some("r2"), Some("at"))
        );
        let s = s.with_tokens(&tokens(None, Some(300), Some(1800)), 4000, 3600, true);
        assert_eq!((s.exp, s.rt.as_deref()), (4600, Some("r2")));
    }

    #[test]
    fn an_access_token_shorter_than_the_leeway_is_refreshed_at_half_its_life() {
        let login = |exp, keep| {
            Session::from_id_token(claims(json!({"sub":"u"})), 1000, 3600).with_tokens(
                &tokens(Some("r1"), exp, Some(1800)),
                1000,
                3600,
                keep,
            )
        };
        // The field report's shape: a 40 s token and the default 30 s leeway: due after
        // 20 s (half its life), not after 10 s.
        let s = login(Some(40), true);
        assert_eq!(s.refresh_due(30), Some(1020));
        // A 300 s token: 30 s before it expires.
        assert_eq!(login(Some(300), true).refresh_due(30), Some(1270));
        // A 4 s token with the same leeway: due after 2 s, not on every request.
        let s = login(Some(4), true);
        assert_eq!(s.refresh_due(30), Some(1002));
        assert!(!s.needs_refresh(1001, 30) && s.needs_refresh(1002, 30));
        // A session sealed before the receipt time was kept refreshes as it always did.
        let mut old = s.clone();
        old.at_iat = 0;
        assert_eq!(old.refresh_due(30), Some(974));
    }

    #[test]
    fn an_access_token_of_unknown_lifetime_that_goes_upstream_is_renewed_soon() {
        let login = |rt, keep| {
            Session::from_id_token(claims(json!({"sub":"u"})), 1000, 3600).with_tokens(
                &tokens(rt, None, None),
                1000,
                3600,
                keep,
            )
        };
        let s = login(Some("r1"), true);
        assert_eq!(s.at_exp, 1000 + ASSUMED_ACCESS_TOKEN_LIFETIME);
        assert!(!s.access_token_valid(1000 + ASSUMED_ACCESS_TOKEN_LIFETIME));
        // Not passed upstream, or not renewable: the expiry stays unknown.
        assert_eq!(login(Some("r1"), false).at_exp, 0);
        assert_eq!(login(None, true).at_exp, 0);
    }

    #[test]
    fn a_big_id_token_is_kept_only_when_asked_for() {
        let big = "h.".to_string() + &"p".repeat(MAX_ID_TOKEN_HINT) + ".s";
        let t = Tokens {
            id_token: Some(&big),
            ..tokens(Some("r1"), Some(300), None)
        };
        let s = Session::from_id_token(claims(json!({"sub":"u"})), 0, 100)
            .with_tokens(&t, 0, 100, false);
        assert_eq!(
            s.idt, None,
            "a logout hint this big is not worth a cookie chunk"
        );
        let s = s.with_id_token(t.id_token);
        assert_eq!(s.idt.as_deref(), Some(big.as_str()));
        let s = s.with_id_token(None);
        assert_eq!(
            s.idt.as_deref(),
            Some(big.as_str()),
            "a refresh without one keeps it"
        );
    }

    #[test]
    fn without_a_refresh_token_nothing_is_refreshed() {
        let s = Session::from_id_token(claims(json!({"sub":"u"})), 0, 100).with_tokens(
            &tokens(None, Some(10), None),
            0,
            100,
            false,
        );
        assert_eq!(s.exp, 100);
        assert!(!s.needs_refresh(50, 30));
        assert!(!s.access_token_valid(10) && s.access_token_valid(9));
    }

    #[test]
    fn identity_headers_follow_oauth2_proxy() {
        let s = Session::from_id_token(
            claims(
                json!({"sub":"u1","preferred_username":"demo","email":"d@x","groups":["/a","/b"]}),
            ),
            0,
            1,
        );
        let v = Verified::new(s, "preferred_username");
        let names: Vec<(&str, &str)> = v.headers.iter().map(|(k, _, v)| (*k, v.as_str())).collect();
        assert_eq!(
            names,
            [
                ("X-Auth-Request-User", "demo"),
                ("X-Auth-Request-Email", "d@x"),
                ("X-Auth-Request-Preferred-Username", "demo"),
                ("X-Auth-Request-Groups", "/a,/b")
            ]
        );
        assert!(v
            .headers
            .iter()
            .all(|(k, lk, _)| k.to_ascii_lowercase() == *lk));
    }

    #[test]
    fn claims_with_control_characters_become_one_line_header_values() {
        let s = Session::from_id_token(
            claims(
                json!({"sub":"u1\u{0}","preferred_username":"eve\nX-Auth-Request-User: admin",
                "email":"mallory@example.com\r\nX-Auth-Request-User: admin",
                "groups":["/users\r\nX-Auth-Request-Groups: /admins","/a,/admins", 7],
                "name":"Zoë\u{7f}\u{1b}[31m","address":{"street":"a\nb"}}),
            ),
            0,
            1,
        );
        let v = Verified::new(s, "preferred_username");
        for (k, _, value) in &v.headers {
            assert!(
                value.bytes().all(|b| (0x20..0x7f).contains(&b)),
                "{k}: {value:?}"
            );
        }
        let s = &v.session;
        assert_eq!(
            s.claim("email").as_deref(),
            Some("mallory@example.com%0D%0AX-Auth-Request-User: admin")
        );
        assert_eq!(
            s.user("preferred_username").as_deref(),
            Some("eve%0AX-Auth-Request-User: admin")
        );
        assert_eq!(
            s.claim("groups").as_deref(),
            Some("/users%0D%0AX-Auth-Request-Groups: /admins,/a%2C/admins,7")
        );
        assert_eq!(s.claim("name").as_deref(), Some("Zo%C3%AB%7F%1B[31m"));
        assert_eq!(s.claim("address").as_deref(), Some(r#"{"street":"a\nb"}"#));
        assert_eq!(s.claim("sub").as_deref(), Some("u1%00"));
        assert_eq!(s.claim_str("sub"), Some("u1\u{0}"));
    }

    #[test]
    fn the_user_falls_back_to_sub() {
        let s = Session::from_id_token(claims(json!({"sub":"u1"})), 0, 1);
        assert_eq!(s.user("preferred_username").as_deref(), Some("u1"));
    }

    #[test]
    fn user_claim_sub_gives_oauth2_proxys_x_auth_request_user() {
        let s = Session::from_id_token(
            claims(json!({"sub":"u1","preferred_username":"demo","email":"d@x"})),
            0,
            1,
        );
        let v = Verified::new(s, "sub");
        assert_eq!(v.user.as_deref(), Some("u1"));
        assert_eq!(
            v.headers[0],
            ("X-Auth-Request-User", "x-auth-request-user", "u1".into())
        );
    }

    #[test]
    fn a_session_survives_sealing_and_refuses_another_binding() {
        let keys = KeyRing::parse(&codec::generate_key_line().unwrap()).unwrap();
        let s = Session::from_id_token(claims(json!({"sub":"u1","name":"Ü"})), 5, 10);
        let v = s.seal(&keys, b"_oidc|kc").unwrap();
        assert_eq!(Session::open(&keys, b"_oidc|kc", v.as_bytes()), Some(s));
        assert_eq!(Session::open(&keys, b"_oidc|x", v.as_bytes()), None);
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
        assert_eq!(Session::open(&keys, b"a", v.as_bytes()), Some(s));
    }

    fn login_state(rd: &str) -> LoginState {
        LoginState {
            state: "s".repeat(32),
            nonce: "n".repeat(32),
            verifier: "v".repeat(43),
            rd: rd.to_string(),
            exp: 1_764_473_812,
        }
    }

    /// A Kibana-style deep link of `len` bytes: a dashboard's rison state, as Kibana writes it.
    fn kibana_link(len: usize) -> String {
        let mut rd = String::from(
            "/app/dashboards?_g=(filters:!(),\
             refreshInterval:(pause:!t,value:0),time:(from:now-7d,to:now))&_a=(panels:!(",
        );
        let mut i = 0;
        while rd.len() < len - 2 {
            rd.push_str(&format!(
                "(embeddableConfig:(vis:(legendOpen:!f)),gridData:(h:15,i:'{i}',w:24,x:0,y:{}),\
                 panelIndex:'{i}',panelRefName:panel_{i},version:'8.11.0'),",
                i * 15
            ));
            i += 1;
        }
        rd.truncate(len - 2);
        rd.push_str("))");
        rd
    }

    #[test]
    fn a_long_deep_link_survives_in_the_state_cookie_compressed() {
        let keys = KeyRing::parse(&codec::generate_key_line().unwrap()).unwrap();
        for len in [3000, 6000] {
            let rd = kibana_link(len);
            let mut login = login_state(&rd);
            let sealed = login.seal_for_cookie(&keys, b"st", "_oidc").unwrap();
            assert_eq!(sealed.shortened, None, "{len}");
            let name = LoginState::cookie_name("_oidc", &login.state);
            assert!(name.len() + 1 + sealed.value.len() <= cookies::MAX_COOKIE_BYTES);
            let plain = keys.open(b"st", sealed.value.as_bytes()).unwrap();
            let back = LoginState::from_plaintext(&plain).unwrap();
            assert_eq!(back.rd, rd);
            assert_eq!(back, login);
        }
    }

    #[test]
    fn a_return_url_too_big_for_its_cookie_keeps_its_path_or_the_root() {
        let keys = KeyRing::parse(&codec::generate_key_line().unwrap()).unwrap();
        // Random text does not compress: 6000 bytes of it cannot fit 4000.
        let noise = crate::oidc::random_token(4500).unwrap();
        let mut login = login_state(&format!("/app/search?q={noise}"));
        let sealed = login.seal_for_cookie(&keys, b"st", "_oidc").unwrap();
        let shortened = sealed.shortened.unwrap();
        assert_eq!(shortened.asked, 6014);
        assert!(shortened.cookie_bytes > cookies::MAX_COOKIE_BYTES);
        assert_eq!(shortened.kept, "/app/search");
        assert_eq!(login.rd, "/app/search");
        let mut login = login_state(&format!("/{noise}"));
        let sealed = login.seal_for_cookie(&keys, b"st", "_oidc").unwrap();
        assert_eq!(sealed.shortened.unwrap().kept, "/");
        let plain = keys.open(b"st", sealed.value.as_bytes()).unwrap();
        assert_eq!(LoginState::from_plaintext(&plain).unwrap().rd, "/");
    }

    #[test]
    fn a_small_login_state_stays_plain_json() {
        let keys = KeyRing::parse(&codec::generate_key_line().unwrap()).unwrap();
        let mut login = login_state("/app?x=1");
        let sealed = login.seal_for_cookie(&keys, b"st", "_oidc").unwrap();
        let plain = keys.open(b"st", sealed.value.as_bytes()).unwrap();
        assert_eq!(plain.first(), Some(&b'{'));
        assert!(sealed.value.len() < 400, "{}", sealed.value.len());
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
