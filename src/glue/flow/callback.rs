//! The authorization response at the redirect URI (OIDC Core §3.1.2.5): the state is checked
//! against the login-state cookie, the code exchanged (§3.1.3), the ID token verified
//! (§3.1.3.7), and the session cookie set.

use ngx::ffi::{
    ngx_http_request_t, ngx_int_t, NGX_AGAIN, NGX_HTTP_BAD_GATEWAY, NGX_HTTP_BAD_REQUEST,
    NGX_HTTP_FORBIDDEN, NGX_HTTP_INTERNAL_SERVER_ERROR, NGX_HTTP_MOVED_TEMPORARILY,
    NGX_HTTP_UNAUTHORIZED, NGX_LOG_ERR, NGX_LOG_INFO, NGX_LOG_WARN,
};
use ngx::ngx_log_error;

use super::login::{redirect_uri, LOGIN_STATE_LIFETIME};
use crate::glue::service::ctx::{FetchSlot, RequestCtx};
use crate::glue::service::fetch::{self, FetchRequest};
use crate::glue::service::http::{self, log, Response};
use crate::glue::service::metrics;
use crate::glue::service::outcome::{error_page, finish, provider_unreachable};
use crate::glue::service::provider::{discovery, keys, step, token_failure};
use crate::glue::service::session::carried_session;
use crate::glue::service::set_cookie::{attrs, guard_cookie};
use crate::glue::service::time::now;
use crate::glue::Provider;
use crate::metrics::{Counter, Endpoint};
use crate::oidc::cache::Keys;
use crate::oidc::id_token::{self, constant_time_eq, Expectations};
use crate::oidc::query::{self, Callback};
use crate::oidc::{authorize, token};
use crate::session::cookies;
use crate::session::{logins, LoginState, Session, Tokens};

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
                metrics::count(p, Counter::LoginProviderError);
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
                metrics::count(p, Counter::LoginBadCallback);
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
        metrics::count(p, Counter::LoginStateUnknown);
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
        metrics::count(p, Counter::LoginIssuerMismatch);
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
        None => match rctx.take_fetched(Endpoint::Token) {
            None => {
                // SAFETY: per this function's contract.
                let Some(redirect_uri) = (unsafe { redirect_uri(r, p) }) else {
                    // SAFETY: per this function's contract.
                    return unsafe {
                        finish(r, fail(NGX_HTTP_INTERNAL_SERVER_ERROR, "Internal error."))
                    };
                };
                let req = FetchRequest {
                    endpoint: Endpoint::Token,
                    zone: p.zone,
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
                    metrics::count(p, Counter::LoginCodeExchangeFailed);
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
        metrics::count(p, Counter::LoginIdTokenInvalid);
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
            metrics::count(p, Counter::LoginIdTokenInvalid);
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
        .with_tokens(&tokens, now, lifetime, p.keep_access_token.get())
        .with_id_token(tokens.id_token.filter(|_| p.keep_id_token.get()));
    let Ok(sealed) = session.seal(&p.conf.keys, &p.conf.session_aad) else {
        // SAFETY: per this function's contract.
        return unsafe { finish(r, fail(NGX_HTTP_INTERNAL_SERVER_ERROR, "Internal error.")) };
    };
    let rd = crate::redirect::safe_return_path(&login.rd)
        .unwrap_or("/")
        .to_string();
    // A return to the same page within moments of the last one is a round of a loop when the
    // page then has no session: `login::start` counts them.
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
    let present = unsafe { carried_session(r, p, now) }.chunks;
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
    metrics::count(p, Counter::LoginCompleted);
    // SAFETY: per this function's contract.
    unsafe { finish(r, resp) }
}
