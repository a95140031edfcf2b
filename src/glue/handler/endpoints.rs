//! `/oauth2/*`: callback, sign_in, sign_out, backchannel_logout and the probes ping and ready
//! run in the access phase (they may call the provider); auth and userinfo are content
//! handlers, so they also answer `auth_request` subrequests, which skip the access phase.

use ngx::ffi::{
    ngx_http_request_t, ngx_int_t, NGX_AGAIN, NGX_DECLINED, NGX_HTTP_ACCEPTED,
    NGX_HTTP_BAD_REQUEST, NGX_HTTP_GET, NGX_HTTP_HEAD, NGX_HTTP_INTERNAL_SERVER_ERROR,
    NGX_HTTP_NOT_ALLOWED, NGX_HTTP_NOT_FOUND, NGX_HTTP_OK, NGX_HTTP_SERVICE_UNAVAILABLE,
    NGX_LOG_WARN,
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
use crate::glue::service::{cluster, metrics, provider};
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
            "ping" => finish(r, probe_answer(r, NGX_HTTP_OK, "OK")),
            "ready" => ready(r, rctx, p),
            "sign_out" => match return_path(r) {
                Ok(rd) => logout::sign_out(r, rctx, p, rd),
                Err(resp) => finish(r, resp),
            },
            _ => NGX_DECLINED as ngx_int_t,
        }
    }
}

/// A probe's plain-text answer; 405 for methods other than GET and HEAD.
///
/// # Safety
/// `r` must be a live request.
unsafe fn probe_answer(r: *mut ngx_http_request_t, status: u32, text: &str) -> Response<'static> {
    // SAFETY: per this function's contract.
    let method = unsafe { (*r).method } as u32;
    if method != NGX_HTTP_GET && method != NGX_HTTP_HEAD {
        return Response::new(NGX_HTTP_NOT_ALLOWED as usize).header("Allow", "GET, HEAD".into());
    }
    Response {
        content_type: "text/plain; charset=utf-8",
        body: format!("{text}\n"),
        ..Response::new(status as usize)
    }
}

/// `/oauth2/ready`: 200 when the provider's discovery document and JWKS are at hand (in this
/// worker, or fetched by any worker within their cache lifetime), else this request fetches
/// them as a login would and answers 200 once both arrived, 503 if the provider fails. Holds
/// no session and never waits on another request.
///
/// # Safety
/// `r` must be a live main request in its access phase, owning `rctx`.
unsafe fn ready(r: *mut ngx_http_request_t, rctx: &mut ctx::RequestCtx, p: &Provider) -> ngx_int_t {
    let now = now();
    // SAFETY: per this function's contract.
    unsafe {
        // A node whose revocations may be stale must not take traffic (issue #14).
        if !cluster::link_up(p) {
            return finish(
                r,
                probe_answer(r, NGX_HTTP_SERVICE_UNAVAILABLE, "cluster store unreachable"),
            );
        }
        if metrics::documents_known(p, now) {
            return finish(r, probe_answer(r, NGX_HTTP_OK, "ready"));
        }
        let not_ready = |r| {
            finish(
                r,
                probe_answer(
                    r,
                    NGX_HTTP_SERVICE_UNAVAILABLE,
                    "provider documents unavailable",
                ),
            )
        };
        let d = match provider::discovery(r, rctx, p, now) {
            provider::Step::Ready(d) => d,
            provider::Step::Pending => return NGX_AGAIN as ngx_int_t,
            provider::Step::Failed(_) => return not_ready(r),
        };
        match provider::keys(r, rctx, p, &d, None, now) {
            provider::Step::Ready(_) => finish(r, probe_answer(r, NGX_HTTP_OK, "ready")),
            provider::Step::Pending => NGX_AGAIN as ngx_int_t,
            provider::Step::Failed(_) => not_ready(r),
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
