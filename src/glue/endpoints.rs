//! `/oauth2/*`: callback, sign_in and sign_out run in the access phase (they may call the
//! provider); auth and userinfo are content handlers, so they also answer `auth_request`
//! subrequests, which skip the access phase.

use ngx::ffi::{
    ngx_http_core_run_phases, ngx_http_finalize_request, ngx_http_read_client_request_body,
    ngx_http_request_t, ngx_int_t, NGX_AGAIN, NGX_DECLINED, NGX_DONE, NGX_HTTP_ACCEPTED,
    NGX_HTTP_BAD_REQUEST, NGX_HTTP_INTERNAL_SERVER_ERROR, NGX_HTTP_MOVED_TEMPORARILY,
    NGX_HTTP_NOT_ALLOWED, NGX_HTTP_NOT_FOUND, NGX_HTTP_OK, NGX_HTTP_POST,
    NGX_HTTP_SPECIAL_RESPONSE, NGX_LOG_INFO, NGX_LOG_WARN,
};
use ngx::http::{HttpModuleLocationConf, HttpModuleMainConf, Request};
use ngx::ngx_log_error;

use super::access::{
    authorize, carried_session, clear_session_cookies, finish, now, read_session, unauthorized,
};
use super::http::{self, Response};
use super::{ctx, login, zone, Module, Provider};
use crate::authz::Rules;
use crate::oidc::id_token::{self, LogoutToken};
use crate::oidc::{authorize, query};
use crate::session::cookies::{self, CookieAttrs};
use crate::shared;

/// The endpoint a request names: the last path segment, or the configured redirect URI.
fn endpoint<'a>(uri: &'a str, p: &Provider) -> &'a str {
    let redirect_path = match p.conf.redirect_uri.find("://") {
        Some(i) => {
            let rest = &p.conf.redirect_uri[i + 3..];
            rest.find('/').map_or("/", |j| &rest[j..])
        }
        None => p.conf.redirect_uri.as_str(),
    };
    if uri == redirect_path {
        return "callback";
    }
    uri.rsplit('/').next().unwrap_or("")
}

/// # Safety
/// `r` must be a live main request in its access phase.
pub unsafe fn access(r: *mut ngx_http_request_t, p: &Provider) -> ngx_int_t {
    // SAFETY: per this function's contract.
    unsafe {
        let uri = String::from_utf8_lossy(http::bytes(&(*r).uri)).into_owned();
        let Some(rctx) = ctx::get_or_create(r) else {
            return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
        };
        match endpoint(&uri, p) {
            "callback" => login::callback(r, rctx, p),
            "sign_in" | "start" => match return_path(r) {
                Ok(rd) => login::start(r, rctx, p, &rd, now()),
                Err(resp) => finish(r, resp),
            },
            "backchannel_logout" => backchannel_logout(r, rctx, p),
            "sign_out" => match return_path(r) {
                Ok(rd) => sign_out(r, rctx, p, rd),
                Err(resp) => finish(r, resp),
            },
            _ => NGX_DECLINED as ngx_int_t,
        }
    }
}

/// The `rd` parameter, checked against open redirects. When absent: the page the browser asked
/// for if nginx redirected it here internally (`error_page 401 = /oauth2/sign_in;` of
/// `auth_request` setups, where oauth2-proxy returns to `X-Auth-Request-Redirect: $request_uri`),
/// else `/`.
///
/// # Safety
/// `r` must be a live request.
unsafe fn return_path(r: *mut ngx_http_request_t) -> Result<String, Response<'static>> {
    // SAFETY: per this function's contract.
    let args = unsafe { http::args(&*r) };
    // SAFETY: per this function's contract.
    let redirected_from = unsafe {
        ((*r).internal() != 0)
            .then(|| String::from_utf8_lossy(http::bytes(&(*r).unparsed_uri)).into_owned())
    };
    let refuse = |why: &str| {
        // SAFETY: per this function's contract.
        ngx_log_error!(
            NGX_LOG_WARN,
            unsafe { (*(*r).connection).log },
            "oidc: refused return URL: {}",
            why
        );
        Response::new(NGX_HTTP_BAD_REQUEST as usize).page(
            "Bad return address",
            "The rd parameter must be a path on this site, like /app/page.",
        )
    };
    match query::param(args, "rd") {
        Ok(None) => Ok(redirected_from
            .as_deref()
            .and_then(|page| crate::redirect::check_return_path(page).ok())
            .unwrap_or("/")
            .into()),
        Ok(Some(rd)) => crate::redirect::check_return_path(&rd)
            .map(str::to_string)
            .map_err(|why| refuse(&why.to_string())),
        Err(e) => Err(refuse(&e.to_string())),
    }
}

/// Clears every cookie of ours, marks the provider session as logged out for all workers (a
/// copied cookie stops working too), and sends the browser to the provider's end-session
/// endpoint, or to `rd` when there is none.
///
/// # Safety
/// `r` must be a live main request in its access phase, owning `rctx`.
unsafe fn sign_out(
    r: *mut ngx_http_request_t,
    rctx: &mut ctx::RequestCtx,
    p: &Provider,
    rd: String,
) -> ngx_int_t {
    let now = now();
    // SAFETY: per this function's contract.
    unsafe {
        let d = match login::discovery(r, rctx, p, now) {
            login::Step::Ready(d) => Some(d),
            login::Step::Pending => return NGX_AGAIN as ngx_int_t,
            login::Step::Failed(_) => None,
        };
        let carried = carried_session(r, p);
        let session = carried
            .as_ref()
            .map(|(v, _)| v)
            .filter(|v| v.session.is_valid_at(now));
        if let Some(s) = session.map(|v| &v.session) {
            if let Some(sid) = &s.sid {
                let key = shared::key(sid.as_bytes());
                zone::with_table(p.zone, |t| t.revoke(&key, s.exp, now));
            }
        }
        let attrs = CookieAttrs {
            secure: p.conf.cookie_secure,
        };
        let headers = http::cookie_headers(r);
        let mut resp = Response::new(NGX_HTTP_MOVED_TEMPORARILY as usize)
            .page("Signed out", "You are signed out.");
        // Only cookies proven ours are deleted: the session's chunks and login states that
        // open; a same-named cookie of another application is left alone.
        let chunks = carried.as_ref().map_or(0, |(_, chunks)| *chunks);
        for line in clear_session_cookies(p, chunks) {
            resp = resp.header("Set-Cookie", line);
        }
        let mut deleted: Vec<&[u8]> = Vec::new();
        for (n, _, _) in login::own_login_states(p, &headers) {
            if !deleted.contains(&n) {
                deleted.push(n);
                let name = String::from_utf8_lossy(n);
                resp = resp.header("Set-Cookie", cookies::delete_cookie(&name, attrs));
            }
        }
        let location = match d.as_ref().and_then(|d| d.end_session_endpoint.as_deref()) {
            Some(endpoint) => {
                let origin = http::origin(r);
                let back = match &p.conf.post_logout_redirect_uri {
                    Some(u) if u.starts_with('/') => format!("{origin}{u}"),
                    Some(u) => u.clone(),
                    None => format!("{origin}{rd}"),
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
unsafe fn backchannel_logout(
    r: *mut ngx_http_request_t,
    rctx: &mut ctx::RequestCtx,
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
        let d = match login::discovery(r, rctx, p, now) {
            login::Step::Ready(d) => d,
            login::Step::Pending => return NGX_AGAIN as ngx_int_t,
            login::Step::Failed(resp) => return finish(r, resp),
        };
        let kid = id_token::key_id(&token);
        let keys = match login::keys(r, rctx, p, &d, kid.as_deref(), now) {
            login::Step::Ready(k) => k,
            login::Step::Pending => return NGX_AGAIN as ngx_int_t,
            login::Step::Failed(resp) => return finish(r, resp),
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
                zone::with_table(p.zone, |t| t.revoke(&key, until, now));
                ngx_log_error!(
                    NGX_LOG_INFO,
                    log,
                    "oidc: provider \"{}\": back-channel logout: a session ended at the provider",
                    p.conf.name
                );
                finish(r, Response::new(NGX_HTTP_OK as usize))
            }
            Ok(LogoutToken { sid: None, .. }) => {
                ngx_log_error!(NGX_LOG_WARN, log, "oidc: provider \"{}\": back-channel logout token without sid: turn on \"Backchannel logout session required\" for the client", p.conf.name);
                finish(
                    r,
                    bad("the logout token has no sid; logout by sub alone is not supported"),
                )
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

/// Content handler of an `oidc_endpoints` location.
pub extern "C" fn content_handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: nginx calls content handlers with a live request (main or subrequest).
    unsafe {
        let req = Request::from_ngx_http_request(r);
        let (Some(lcf), Some(main)) = (Module::location_conf(req), Module::main_conf(req)) else {
            return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
        };
        let Some(p) = lcf.endpoints.map(|i| &main.providers[i]) else {
            return NGX_HTTP_NOT_FOUND as ngx_int_t;
        };
        let uri = String::from_utf8_lossy(http::bytes(&(*r).uri)).into_owned();
        let session = read_session(r, p, now());
        let resp = match (endpoint(&uri, p), session) {
            ("auth", Some(s)) => {
                let args = http::args(&*r);
                let asked = Rules::from_query(|name| {
                    query::param(args, name)
                        .ok()
                        .flatten()
                        .map(|v| v.into_owned())
                });
                if let Err(resp) = authorize(r, p, &s.session, &[&lcf.rules, &asked]) {
                    return resp.send(r);
                }
                let mut resp = Response::new(NGX_HTTP_ACCEPTED as usize);
                for (k, _, v) in &s.headers {
                    resp = resp.header(k, v.clone());
                }
                if let Some(c) = ctx::get_or_create(r) {
                    c.session = Some(s);
                }
                resp
            }
            ("userinfo", Some(v)) => {
                let s = &v.session;
                let groups: Vec<serde_json::Value> = match s.claims.get("groups") {
                    Some(serde_json::Value::Array(a)) => a.clone(),
                    _ => Vec::new(),
                };
                // A JSON body escapes what a header could not carry: the claims as sent.
                let body = serde_json::json!({
                    "user": s.claim_str(&p.conf.user_claim).or(s.claim_str("sub")),
                    "email": s.claim_str("email"),
                    "preferredUsername": s.claim_str("preferred_username"),
                    "groups": groups,
                });
                Response::new(NGX_HTTP_OK as usize).json(format!("{body}\n"))
            }
            ("auth" | "userinfo", None) => unauthorized(),
            _ => Response::new(NGX_HTTP_NOT_FOUND as usize).page(
                "Not found",
                "Known endpoints: callback, sign_in, sign_out, auth, userinfo.",
            ),
        };
        resp.send(r)
    }
}
