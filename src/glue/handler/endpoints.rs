//! `/oauth2/*`: callback, sign_in, sign_out and backchannel_logout run in the access phase (they
//! may call the provider); auth and userinfo are content handlers, so they also answer
//! `auth_request` subrequests, which skip the access phase.

use ngx::ffi::{
    ngx_http_request_t, ngx_int_t, NGX_DECLINED, NGX_HTTP_ACCEPTED, NGX_HTTP_BAD_REQUEST,
    NGX_HTTP_INTERNAL_SERVER_ERROR, NGX_HTTP_NOT_FOUND, NGX_HTTP_OK, NGX_LOG_WARN,
};
use ngx::http::{HttpModuleLocationConf, HttpModuleMainConf, Request};
use ngx::ngx_log_error;

use crate::authz::Rules;
use crate::glue::flow::{callback, login, logout};
use crate::glue::service::ctx;
use crate::glue::service::http::{self, Response};
use crate::glue::service::outcome::{authorize, finish, unauthorized};
use crate::glue::service::session::carried_session;
use crate::glue::service::time::now;
use crate::glue::{Module, Provider};
use crate::oidc::query;

/// The endpoint a request names: the last path segment, or the redirect URI's path (its
/// variables evaluated for this request).
///
/// # Safety
/// `r` must be a live request.
unsafe fn endpoint<'a>(r: *mut ngx_http_request_t, uri: &'a str, p: &Provider) -> &'a str {
    let configured = match p.redirect_uri {
        // SAFETY: per this function's contract.
        Some(cv) => unsafe { cv.eval(r) }.unwrap_or_default(),
        None => p.conf.redirect_uri.clone(),
    };
    let redirect_path = match configured.find("://") {
        Some(i) => {
            let rest = &configured[i + 3..];
            rest.find('/').map_or("/", |j| &rest[j..])
        }
        None => configured.as_str(),
    };
    if uri == redirect_path {
        return "callback";
    }
    uri.rsplit('/').next().unwrap_or("")
}

/// The access phase of an `oidc_endpoints` location: the endpoints that may call the provider
/// or set cookies run here; anything else is declined to the content handler.
///
/// # Safety
/// `r` must be a live main request in its access phase.
pub unsafe fn access(r: *mut ngx_http_request_t, p: &Provider) -> ngx_int_t {
    // SAFETY: per this function's contract.
    unsafe {
        let uri = String::from_utf8_lossy(http::bytes(&(*r).uri)).into_owned();
        let Some(rctx) = ctx::get_or_create(r) else {
            return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
        };
        match endpoint(r, &uri, p) {
            "callback" => callback::callback(r, rctx, p),
            "sign_in" | "start" => match return_path(r) {
                Ok(rd) => login::start(r, rctx, p, &rd, now()),
                Err(resp) => finish(r, resp),
            },
            "backchannel_logout" => logout::backchannel_logout(r, rctx, p),
            "sign_out" => match return_path(r) {
                Ok(rd) => logout::sign_out(r, rctx, p, rd),
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

/// Content handler of an `oidc_endpoints` location.
pub extern "C" fn content_handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: nginx calls content handlers with a live request (main or subrequest).
    unsafe {
        let req = Request::from_ngx_http_request(r);
        let (Some(lcf), Some(main)) = (Module::location_conf(req), Module::main_conf(req)) else {
            return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
        };
        let Some(which) = lcf.endpoints else {
            return NGX_HTTP_NOT_FOUND as ngx_int_t;
        };
        let Some(p) = main.resolve(r, which, "oidc_endpoints") else {
            return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
        };
        let uri = String::from_utf8_lossy(http::bytes(&(*r).uri)).into_owned();
        let session = carried_session(r, p, now()).valid;
        let resp = match (endpoint(r, &uri, p), session) {
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
