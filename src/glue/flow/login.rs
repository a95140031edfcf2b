//! The login: the authorization request (OIDC Core §3.1.2.1, PKCE per RFC 7636) that sends the
//! browser to the provider, with the loop guard and the budget of login-state cookies.

use ngx::ffi::{
    ngx_http_request_t, ngx_int_t, NGX_HTTP_BAD_REQUEST, NGX_HTTP_MOVED_TEMPORARILY, NGX_LOG_ERR,
    NGX_LOG_INFO, NGX_LOG_WARN,
};
use ngx::ngx_log_error;

use crate::glue::service::ctx::RequestCtx;
use crate::glue::service::http::{self, log, Response};
use crate::glue::service::metrics;
use crate::glue::service::outcome::{error_page, finish, internal_error};
use crate::glue::service::provider::{discovery, step};
use crate::glue::service::set_cookie::{attrs, guard_cookie, own_login_states};
use crate::glue::service::values::site_url;
use crate::glue::Provider;
use crate::metrics::Counter;
use crate::oidc::{authorize, random_token};
use crate::session::cookies;
use crate::session::{logins, LoginState};

/// How long a login attempt may take at the provider.
pub const LOGIN_STATE_LIFETIME: u64 = 600;

/// The redirect URI sent to the provider; a path is completed from how the browser reached us,
/// so the callback lands on the site that holds the login-state cookie. `None` (logged) when
/// its variables give no usable URL.
///
/// # Safety
/// `r` must be a live request.
pub unsafe fn redirect_uri(r: *mut ngx_http_request_t, p: &Provider) -> Option<String> {
    // SAFETY: per this function's contract.
    unsafe { site_url(r, p, "redirect_uri", &p.conf.redirect_uri, p.redirect_uri) }
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
    unsafe { warn_outside_cookie_domain(r, p) };
    // SAFETY: per this function's contract.
    let (Some(redirect_uri), Some(extra)) = (unsafe { redirect_uri(r, p) }, unsafe {
        extra_auth_args(r, p)
    }) else {
        // SAFETY: per this function's contract.
        return unsafe { finish(r, internal_error()) };
    };
    let request = authorize::AuthorizationRequest {
        issuer: &p.conf.issuer,
        endpoint: &d.authorization_endpoint,
        client_id: &p.conf.client_id,
        redirect_uri: &redirect_uri,
        scope: &p.conf.scope,
        state: &login.state,
        nonce: &login.nonce,
        verifier: &login.verifier,
        extra: &extra,
    };
    let url = match request.url() {
        Ok(url) => url,
        // The redirect URI's host is the one the browser sent (a path-only `redirect_uri`).
        Err(e) if e.what == authorize::UrlInput::RedirectUri => {
            ngx_log_error!(
                NGX_LOG_INFO,
                log(r),
                "oidc: provider \"{}\": no login for this request: {e}",
                p.conf.name
            );
            let page = error_page(
                NGX_HTTP_BAD_REQUEST,
                "Bad address",
                "This site was reached under a host name that is not a valid URL, so the login \
                 cannot send you back to it. Use the site's usual address.",
            );
            // SAFETY: per this function's contract.
            return unsafe { finish(r, page) };
        }
        Err(e) => {
            ngx_log_error!(
                NGX_LOG_ERR,
                log(r),
                "oidc: provider \"{}\": cannot send the browser to login: {e}",
                p.conf.name
            );
            // SAFETY: per this function's contract.
            return unsafe { finish(r, internal_error()) };
        }
    };
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
    metrics::count(p, Counter::LoginStarted);
    // SAFETY: per this function's contract.
    unsafe { finish(r, resp) }
}

/// A login from a host outside `cookie_domain` cannot work: the browser refuses cookies for a
/// domain the host is not in, so the login would start over (the loop guard then stops it).
/// Says so in the log, since the browser shows nothing.
///
/// # Safety
/// `r` must be a live request.
unsafe fn warn_outside_cookie_domain(r: *mut ngx_http_request_t, p: &Provider) {
    let Some(domain) = &p.conf.cookie.domain else {
        return;
    };
    // SAFETY: per this function's contract.
    let origin = unsafe { http::origin(r, &p.conf.trusted_proxies) };
    let host = origin.split_once("://").map_or("", |(_, h)| h);
    if !cookies::domain_matches(host, domain) {
        ngx_log_error!(
            NGX_LOG_WARN,
            log(r),
            "oidc: provider \"{}\": a login starts on host \"{}\", which is not inside cookie_domain \"{}\": the browser will refuse the module's cookies there; serve this host from a server without cookie_domain, or widen it",
            p.conf.name,
            host,
            domain
        );
    }
}

/// `extra_auth_args` with their variables evaluated for this request; parameters whose value
/// comes out empty are left off, so `kc_idp_hint=$arg_idp` adds nothing when `idp` is absent.
///
/// # Safety
/// `r` must be a live request.
unsafe fn extra_auth_args(r: *mut ngx_http_request_t, p: &Provider) -> Option<Vec<(&str, String)>> {
    let mut out = Vec::with_capacity(p.extra_auth_args.len());
    for (name, cv) in &p.extra_auth_args {
        // SAFETY: per this function's contract.
        let value = unsafe { cv.eval(r) }?;
        if !value.is_empty() {
            out.push((name.as_str(), value));
        }
    }
    Some(out)
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
