//! The access-phase handler: a protected request is decided from its cookie, in-process; an
//! `oidc_endpoints` location's `/oauth2/*` requests are handed to the endpoints.

use ngx::ffi::{
    ngx_array_push, ngx_conf_t, ngx_http_handler_pt, ngx_http_phases_NGX_HTTP_ACCESS_PHASE,
    ngx_http_request_t, ngx_int_t, NGX_AGAIN, NGX_DECLINED, NGX_ERROR, NGX_HTTP_GET, NGX_HTTP_HEAD,
    NGX_HTTP_INTERNAL_SERVER_ERROR, NGX_LOG_INFO, NGX_LOG_WARN, NGX_OK,
};
use ngx::http::{HttpModuleLocationConf, HttpModuleMainConf, NgxHttpCoreModule, Request};
use ngx::ngx_log_error;

use super::{endpoints, filter};
use crate::glue::flow::refresh::{self, Refreshed};
use crate::glue::flow::{bearer, login};
use crate::glue::service::ctx::{self, RequestCtx};
use crate::glue::service::http;
use crate::glue::service::metrics;
use crate::glue::service::outcome::{
    finish, let_through, navigation_signals, provider_unreachable, unauthorized,
};
use crate::glue::service::session::{carried_session, is_revoked};
use crate::glue::service::set_cookie::clear_session_cookies;
use crate::glue::service::time;
use crate::glue::{AuthMode, LocConf, Module, Provider, UnauthAction};
use crate::metrics::Counter;
use crate::navigation::{bearer_token, is_cors_preflight, is_navigation};

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
        if let Some(which) = lcf.endpoints {
            return match main.resolve(r, which, "oidc_endpoints") {
                Some(p) => endpoints::access(r, p),
                None => NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t,
            };
        }
        let AuthMode::Provider(which) = lcf.auth else {
            return NGX_DECLINED as ngx_int_t;
        };
        if lcf.skip_preflight == Some(true) && is_preflight(r) {
            return NGX_DECLINED as ngx_int_t;
        }
        match main.resolve(r, which, "oidc_auth") {
            Some(p) => protect(r, p, lcf),
            None => NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t,
        }
    }
}

/// A CORS preflight (see [`is_cors_preflight`]).
///
/// # Safety
/// `r` must be a live request.
unsafe fn is_preflight(r: *mut ngx_http_request_t) -> bool {
    // SAFETY: per this function's contract.
    unsafe {
        is_cors_preflight(
            http::bytes(&(*r).method_name),
            http::header_in(r, b"origin"),
            http::header_in(r, b"access-control-request-method"),
        )
    }
}

/// Cookie → session (refreshed when its access token is about to expire) → identity headers
/// → on to the upstream; or off to log in.
///
/// # Safety
/// `r` must be a live main request in its access phase.
unsafe fn protect(r: *mut ngx_http_request_t, p: &Provider, lcf: &LocConf) -> ngx_int_t {
    let now = time::now();
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
                let carried = carried_session(r, p, now);
                rctx.cookie_chunks = carried.chunks;
                carried.valid
            }
        };
        let Some(mut verified) = verified else {
            metrics::decided(rctx, p, Counter::SessionNone);
            return no_session(r, rctx, p, lcf, now);
        };
        if is_revoked(p, &verified.session, now) {
            metrics::decided(rctx, p, Counter::SessionRevoked);
            return no_session(r, rctx, p, lcf, now);
        }
        if verified.session.needs_refresh(now, p.conf.refresh_leeway) {
            verified = match refresh::refresh(r, rctx, p, verified.session.clone(), now) {
                Refreshed::Ready(v) => v,
                Refreshed::Pending => {
                    rctx.session = Some(verified);
                    return NGX_AGAIN as ngx_int_t;
                }
                Refreshed::Ended => return no_session(r, rctx, p, lcf, now),
                Refreshed::Unavailable if verified.session.access_token_valid(now) => verified,
                Refreshed::Unavailable => return finish(r, provider_unreachable(0)),
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
        let_through(r, rctx, p, lcf, verified, true)
    }
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
