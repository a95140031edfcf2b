//! The login: redirect to the provider, and the callback that turns a code into a session.

use crate::oidc::jws::JwkSet;
use ngx::ffi::{
    ngx_http_request_t, ngx_int_t, NGX_AGAIN, NGX_HTTP_BAD_GATEWAY, NGX_HTTP_BAD_REQUEST,
    NGX_HTTP_FORBIDDEN, NGX_HTTP_INTERNAL_SERVER_ERROR, NGX_HTTP_MOVED_TEMPORARILY,
    NGX_HTTP_SERVICE_UNAVAILABLE, NGX_HTTP_UNAUTHORIZED, NGX_LOG_ERR, NGX_LOG_INFO, NGX_LOG_WARN,
};
use ngx::ngx_log_error;

use super::access::{carried_session, finish, now};
use super::ctx::{FetchSlot, RequestCtx};
use super::fetch::{self, FetchRequest};
use super::http::{self, Response};
use super::Provider;
use crate::oidc::cache::Keys;
use crate::oidc::discovery::{self, Discovery};
use crate::oidc::id_token::{self, constant_time_eq, Expectations};
use crate::oidc::query::{self, Callback};
use crate::oidc::{authorize, random_token, token};
use crate::session::cookies::{self, CookieAttrs};
use crate::session::{logins, LoginState, Session, Tokens};

/// How long a login attempt may take at the provider.
const LOGIN_STATE_LIFETIME: u64 = 600;

/// Where a step that may need the provider stands.
pub enum Step<T> {
    Ready(T),
    /// A fetch is under way; the handler runs again when it completes.
    Pending,
    Failed(Response<'static>),
}

macro_rules! step {
    ($r:expr, $e:expr) => {
        match $e {
            Step::Ready(v) => v,
            Step::Pending => return NGX_AGAIN as ngx_int_t,
            // SAFETY: the caller's request is live and has sent nothing yet.
            Step::Failed(resp) => return unsafe { finish($r, resp) },
        }
    };
}

fn log(r: *mut ngx_http_request_t) -> *mut ngx::ffi::ngx_log_t {
    // SAFETY: a live request always has a connection with a log.
    unsafe { (*(*r).connection).log }
}

fn error_page(status: u32, title: &str, text: &str) -> Response<'static> {
    Response::new(status as usize).page(title, text)
}

fn internal_error() -> Response<'static> {
    error_page(
        NGX_HTTP_INTERNAL_SERVER_ERROR,
        "Login failed",
        "Internal error.",
    )
}

pub fn provider_unreachable(status: u16) -> Response<'static> {
    if matches!(status, 0 | 502 | 503 | 504) {
        error_page(
            NGX_HTTP_SERVICE_UNAVAILABLE,
            "Login is unavailable",
            "The identity provider cannot be reached right now. Please try again in a minute.",
        )
    } else {
        error_page(
            NGX_HTTP_BAD_GATEWAY,
            "Login is unavailable",
            "The identity provider gave an unexpected answer. Please try again later.",
        )
    }
}

/// A provider document for the per-worker cache (discovery, JWKS): fetched through the fetch
/// location; `accept` checks the answer and caches it; when the provider fails, the `stale`
/// copy keeps logins going, else the login gets an error page.
///
/// # Safety
/// `r` must be the live main request owning `rctx`.
unsafe fn provider_document<T>(
    r: *mut ngx_http_request_t,
    rctx: &mut RequestCtx,
    p: &Provider,
    what: &str,
    url: &str,
    accept: impl FnOnce(u16, &[u8]) -> Result<T, String>,
    stale: impl FnOnce() -> Option<T>,
) -> Step<T> {
    let Some((status, body)) = rctx.take_fetched() else {
        let req = FetchRequest {
            url,
            form: None,
            authorization: None,
        };
        // SAFETY: per this function's contract.
        return match unsafe { fetch::start(r, rctx, &p.conf.fetch_location, req) } {
            Ok(()) => Step::Pending,
            Err(()) => Step::Failed(internal_error()),
        };
    };
    let failure = match accept(status, &body) {
        Ok(doc) => return Step::Ready(doc),
        Err(failure) => failure,
    };
    ngx_log_error!(
        NGX_LOG_ERR,
        log(r),
        "oidc: provider \"{}\": {} from {} failed: {}",
        p.conf.name,
        what,
        url,
        failure
    );
    match stale() {
        Some(doc) => Step::Ready(doc),
        None => Step::Failed(provider_unreachable(status)),
    }
}

/// The provider's discovery document: cached, fetched, or stale when the provider is down.
///
/// # Safety
/// `r` must be the live main request owning `rctx`.
pub unsafe fn discovery(
    r: *mut ngx_http_request_t,
    rctx: &mut RequestCtx,
    p: &Provider,
    now: u64,
) -> Step<Discovery> {
    if let Some(d) = p.cache.borrow().discovery(now) {
        return Step::Ready(d.clone());
    }
    let url = discovery::url(&p.conf.issuer);
    let accept = |status, body: &[u8]| {
        let d = match status {
            200 => discovery::parse(body, &p.conf.issuer).map_err(|e| e.to_string())?,
            404 => {
                return Err(format!(
                    "HTTP 404{}",
                    discovery::not_found_hint(&p.conf.issuer, &p.conf.fetch_location)
                ))
            }
            _ => return Err(fetch::describe(status, &p.conf.fetch_location)),
        };
        p.cache.borrow_mut().set_discovery(d.clone(), now);
        Ok(d)
    };
    let stale = || p.cache.borrow().stale_discovery().cloned();
    // SAFETY: per this function's contract.
    unsafe { provider_document(r, rctx, p, "discovery", &url, accept, stale) }
}

/// A failed token-endpoint call, described for the error log.
pub fn token_failure(e: &token::TokenError, status: u16, location: &str) -> String {
    if fetch::answered(status) {
        format!("{e}{}{}", e.hint(), fetch::location_hint(status, location))
    } else {
        fetch::describe(status, location)
    }
}

/// Keys that can verify a token signed with `kid`.
///
/// # Safety
/// `r` must be the live main request owning `rctx`.
pub unsafe fn keys(
    r: *mut ngx_http_request_t,
    rctx: &mut RequestCtx,
    p: &Provider,
    d: &Discovery,
    kid: Option<&str>,
    now: u64,
) -> Step<JwkSet> {
    if let Keys::Ready(set) = p.cache.borrow().keys(kid, now) {
        return Step::Ready(set.clone());
    }
    let accept = |status, body: &[u8]| {
        if status != 200 {
            return Err(fetch::describe(status, &p.conf.fetch_location));
        }
        let set = serde_json::from_slice::<JwkSet>(body).map_err(|e| format!("not a JWKS: {e}"))?;
        p.cache.borrow_mut().set_keys(set.clone(), now);
        Ok(set)
    };
    let stale = || p.cache.borrow().stale_keys().cloned();
    // SAFETY: per this function's contract.
    unsafe { provider_document(r, rctx, p, "JWKS", &d.jwks_uri, accept, stale) }
}

/// The redirect URI sent to the provider; a path is completed from how the browser reached us,
/// so the callback lands on the site that holds the login-state cookie.
///
/// # Safety
/// `r` must be a live request.
unsafe fn redirect_uri(r: *mut ngx_http_request_t, p: &Provider) -> String {
    if p.conf.redirect_uri.starts_with('/') {
        // SAFETY: per this function's contract.
        format!("{}{}", unsafe { http::origin(r) }, p.conf.redirect_uri)
    } else {
        p.conf.redirect_uri.clone()
    }
}

fn attrs(p: &Provider) -> CookieAttrs {
    CookieAttrs {
        secure: p.conf.cookie_secure,
    }
}

/// Sends the browser to the provider's login, remembering `rd` for the way back.
///
/// # Safety
/// `r` must be a live main request in its access phase, owning `rctx`.
pub unsafe fn start(
    r: *mut ngx_http_request_t,
    rctx: &mut RequestCtx,
    p: &Provider,
    rd: &str,
    now: u64,
) -> ngx_int_t {
    // SAFETY: per this function's contract.
    let d = step!(r, unsafe { discovery(r, rctx, p, now) });
    let (Ok(state), Ok(nonce), Ok(verifier)) =
        (random_token(24), random_token(24), random_token(32))
    else {
        // SAFETY: per this function's contract.
        return unsafe { finish(r, internal_error()) };
    };
    let mut login = LoginState {
        state,
        nonce,
        verifier,
        rd: rd.to_string(),
        exp: now + LOGIN_STATE_LIFETIME,
    };
    let Ok(sealed) = login.seal_for_cookie(&p.conf.keys, &p.conf.state_aad, &p.conf.cookie_name)
    else {
        // SAFETY: per this function's contract.
        return unsafe { finish(r, internal_error()) };
    };
    if let Some(s) = &sealed.shortened {
        ngx_log_error!(NGX_LOG_WARN, log(r), "oidc: provider \"{}\": the return URL ({} bytes) does not fit in the login-state cookie ({} bytes compressed, a browser keeps at most {}): after login the browser goes to {} instead", p.conf.name, s.asked, s.cookie_bytes, cookies::MAX_COOKIE_BYTES, s.kept);
    }
    let sealed = sealed.value;
    // SAFETY: per this function's contract.
    let redirect_uri = unsafe { redirect_uri(r, p) };
    let url = authorize::AuthorizationRequest {
        endpoint: &d.authorization_endpoint,
        client_id: &p.conf.client_id,
        redirect_uri: &redirect_uri,
        scope: &p.conf.scope,
        state: &login.state,
        nonce: &login.nonce,
        verifier: &login.verifier,
    }
    .url();
    // SAFETY: per this function's contract.
    let headers = unsafe { http::cookie_headers(r) };
    let rounds_cookie = guard_cookie(p);
    let guards = cookies::find_all(&headers, &rounds_cookie);
    let rounds = logins::rounds(logins::guard_value(&guards, now), rd, now);
    if rounds >= logins::MAX_ROUNDS {
        ngx_log_error!(NGX_LOG_WARN, log(r), "oidc: provider \"{}\": {} logins in a row came back to {} within {}s each, and each time the page had no session: the browser is not keeping the session cookie (Secure cookie over plain http? blocked cookies? a proxy dropping Set-Cookie?)", p.conf.name, rounds, rd.split('?').next().unwrap_or_default(), logins::ROUND_WINDOW);
        let page = error_page(
            NGX_HTTP_BAD_REQUEST,
            "Login keeps starting over",
            "You were sent to the identity provider several times in a few seconds, but this \
             browser did not keep the login. Usually the session cookie was refused: a Secure \
             cookie over plain http (use https, or cookie_secure off for a test setup), blocked \
             cookies, or a proxy that drops Set-Cookie. Very different clocks on this server \
             and the identity provider can cause it too.",
        )
        .header(
            "Set-Cookie",
            cookies::delete_cookie(&rounds_cookie, attrs(p)),
        );
        // SAFETY: per this function's contract.
        return unsafe { finish(r, page) };
    }
    let mut resp = Response::new(NGX_HTTP_MOVED_TEMPORARILY as usize).page(
        "Redirecting to login",
        "You are being sent to the identity provider to log in.",
    );
    let name = LoginState::cookie_name(&p.conf.cookie_name, &login.state);
    for old in pending_states_to_drop(p, &headers, name.len() + 1 + sealed.len(), now) {
        resp = resp.header("Set-Cookie", cookies::delete_cookie(&old, attrs(p)));
    }
    resp = resp
        .header(
            "Set-Cookie",
            cookies::set_cookie(&name, &sealed, LOGIN_STATE_LIFETIME, attrs(p)),
        )
        .header("Location", url);
    ngx_log_error!(
        NGX_LOG_INFO,
        log(r),
        "oidc: provider \"{}\": no valid session, redirecting to login with redirect_uri {} \
         (if the provider answers \"Invalid parameter: redirect_uri\" or invalid_redirect_uri, \
         add exactly this URL to the client's Valid redirect URIs)",
        p.conf.name,
        redirect_uri
    );
    // SAFETY: per this function's contract.
    unsafe { finish(r, resp) }
}

/// The loop guard's cookie: the pages logins recently came back to (see [`logins`]).
fn guard_cookie(p: &Provider) -> String {
    format!("{}_n", &*p.conf.cookie_name)
}

/// The login-state cookies of this provider that the request carries, as (name, bytes in the
/// `Cookie` header, state): only those that open with the provider's keys, since a cookie of
/// another application under a name like ours is never ours to count or delete.
pub fn own_login_states<'a>(
    p: &'a Provider,
    headers: &'a [&'a [u8]],
) -> impl Iterator<Item = (&'a [u8], usize, LoginState)> + 'a {
    let prefix = LoginState::cookie_prefix(&p.conf.cookie_name);
    cookies::pairs(headers)
        .filter(move |(n, _)| n.starts_with(prefix.as_bytes()))
        .filter_map(|(n, v)| {
            let plain = p.conf.keys.open(&p.conf.state_aad, v)?;
            Some((
                n,
                n.len() + 1 + v.len(),
                LoginState::from_plaintext(&plain)?,
            ))
        })
}

/// The pending login states (other tabs' logins) to delete so that a new one of `new_bytes`
/// fits the browser's `Cookie` header: the oldest first, and only states this provider sealed
/// and that are still running.
fn pending_states_to_drop(
    p: &Provider,
    headers: &[&[u8]],
    new_bytes: usize,
    now: u64,
) -> Vec<String> {
    let pending = own_login_states(p, headers)
        .filter(|(_, _, state)| state.exp > now)
        .map(|(n, bytes, state)| logins::Pending {
            name: String::from_utf8_lossy(n).into_owned(),
            bytes,
            exp: state.exp,
        })
        .collect();
    logins::states_to_drop(pending, new_bytes)
}

/// `/oauth2/callback`: check the state, exchange the code, verify the ID token, set the session.
///
/// # Safety
/// `r` must be a live main request in its access phase, owning `rctx`.
pub unsafe fn callback(
    r: *mut ngx_http_request_t,
    rctx: &mut RequestCtx,
    p: &Provider,
) -> ngx_int_t {
    let now = now();
    // SAFETY: per this function's contract.
    let args = unsafe {
        http::hide_callback_values(r);
        http::args(&*r)
    }
    .to_string();
    let (code, state) =
        match query::parse_callback(&args) {
            Ok(Callback::Code { code, state }) => (code.into_owned(), state.into_owned()),
            Ok(Callback::Error {
                error, description, ..
            }) => {
                let error: String = error
                    .chars()
                    .filter(|c| c.is_ascii_graphic())
                    .take(64)
                    .collect();
                let description: String = description
                    .unwrap_or_default()
                    .chars()
                    .filter(|c| !c.is_control())
                    .take(200)
                    .collect();
                ngx_log_error!(NGX_LOG_WARN, log(r),
                "oidc: provider \"{}\": login not completed, the provider answered error={} ({})",
                p.conf.name,
                error,
                description
            );
                let status = if error == "access_denied" {
                    NGX_HTTP_FORBIDDEN
                } else {
                    NGX_HTTP_UNAUTHORIZED
                };
                let text = format!("The identity provider answered \"{error}\": {description}");
                // SAFETY: per this function's contract.
                return unsafe { finish(r, error_page(status, "Login was not completed", &text)) };
            }
            Err(e) => {
                ngx_log_error!(
                    NGX_LOG_WARN,
                    log(r),
                    "oidc: provider \"{}\": bad callback: {}",
                    p.conf.name,
                    e
                );
                // SAFETY: per this function's contract.
                return unsafe {
                    finish(
                        r,
                        error_page(
                            NGX_HTTP_BAD_REQUEST,
                            "Login failed",
                            &format!("Bad callback: {e}."),
                        ),
                    )
                };
            }
        };

    let state_cookie = LoginState::cookie_name(&p.conf.cookie_name, &state);
    // SAFETY: per this function's contract.
    let headers = unsafe { http::cookie_headers(r) };
    // Every cookie of that name is tried: a same-named cookie of another application may come
    // first.
    let login = cookies::find_all(&headers, &state_cookie)
        .into_iter()
        .filter_map(|v| p.conf.keys.open(&p.conf.state_aad, v))
        .filter_map(|json| LoginState::from_plaintext(&json))
        .find(|l| l.exp > now && constant_time_eq(l.state.as_bytes(), state.as_bytes()));
    let Some(login) = login else {
        ngx_log_error!(NGX_LOG_WARN, log(r), "oidc: provider \"{}\": callback with an unknown or expired state (login-state cookie missing, from another browser, or older than {}s)", p.conf.name, LOGIN_STATE_LIFETIME);
        let page = error_page(
            NGX_HTTP_BAD_REQUEST,
            "Login failed",
            "This login link is not valid in this browser any more (it may have been used already, \
             expired, or cookies are blocked). Please start again.",
        );
        // SAFETY: per this function's contract.
        return unsafe { finish(r, page) };
    };
    let clear_state = cookies::delete_cookie(&state_cookie, attrs(p));
    let fail = |status: u32, text: &str| {
        error_page(status, "Login failed", text).header("Set-Cookie", clear_state.clone())
    };

    // SAFETY: per this function's contract.
    let d = step!(r, unsafe { discovery(r, rctx, p, now) });

    let issuer_checked = query::param(&args, "iss")
        .map_err(|e| e.to_string())
        .and_then(|iss| {
            query::check_response_issuer(
                iss.as_deref(),
                &p.conf.issuer,
                d.authorization_response_iss_parameter_supported,
            )
            .map_err(|e| e.to_string())
        });
    if let Err(e) = issuer_checked {
        ngx_log_error!(
            NGX_LOG_WARN,
            log(r),
            "oidc: provider \"{}\": login refused: {}",
            p.conf.name,
            e
        );
        // SAFETY: per this function's contract.
        return unsafe {
            finish(
                r,
                fail(
                    NGX_HTTP_BAD_REQUEST,
                    "The answer did not come from the expected identity provider. Please start again.",
                ),
            )
        };
    }

    let token = match rctx.token.take() {
        Some(t) => t,
        None => match rctx.take_fetched() {
            None => {
                // SAFETY: per this function's contract.
                let redirect_uri = unsafe { redirect_uri(r, p) };
                let req = FetchRequest {
                    url: &d.token_endpoint,
                    form: Some(authorize::code_exchange_body(
                        &code,
                        &redirect_uri,
                        &login.verifier,
                    )),
                    authorization: Some(authorize::client_basic_auth(
                        &p.conf.client_id,
                        &p.conf.client_secret,
                    )),
                };
                // SAFETY: per this function's contract.
                return match unsafe { fetch::start(r, rctx, &p.conf.fetch_location, req) } {
                    Ok(()) => NGX_AGAIN as ngx_int_t,
                    Err(()) => unsafe {
                        finish(r, fail(NGX_HTTP_INTERNAL_SERVER_ERROR, "Internal error."))
                    },
                };
            }
            Some((status, body)) => match token::parse(status, &body) {
                Ok(t) => t,
                Err(e) => {
                    // A refused code is the browser's problem; no answer is the operator's.
                    let level = if fetch::answered(status) {
                        NGX_LOG_WARN
                    } else {
                        NGX_LOG_ERR
                    };
                    ngx_log_error!(
                        level,
                        log(r),
                        "oidc: provider \"{}\": code exchange failed: {}",
                        p.conf.name,
                        token_failure(&e, status, &p.conf.fetch_location)
                    );
                    let resp = match e {
                        token::TokenError::Refused { .. } => fail(
                            NGX_HTTP_UNAUTHORIZED,
                            "The identity provider refused this login (the link may have been used already). Please start again.",
                        ),
                        _ => provider_unreachable(status).header("Set-Cookie", clear_state.clone()),
                    };
                    // SAFETY: per this function's contract.
                    return unsafe { finish(r, resp) };
                }
            },
        },
    };
    let Some(id_token) = token.id_token.clone() else {
        ngx_log_error!(NGX_LOG_ERR, log(r), "oidc: provider \"{}\": the token response has no id_token (does `scope` contain \"openid\"?)", p.conf.name);
        // SAFETY: per this function's contract.
        return unsafe {
            finish(
                r,
                fail(
                    NGX_HTTP_BAD_GATEWAY,
                    "The identity provider did not send an ID token.",
                ),
            )
        };
    };
    let kid = id_token::key_id(&id_token);
    let need_keys = matches!(p.cache.borrow().keys(kid.as_deref(), now), Keys::Fetch);
    if need_keys && matches!(rctx.fetch, FetchSlot::Idle) {
        rctx.token = Some(token.clone());
    }
    // SAFETY: per this function's contract.
    let set = step!(r, unsafe { keys(r, rctx, p, &d, kid.as_deref(), now) });

    let want = Expectations {
        issuer: &p.conf.issuer,
        client_id: &p.conf.client_id,
        nonce: &login.nonce,
        now,
        leeway: p.conf.clock_skew,
    };
    let claims = match id_token::verify(&id_token, &set, &want) {
        Ok(c) => c,
        Err(e) => {
            ngx_log_error!(
                NGX_LOG_WARN,
                log(r),
                "oidc: provider \"{}\": ID token rejected: {}",
                p.conf.name,
                e
            );
            // SAFETY: per this function's contract.
            return unsafe {
                finish(
                    r,
                    fail(
                        NGX_HTTP_UNAUTHORIZED,
                        "The identity provider's answer could not be verified. Please start again.",
                    ),
                )
            };
        }
    };

    let sub = claims
        .get("sub")
        .and_then(serde_json::Value::as_str)
        .unwrap_or_default()
        .to_string();
    let roles = match id_token::access_token_roles(&token.access_token, &set, &want, &sub) {
        Ok(roles) => roles.unwrap_or_default(),
        Err(e) => {
            ngx_log_error!(
                NGX_LOG_WARN,
                log(r),
                "oidc: provider \"{}\": roles not taken from the access token: {}",
                p.conf.name,
                e
            );
            Default::default()
        }
    };

    let tokens = Tokens {
        refresh_token: token.refresh_token.as_deref(),
        access_token: Some(&token.access_token),
        expires_in: token.access_token_lifetime(now),
        refresh_expires_in: token.refresh_expires_in,
        id_token: Some(&id_token),
    };
    let lifetime = p.conf.session_lifetime;
    let session = Session::from_id_token(claims, now, lifetime)
        .with_roles(roles)
        .with_tokens(&tokens, now, lifetime, p.keep_access_token.get());
    let Ok(sealed) = session.seal(&p.conf.keys, &p.conf.session_aad) else {
        // SAFETY: per this function's contract.
        return unsafe { finish(r, fail(NGX_HTTP_INTERNAL_SERVER_ERROR, "Internal error.")) };
    };
    let rd = crate::redirect::safe_return_path(&login.rd)
        .unwrap_or("/")
        .to_string();
    // A return to the same page within moments of the last one is a round of a loop when the
    // page then has no session: `start` counts them.
    let guards = cookies::find_all(&headers, &guard_cookie(p));
    let guard = logins::record_return(logins::guard_value(&guards, now), &rd, now);
    let mut resp = Response::new(NGX_HTTP_MOVED_TEMPORARILY as usize)
        .page("Logged in", "You are logged in.")
        .header("Set-Cookie", clear_state)
        .header(
            "Set-Cookie",
            cookies::set_cookie(&guard_cookie(p), &guard, logins::ROUND_WINDOW, attrs(p)),
        );
    // The chunks of an earlier session of ours (expired, say) are replaced; nothing else.
    // SAFETY: per this function's contract.
    let present = unsafe { carried_session(r, p) }.map_or(0, |(_, chunks)| chunks);
    let lines = cookies::session_cookies(
        &p.conf.cookie_name,
        &sealed,
        session.exp - now,
        present,
        attrs(p),
    );
    let chunks = cookies::split_chunks(&p.conf.cookie_name, &sealed);
    for line in lines {
        resp = resp.header("Set-Cookie", line);
    }
    resp = resp.header("Location", rd);
    ngx_log_error!(
        NGX_LOG_INFO,
        log(r),
        "oidc: provider \"{}\": user \"{}\" logged in ({} cookie bytes in {} chunk(s))",
        p.conf.name,
        session.user(&p.conf.user_claim).unwrap_or_default(),
        sealed.len(),
        chunks.len()
    );
    // SAFETY: per this function's contract.
    unsafe { finish(r, resp) }
}
