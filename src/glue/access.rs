//! The access-phase handler: a protected request is decided from its cookie, in-process.

use ngx::ffi::{
    ngx_array_push, ngx_conf_t, ngx_http_finalize_request, ngx_http_handler_pt,
    ngx_http_phases_NGX_HTTP_ACCESS_PHASE, ngx_http_request_t, ngx_int_t, NGX_AGAIN, NGX_DECLINED,
    NGX_DONE, NGX_ERROR, NGX_HTTP_FORBIDDEN, NGX_HTTP_GET, NGX_HTTP_HEAD,
    NGX_HTTP_INTERNAL_SERVER_ERROR, NGX_HTTP_UNAUTHORIZED, NGX_LOG_INFO, NGX_LOG_WARN, NGX_OK,
};
use ngx::http::{HttpModuleLocationConf, HttpModuleMainConf, NgxHttpCoreModule, Request};
use ngx::ngx_log_error;

use super::ctx::RequestCtx;
use super::http::{self, Response};
use super::refresh::{self, Refreshed};
use super::{
    bearer, ctx, endpoints, filter, login, zone, AuthMode, LocConf, Module, Provider, UnauthAction,
};
use crate::authz::Rules;
use crate::navigation::{bearer_token, is_navigation, Signals};
use crate::session::cookies::{self, CookieAttrs};
use std::rc::Rc;

use crate::session::{Session, Verified};
use crate::shared;

/// Installs the access handler when at least one provider is configured.
///
/// # Safety
/// `cf` must be the http configuration being finished.
pub unsafe fn install(cf: *mut ngx_conf_t) -> ngx_int_t {
    // SAFETY: postconfiguration runs with the http main confs in place.
    unsafe {
        let Some(main) = Module::main_conf(&*cf) else {
            return NGX_ERROR as ngx_int_t;
        };
        if main.providers.is_empty() {
            return NGX_OK as ngx_int_t;
        }
        let Some(cmcf) = NgxHttpCoreModule::main_conf_mut(&*cf) else {
            return NGX_ERROR as ngx_int_t;
        };
        let h = ngx_array_push(
            &mut cmcf.phases[ngx_http_phases_NGX_HTTP_ACCESS_PHASE as usize].handlers,
        ) as *mut ngx_http_handler_pt;
        if h.is_null() {
            return NGX_ERROR as ngx_int_t;
        }
        *h = Some(access_handler);
        filter::install();
    }
    NGX_OK as ngx_int_t
}

extern "C" fn access_handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: nginx calls phase handlers with a live request; the access phase only runs for
    // main requests.
    unsafe {
        if http::strip_identity_headers(r).is_err() {
            return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
        }
        let req = Request::from_ngx_http_request(r);
        let (Some(lcf), Some(main)) = (Module::location_conf(req), Module::main_conf(req)) else {
            return NGX_DECLINED as ngx_int_t;
        };
        if let Some(i) = lcf.endpoints {
            return endpoints::access(r, &main.providers[i]);
        }
        match lcf.auth {
            AuthMode::Provider(i) => protect(r, &main.providers[i], lcf),
            AuthMode::Off | AuthMode::Unset => NGX_DECLINED as ngx_int_t,
        }
    }
}

/// Cookie → session (refreshed when its access token is about to expire) → identity headers
/// → on to the upstream; or off to log in.
///
/// # Safety
/// `r` must be a live main request in its access phase.
unsafe fn protect(r: *mut ngx_http_request_t, p: &Provider, lcf: &LocConf) -> ngx_int_t {
    let now = now();
    // SAFETY: per this function's contract.
    unsafe {
        let Some(rctx) = ctx::get_or_create(r) else {
            return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
        };
        if lcf.bearer == Some(true) {
            if let Some(token) = http::header_in(r, b"authorization").and_then(bearer_token) {
                return bearer::protect(r, rctx, p, lcf, token, now);
            }
        }
        let verified = match rctx.session.take() {
            Some(v) => Some(v),
            None => {
                let carried = carried_session(r, p);
                rctx.cookie_chunks = carried.as_ref().map_or(0, |(_, chunks)| *chunks);
                carried
                    .map(|(v, _)| v)
                    .filter(|v| v.session.is_valid_at(now))
            }
        };
        let Some(mut verified) = verified.filter(|v| !is_revoked(p, &v.session, now)) else {
            return no_session(r, rctx, p, lcf, now);
        };
        if verified.session.needs_refresh(now, p.conf.refresh_leeway) {
            verified = match refresh::refresh(r, rctx, p, verified.session.clone(), now) {
                Refreshed::Ready(v) => v,
                Refreshed::Pending => {
                    rctx.session = Some(verified);
                    return NGX_AGAIN as ngx_int_t;
                }
                Refreshed::Ended => return no_session(r, rctx, p, lcf, now),
                Refreshed::Unavailable if verified.session.access_token_valid(now) => verified,
                Refreshed::Unavailable => return finish(r, login::provider_unreachable(0)),
            };
        }
        if lcf.passes_access_token() && !verified.session.access_token_valid(now) {
            // Nothing can renew it (no refresh token): log in again rather than pass on an
            // expired token.
            ngx_log_error!(
                NGX_LOG_INFO,
                (*(*r).connection).log,
                "oidc: provider \"{}\": the access token of \"{}\" has expired and cannot be refreshed (no refresh token): a new login is needed",
                p.conf.name,
                verified.session.user(&p.conf.user_claim).unwrap_or_default()
            );
            return no_session(r, rctx, p, lcf, now);
        }
        if let Err(resp) = authorize(r, p, &verified.session, &[&lcf.rules]) {
            return finish(r, resp);
        }
        if set_upstream_headers(r, &verified, lcf).is_none()
            || http::strip_cookies(r, &p.conf.cookie_name).is_err()
        {
            return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
        }
        rctx.session = Some(verified);
        NGX_DECLINED as ngx_int_t
    }
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
unsafe fn navigation_signals<'a>(r: *mut ngx_http_request_t) -> Signals<'a> {
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

/// Whether the provider logged this session out (back-channel logout or sign-out).
///
/// # Safety
/// Must run in a worker (the zone exists).
unsafe fn is_revoked(p: &Provider, s: &Session, now: u64) -> bool {
    let Some(sid) = &s.sid else {
        return false;
    };
    // SAFETY: per this function's contract.
    unsafe {
        zone::with_table(p.zone, |t| {
            t.any_revoked() && t.is_revoked(&shared::key(sid.as_bytes()), now)
        })
    }
    .unwrap_or(false)
}

/// No usable session: a page navigation goes to login, anything else gets 401. A session
/// cookie that opened (expired, revoked, ended) is cleared either way, so a dead session is not
/// sent again; one that did not open is not proven ours and is left alone.
///
/// # Safety
/// `r` must be a live main request in its access phase, owning `rctx`.
unsafe fn no_session(
    r: *mut ngx_http_request_t,
    rctx: &mut RequestCtx,
    p: &Provider,
    lcf: &LocConf,
    now: u64,
) -> ngx_int_t {
    // SAFETY: per this function's contract.
    unsafe {
        // A login start that waits for the provider's documents runs this again on the same
        // request: each deletion is queued once.
        for line in clear_session_cookies(p, rctx.cookie_chunks) {
            if !rctx.set_cookies.contains(&line) {
                rctx.set_cookies.push(line);
            }
        }
        if rctx.cookie_chunks == 0 {
            let headers = http::cookie_headers(r);
            let foreign = p.conf.cookie_name.find_all(&headers).count();
            if foreign > 0 {
                ngx_log_error!(
                    NGX_LOG_INFO,
                    (*(*r).connection).log,
                    "oidc: provider \"{}\": the request carries {} cookie(s) named \"{}\" that do not open with this provider's cookie keys; they are left alone (another application on this site or a parent domain using the same name? then set cookie_name; or servers with different cookie keys)",
                    p.conf.name,
                    foreign,
                    &*p.conf.cookie_name
                );
            }
        }
        let method = (*r).method as u32;
        let page_method = method == NGX_HTTP_GET || method == NGX_HTTP_HEAD;
        let redirect = match lcf.unauth_action.unwrap_or_default() {
            UnauthAction::Redirect => page_method,
            UnauthAction::Unauthorized => false,
            UnauthAction::Auto => page_method && is_navigation(&navigation_signals(r)),
        };
        if !redirect {
            ngx_log_error!(
                NGX_LOG_INFO,
                (*(*r).connection).log,
                "oidc: no session for a {} request that is not a page navigation, answering 401",
                String::from_utf8_lossy(http::bytes(&(*r).method_name))
            );
            return finish(r, unauthorized());
        }
        let target = http::bytes(&(*r).unparsed_uri);
        let rd = match crate::redirect::return_path_for_request(target) {
            Ok(rd) => rd,
            Err(why) => {
                ngx_log_error!(
                    NGX_LOG_WARN,
                    (*(*r).connection).log,
                    "oidc: provider \"{}\": the page asked for ({} bytes) is not kept as the return URL: {}; after login the browser goes to /",
                    p.conf.name,
                    target.len(),
                    why
                );
                "/".to_string()
            }
        };
        login::start(r, rctx, p, &rd, now)
    }
}

/// Deletions for the `chunks` cookies of a session that opened (0: none did, nothing is
/// deleted).
pub fn clear_session_cookies(p: &Provider, chunks: usize) -> Vec<String> {
    let attrs = CookieAttrs {
        secure: p.conf.cookie_secure,
    };
    (0..chunks)
        .map(|i| cookies::delete_cookie(&cookies::chunk_name(&p.conf.cookie_name, i), attrs))
        .collect()
}

pub fn unauthorized<'a>() -> Response<'a> {
    Response::new(NGX_HTTP_UNAUTHORIZED as usize)
        .header("WWW-Authenticate", "Bearer".into())
        .json("{\"error\":\"unauthorized\",\"error_description\":\"login required\"}\n".into())
}

/// The valid session carried by the request's cookies, if any.
///
/// # Safety
/// `r` must be a live request.
pub unsafe fn read_session(
    r: *mut ngx_http_request_t,
    p: &Provider,
    now: u64,
) -> Option<Rc<Verified>> {
    // SAFETY: per this function's contract.
    unsafe { carried_session(r, p) }
        .map(|(v, _)| v)
        .filter(|v| v.session.is_valid_at(now))
}

/// The session of this provider that the request's cookies hold, valid or not, with how many
/// cookies (chunks) it spans: the first combination of cookies of our names that opens, so a
/// same-named cookie of another application cannot hide it. From the per-worker cache when
/// this value was seen before, else opened and cached.
///
/// # Safety
/// `r` must be a live request.
pub unsafe fn carried_session(
    r: *mut ngx_http_request_t,
    p: &Provider,
) -> Option<(Rc<Verified>, usize)> {
    // SAFETY: per this function's contract.
    let headers = unsafe { http::cookie_headers(r) };
    cookies::open_chunked(&headers, &p.conf.cookie_name, |value| {
        let cached = p.sessions.borrow().get(value);
        if let Some(v) = cached {
            return Some(v);
        }
        let session = Session::open(&p.conf.keys, &p.conf.session_aad, value)?;
        let v = Rc::new(Verified::new(session, &p.conf.user_claim));
        p.sessions.borrow_mut().insert(value, Rc::clone(&v));
        Some(v)
    })
}

/// The identity headers, and the access token where the location asks for it. The identity
/// values point into `v`, which the request context keeps alive as long as the request.
///
/// # Safety
/// `r` must be a live request whose context holds `v`.
pub unsafe fn set_upstream_headers(
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

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
