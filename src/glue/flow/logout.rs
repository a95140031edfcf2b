//! Logging out: the user's sign-out (OIDC RP-Initiated Logout 1.0) and the provider's
//! back-channel logout (OIDC Back-Channel Logout 1.0); both revoke the session's `sid` in the
//! shared zone, so every worker refuses it from then on.

use ngx::ffi::{
    ngx_http_core_run_phases, ngx_http_finalize_request, ngx_http_read_client_request_body,
    ngx_http_request_t, ngx_int_t, NGX_AGAIN, NGX_DONE, NGX_HTTP_BAD_REQUEST,
    NGX_HTTP_INTERNAL_SERVER_ERROR, NGX_HTTP_MOVED_TEMPORARILY, NGX_HTTP_NOT_ALLOWED, NGX_HTTP_OK,
    NGX_HTTP_POST, NGX_HTTP_SPECIAL_RESPONSE, NGX_LOG_INFO, NGX_LOG_WARN,
};
use ngx::ngx_log_error;

use crate::glue::service::cluster;
use crate::glue::service::ctx::RequestCtx;
use crate::glue::service::http::{self, Response};
use crate::glue::service::metrics;
use crate::glue::service::outcome::finish;
use crate::glue::service::provider::{discovery, keys, Step};
use crate::glue::service::session::carried_session;
use crate::glue::service::set_cookie::{attrs, clear_session_cookies, own_login_states};
use crate::glue::service::time::now;
use crate::glue::service::values::site_url;
use crate::glue::Provider;
use crate::metrics::Counter;
use crate::oidc::id_token::{self, LogoutToken};
use crate::oidc::{authorize, query};
use crate::session::cookies;
use crate::shared;

/// Clears every cookie of ours, marks the provider session as logged out for all workers (a
/// copied cookie stops working too), and sends the browser to the provider's end-session
/// endpoint, or to `rd` when there is none.
///
/// # Safety
/// `r` must be a live main request in its access phase, owning `rctx`.
pub unsafe fn sign_out(
    r: *mut ngx_http_request_t,
    rctx: &mut RequestCtx,
    p: &Provider,
    rd: String,
) -> ngx_int_t {
    let now = now();
    // SAFETY: per this function's contract.
    unsafe {
        let d = match discovery(r, rctx, p, now) {
            Step::Ready(d) => Some(d),
            Step::Pending => return NGX_AGAIN as ngx_int_t,
            Step::Failed(_) => None,
        };
        let carried = carried_session(r, p, now);
        let session = carried.valid.as_ref();
        if let Some(s) = session.map(|v| &v.session) {
            if let Some(sid) = &s.sid {
                let key = shared::key(sid.as_bytes());
                cluster::revoke(p, &key, s.exp, shared::ALL_LOGINS, now);
                metrics::count(p, Counter::RevokedBySignOut);
            }
        }
        let attrs = attrs(p);
        let headers = http::cookie_headers(r);
        let mut resp = Response::new(NGX_HTTP_MOVED_TEMPORARILY as usize)
            .page("Signed out", "You are signed out.");
        // Only cookies proven ours are deleted: the session's chunks and login states that
        // open; a same-named cookie of another application is left alone.
        for line in clear_session_cookies(p, carried.chunks) {
            resp = resp.header("Set-Cookie", line);
        }
        let mut deleted: Vec<&[u8]> = Vec::new();
        for (n, _, _) in own_login_states(p, &headers) {
            if !deleted.contains(&n) {
                deleted.push(n);
                let name = String::from_utf8_lossy(n);
                resp = resp.header("Set-Cookie", cookies::delete_cookie(&name, attrs));
            }
        }
        let location = match d.as_ref().and_then(|d| d.end_session_endpoint.as_deref()) {
            Some(endpoint) => {
                let back = match &p.conf.post_logout_redirect_uri {
                    Some(u) => site_url(
                        r,
                        p,
                        "post_logout_redirect_uri",
                        u,
                        p.post_logout_redirect_uri,
                    ),
                    None => Some(format!("{}{rd}", http::origin(r, &p.conf.trusted_proxies))),
                };
                let Some(back) = back else {
                    return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
                };
                let hint = session.and_then(|v| v.session.idt.as_deref());
                authorize::end_session_url(endpoint, &p.conf.client_id, hint, &back)
            }
            None => rd,
        };
        finish(r, resp.header("Location", location))
    }
}

/// `POST /oauth2/backchannel_logout` (OpenID Connect Back-Channel Logout 1.0): the provider
/// says a session ended; its `sid` is refused by every worker from now on.
///
/// # Safety
/// `r` must be a live main request in its access phase, owning `rctx`.
pub unsafe fn backchannel_logout(
    r: *mut ngx_http_request_t,
    rctx: &mut RequestCtx,
    p: &Provider,
) -> ngx_int_t {
    let bad = |why: &str| {
        Response::new(NGX_HTTP_BAD_REQUEST as usize).json(format!(
            "{{\"error\":\"invalid_request\",\"error_description\":{}}}\n",
            serde_json::Value::String(why.to_string())
        ))
    };
    // SAFETY: per this function's contract; reading the body follows nginx's mirror module:
    // the phases run again once it is in.
    unsafe {
        if (*r).method as u32 != NGX_HTTP_POST {
            return finish(
                r,
                Response::new(NGX_HTTP_NOT_ALLOWED as usize).header("Allow", "POST".into()),
            );
        }
        if (*r).request_body.is_null() {
            let rc = ngx_http_read_client_request_body(r, Some(body_read));
            if rc >= NGX_HTTP_SPECIAL_RESPONSE as ngx_int_t {
                return rc;
            }
            ngx_http_finalize_request(r, NGX_DONE as ngx_int_t);
            return NGX_DONE as ngx_int_t;
        }
        let Some(body) = http::request_body(r) else {
            return finish(
                r,
                bad("the body must be a small form (application/x-www-form-urlencoded)"),
            );
        };
        let form = String::from_utf8_lossy(&body).into_owned();
        let token = match query::param(&form, "logout_token") {
            Ok(Some(t)) => t.into_owned(),
            Ok(None) => return finish(r, bad("no logout_token")),
            Err(e) => return finish(r, bad(&e.to_string())),
        };
        let now = now();
        let d = match discovery(r, rctx, p, now) {
            Step::Ready(d) => d,
            Step::Pending => return NGX_AGAIN as ngx_int_t,
            Step::Failed(resp) => return finish(r, resp),
        };
        let kid = id_token::key_id(&token);
        let keys = match keys(r, rctx, p, &d, kid.as_deref(), now) {
            Step::Ready(k) => k,
            Step::Pending => return NGX_AGAIN as ngx_int_t,
            Step::Failed(resp) => return finish(r, resp),
        };
        let log = (*(*r).connection).log;
        let verified = id_token::verify_logout_token(
            &token,
            &keys,
            &p.conf.issuer,
            &p.conf.client_id,
            now,
            p.conf.clock_skew,
        );
        match verified {
            Ok(LogoutToken { sid: Some(sid), .. }) => {
                let key = shared::key(sid.as_bytes());
                let until = now + p.conf.session_lifetime;
                cluster::revoke(p, &key, until, shared::ALL_LOGINS, now);
                metrics::count(p, Counter::RevokedByBackChannel);
                ngx_log_error!(
                    NGX_LOG_INFO,
                    log,
                    "oidc: provider \"{}\": back-channel logout: a session ended at the provider",
                    p.conf.name
                );
                finish(r, Response::new(NGX_HTTP_OK as usize))
            }
            Ok(LogoutToken {
                sid: None,
                sub: Some(sub),
            }) => {
                // Back-Channel Logout 1.0 §2.4: without `sid`, every session of the user at
                // the provider ended; those that logged in since are new ones.
                let until = now + p.conf.session_lifetime;
                cluster::revoke(p, &shared::subject_key(&sub), until, now, now);
                metrics::count(p, Counter::RevokedByBackChannel);
                ngx_log_error!(
                    NGX_LOG_INFO,
                    log,
                    "oidc: provider \"{}\": back-channel logout: every session of a user ended at the provider",
                    p.conf.name
                );
                finish(r, Response::new(NGX_HTTP_OK as usize))
            }
            Ok(LogoutToken { sid: None, .. }) => {
                finish(r, bad("the logout token has no sid and no sub"))
            }
            Err(e) => {
                ngx_log_error!(
                    NGX_LOG_WARN,
                    log,
                    "oidc: provider \"{}\": back-channel logout token refused: {}",
                    p.conf.name,
                    e
                );
                finish(r, bad(&e.to_string()))
            }
        }
    }
}

extern "C" fn body_read(r: *mut ngx_http_request_t) {
    // SAFETY: nginx calls this with the live request once its body is read.
    unsafe {
        (*r).write_event_handler = Some(ngx_http_core_run_phases);
        ngx_http_core_run_phases(r);
    }
}
