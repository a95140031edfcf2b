//! The answer to a decided request: the authorization rules' verdict, the identity headers for
//! the upstream, and the pages and JSON errors a request ends with.

use ngx::ffi::{
    ngx_http_finalize_request, ngx_http_request_t, ngx_int_t, NGX_DECLINED, NGX_DONE,
    NGX_HTTP_BAD_GATEWAY, NGX_HTTP_FORBIDDEN, NGX_HTTP_INTERNAL_SERVER_ERROR,
    NGX_HTTP_SERVICE_UNAVAILABLE, NGX_HTTP_UNAUTHORIZED, NGX_LOG_INFO,
};
use ngx::ngx_log_error;

use std::rc::Rc;

use super::ctx::RequestCtx;
use super::http::{self, Response};
use super::metrics;
use crate::authz::Rules;
use crate::glue::{LocConf, Provider};
use crate::metrics::Counter;
use crate::navigation::{is_navigation, Signals};
use crate::session::{Session, Verified};

pub fn error_page(status: u32, title: &str, text: &str) -> Response<'static> {
    Response::new(status as usize).page(title, text)
}

pub fn internal_error() -> Response<'static> {
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

/// The 401 of a request without a session that is not sent to login (RFC 6750 §3).
pub fn unauthorized<'a>() -> Response<'a> {
    Response::new(NGX_HTTP_UNAUTHORIZED as usize)
        .header("WWW-Authenticate", "Bearer".into())
        .json("{\"error\":\"unauthorized\",\"error_description\":\"login required\"}\n".into())
}

/// Checks the authorization rules for a valid session: `Err` is the 403 to send. A 403 never
/// redirects to login (the user is logged in; another login would loop).
///
/// # Safety
/// `r` must be a live request.
pub unsafe fn authorize(
    r: *mut ngx_http_request_t,
    p: &Provider,
    s: &Session,
    rules: &[&Rules],
) -> Result<(), Response<'static>> {
    let denied = rules
        .iter()
        .filter(|r| !r.is_empty())
        .find_map(|rules| rules.check(&s.claims, p.conf.allow_unverified_email).err());
    let Some(reason) = denied else {
        return Ok(());
    };
    let user = s.user(&p.conf.user_claim).unwrap_or_default();
    // SAFETY: per this function's contract.
    unsafe {
        ngx_log_error!(
            NGX_LOG_INFO,
            (*(*r).connection).log,
            "oidc: provider \"{}\": access denied to \"{}\": {}",
            p.conf.name,
            user,
            reason
        );
        let resp = Response::new(NGX_HTTP_FORBIDDEN as usize);
        Err(if r == (*r).main && is_navigation(&navigation_signals(r)) {
            resp.page(
                "Access denied",
                &format!(
                    "You are signed in as \"{user}\", but this account may not open this page. \
                     Ask the site's administrator for access, or sign out and sign in with \
                     another account."
                ),
            )
        } else {
            resp.json("{\"error\":\"forbidden\",\"error_description\":\"access denied\"}\n".into())
        })
    }
}

/// The request headers that tell a page navigation from an API call.
///
/// # Safety
/// `r` must be a live request.
pub unsafe fn navigation_signals<'a>(r: *mut ngx_http_request_t) -> Signals<'a> {
    // SAFETY: per this function's contract.
    unsafe {
        Signals {
            accept: http::header_in(r, b"accept"),
            x_requested_with: http::header_in(r, b"x-requested-with"),
            sec_fetch_mode: http::header_in(r, b"sec-fetch-mode"),
            authorization: !(*r).headers_in.authorization.is_null(),
        }
    }
}

/// Lets a request whose session (or bearer token) verified on to the upstream, unless the
/// location's rules refuse it (the 403 is sent here): the identity headers go upstream, with
/// `strip_session_cookies` (a cookie session) the session's cookies are taken out of the
/// request's `Cookie` header and the decision is counted (`ngx_oidc_sessions_total`), and the request context keeps `v`, which the headers point into, for the rest of
/// the request. Returns the access phase's answer.
///
/// # Safety
/// `r` must be a live main request in its access phase, owning `rctx`.
pub unsafe fn let_through(
    r: *mut ngx_http_request_t,
    rctx: &mut RequestCtx,
    p: &Provider,
    lcf: &LocConf,
    v: Rc<Verified>,
    strip_session_cookies: bool,
) -> ngx_int_t {
    // SAFETY: per this function's contract.
    unsafe {
        if let Err(resp) = authorize(r, p, &v.session, &[&lcf.rules]) {
            if strip_session_cookies {
                metrics::decided(rctx, p, Counter::SessionForbidden);
            }
            return finish(r, resp);
        }
        if set_upstream_headers(r, &v, lcf).is_none()
            || (strip_session_cookies && http::strip_cookies(r, &p.conf.cookie_name).is_err())
        {
            return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
        }
    }
    if strip_session_cookies {
        metrics::decided(rctx, p, Counter::SessionValid);
    }
    rctx.session = Some(v);
    NGX_DECLINED as ngx_int_t
}

/// The identity headers, and the access token where the location asks for it. The identity
/// values point into `v`, which the request context keeps alive as long as the request.
///
/// # Safety
/// `r` must be a live request whose context holds `v`.
unsafe fn set_upstream_headers(
    r: *mut ngx_http_request_t,
    v: &Verified,
    lcf: &LocConf,
) -> Option<()> {
    // SAFETY: per this function's contract.
    unsafe {
        let list = &mut (*r).headers_in.headers as *mut _;
        for (k, lk, value) in &v.headers {
            http::push_header_borrowed(list, k, lk, value.as_bytes())?;
        }
        let Some(at) = &v.session.at else {
            return Some(());
        };
        if lcf.pass_access_token == Some(true) {
            http::push_header(r, list, "X-Auth-Request-Access-Token", at.as_bytes())?;
        }
        if lcf.set_authorization_header == Some(true) {
            let value = format!("Bearer {at}");
            let h = (*r).headers_in.authorization;
            if h.is_null() {
                http::push_header(r, list, "Authorization", value.as_bytes())?;
            } else {
                (*h).value = http::pool_str(r, value.as_bytes())?;
            }
        }
    }
    Some(())
}

/// Sends `resp` as the whole answer from a phase handler.
///
/// # Safety
/// `r` must be a live main request that has not sent its header yet.
pub unsafe fn finish(r: *mut ngx_http_request_t, resp: Response) -> ngx_int_t {
    // SAFETY: per this function's contract; NGX_DONE tells the phase engine that the request
    // has been finalized here.
    unsafe {
        let rc = resp.send(r);
        ngx_http_finalize_request(r, rc);
    }
    NGX_DONE as ngx_int_t
}
