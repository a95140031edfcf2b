//! `Authorization: Bearer <JWT>` with `oidc_bearer on`: the access token is verified against
//! the provider's JWKS (signature, iss, exp, `bearer_audience`, and that it is an access token,
//! not an ID, logout or refresh token) and cached per worker until it expires. A valid token gets the same headers and variables as a cookie session, no cookie.

use std::rc::Rc;

use ngx::ffi::{
    ngx_http_request_t, ngx_int_t, NGX_AGAIN, NGX_HTTP_UNAUTHORIZED, NGX_LOG_INFO, NGX_LOG_WARN,
};
use ngx::ngx_log_error;

use crate::glue::service::ctx::RequestCtx;
use crate::glue::service::http::Response;
use crate::glue::service::metrics;
use crate::glue::service::outcome::{finish, let_through};
use crate::glue::service::provider::{discovery, keys, Step};
use crate::glue::{LocConf, Provider};
use crate::metrics::Counter;
use crate::oidc::id_token::{self, JwtError};
use crate::oidc::numeric;
use crate::session::{Session, Verified};

fn refused(why: &str) -> Response<'static> {
    Response::new(NGX_HTTP_UNAUTHORIZED as usize)
        .header("WWW-Authenticate", "Bearer error=\"invalid_token\"".into())
        .json(format!(
            "{{\"error\":\"invalid_token\",\"error_description\":{}}}\n",
            serde_json::Value::String(why.to_string())
        ))
}

/// Lets a request with a valid bearer `token` (RFC 6750 §2.1) through, from the per-worker
/// cache or verified now (the JWKS may have to be fetched: `NGX_AGAIN`); a refused token gets
/// 401 with `WWW-Authenticate: Bearer error="invalid_token"` (RFC 6750 §3.1).
///
/// # Safety
/// `r` must be a live main request in its access phase, owning `rctx`.
pub unsafe fn protect(
    r: *mut ngx_http_request_t,
    rctx: &mut RequestCtx,
    p: &Provider,
    lcf: &LocConf,
    token: &str,
    now: u64,
) -> ngx_int_t {
    // SAFETY: per this function's contract.
    unsafe {
        let cached = p.bearers.borrow().get(token.as_bytes());
        let verified = match cached.filter(|v| v.session.is_valid_at(now)) {
            Some(v) => v,
            None => match verify(r, rctx, p, token, now) {
                Step::Ready(v) => v,
                Step::Pending => return NGX_AGAIN as ngx_int_t,
                Step::Failed(resp) => return finish(r, resp),
            },
        };
        metrics::count(p, Counter::BearerAccepted);
        let_through(r, rctx, p, lcf, verified, false)
    }
}

/// # Safety
/// `r` must be a live main request in its access phase, owning `rctx`.
unsafe fn verify(
    r: *mut ngx_http_request_t,
    rctx: &mut RequestCtx,
    p: &Provider,
    token: &str,
    now: u64,
) -> Step<Rc<Verified>> {
    // SAFETY: per this function's contract.
    let d = match unsafe { discovery(r, rctx, p, now) } {
        Step::Ready(d) => d,
        Step::Pending => return Step::Pending,
        Step::Failed(resp) => return Step::Failed(resp),
    };
    let kid = id_token::key_id(token);
    // SAFETY: per this function's contract.
    let keys = match unsafe { keys(r, rctx, p, &d, kid.as_deref(), now) } {
        Step::Ready(k) => k,
        Step::Pending => return Step::Pending,
        Step::Failed(resp) => return Step::Failed(resp),
    };
    let audience = &p.conf.bearer_audience;
    match id_token::verify_access_token(
        token,
        &keys,
        &p.conf.issuer,
        audience,
        now,
        p.conf.clock_skew,
    ) {
        Ok(claims) => {
            let exp = numeric::numeric_date(&claims, "exp")
                .ok()
                .flatten()
                .unwrap_or(now);
            let mut session = Session::from_id_token(claims, now, 0);
            session.exp = exp;
            let v = Rc::new(Verified::new(session, &p.conf.user_claim));
            p.bearers
                .borrow_mut()
                .insert(token.as_bytes(), Rc::clone(&v));
            Step::Ready(v)
        }
        Err(e) => {
            let hint = match &e {
                JwtError::Audience(_)
                    if id_token::unverified_audience(token)
                        .iter()
                        .any(|a| a == "account") =>
                {
                    " (a Keycloak access token has aud \"account\" unless the client has an \
                     Audience mapper: Client scopes → <client>-dedicated → Add mapper → By \
                     configuration → Audience, Included Client Audience = your client; or set \
                     bearer_audience)"
                }
                _ => "",
            };
            // SAFETY: a live request has a connection with a log.
            let log = unsafe { (*(*r).connection).log };
            // Another kind of token where an access token belongs is a client that mixes up
            // its tokens, or someone replaying one (the ID token travels through browsers in
            // the sign-out URL): worth the operator's attention, unlike an expired token.
            let level = match e {
                JwtError::NotAnAccessToken(_) => NGX_LOG_WARN,
                _ => NGX_LOG_INFO,
            };
            ngx_log_error!(
                level,
                log,
                "oidc: provider \"{}\": bearer token refused: {}{}",
                p.conf.name,
                e,
                hint
            );
            metrics::count(p, crate::metrics::bearer_refusal(&e));
            Step::Failed(refused(&e.to_string()))
        }
    }
}
