//! The provider's documents, fetched through the fetch location and cached per worker: the
//! discovery document (OIDC Discovery 1.0 §4) and the JWKS (RFC 7517), with the stale copy
//! standing in while the provider is down.

use ngx::ffi::{ngx_http_request_t, NGX_LOG_ERR};
use ngx::ngx_log_error;

use super::ctx::RequestCtx;
use super::fetch::{self, FetchRequest};
use super::http::{log, Response};
use super::metrics;
use super::outcome::{internal_error, provider_unreachable};
use crate::glue::Provider;
use crate::metrics::Endpoint;
use crate::oidc::cache::Keys;
use crate::oidc::discovery::{self, Discovery};
use crate::oidc::jws::JwkSet;
use crate::oidc::token;

/// Where a step that may need the provider stands.
pub enum Step<T> {
    Ready(T),
    /// A fetch is under way; the handler runs again when it completes.
    Pending,
    Failed(Response<'static>),
}

/// Unwraps a [`Step`] in a handler-level function returning `ngx_int_t`: `Pending` returns
/// `NGX_AGAIN`, `Failed` sends its error page.
macro_rules! step {
    ($r:expr, $e:expr) => {
        match $e {
            $crate::glue::service::provider::Step::Ready(v) => v,
            $crate::glue::service::provider::Step::Pending => {
                return ngx::ffi::NGX_AGAIN as ngx::ffi::ngx_int_t
            }
            // SAFETY: the caller's request is live and has sent nothing yet.
            $crate::glue::service::provider::Step::Failed(resp) => {
                return unsafe { $crate::glue::service::outcome::finish($r, resp) }
            }
        }
    };
}
pub(crate) use step;

/// A provider document for the per-worker cache (discovery, JWKS): fetched through the fetch
/// location; `accept` checks the answer and caches it; when the provider fails, the `stale`
/// copy keeps logins going, else the login gets an error page.
///
/// # Safety
/// `r` must be the live main request owning `rctx`.
unsafe fn provider_document<T>(
    r: *mut ngx_http_request_t,
    rctx: &mut RequestCtx,
    p: &Provider,
    endpoint: Endpoint,
    url: &str,
    accept: impl FnOnce(u16, &[u8]) -> Result<T, String>,
    stale: impl FnOnce() -> Option<T>,
) -> Step<T> {
    let what = match endpoint {
        Endpoint::Jwks => "JWKS",
        _ => "discovery",
    };
    let Some((status, body)) = rctx.take_fetched(endpoint) else {
        let req = FetchRequest {
            endpoint,
            zone: p.zone,
            url,
            form: None,
            authorization: None,
        };
        // SAFETY: per this function's contract.
        return match unsafe { fetch::start(r, rctx, &p.conf.fetch_location, req) } {
            Ok(()) => Step::Pending,
            Err(()) => Step::Failed(internal_error()),
        };
    };
    let failure = match accept(status, &body) {
        Ok(doc) => return Step::Ready(doc),
        Err(failure) => failure,
    };
    ngx_log_error!(
        NGX_LOG_ERR,
        log(r),
        "oidc: provider \"{}\": {} from {} failed: {}",
        p.conf.name,
        what,
        url,
        failure
    );
    match stale() {
        Some(doc) => Step::Ready(doc),
        None => Step::Failed(provider_unreachable(status)),
    }
}

/// The provider's discovery document: cached, fetched, or stale when the provider is down.
///
/// # Safety
/// `r` must be the live main request owning `rctx`.
pub unsafe fn discovery(
    r: *mut ngx_http_request_t,
    rctx: &mut RequestCtx,
    p: &Provider,
    now: u64,
) -> Step<Discovery> {
    if let Some(d) = p.cache.borrow().discovery(now) {
        return Step::Ready(d.clone());
    }
    let url = discovery::url(&p.conf.issuer);
    let accept = |status, body: &[u8]| {
        let d = match status {
            200 => discovery::parse(body, &p.conf.issuer).map_err(|e| e.to_string())?,
            404 => {
                return Err(format!(
                    "HTTP 404{}",
                    discovery::not_found_hint(&p.conf.issuer, &p.conf.fetch_location)
                ))
            }
            _ => return Err(fetch::describe(status, &p.conf.fetch_location)),
        };
        p.cache.borrow_mut().set_discovery(d.clone(), now);
        Ok(d)
    };
    let stale = || p.cache.borrow().stale_discovery().cloned();
    // SAFETY: per this function's contract.
    unsafe { provider_document(r, rctx, p, Endpoint::Discovery, &url, accept, stale) }
}

/// Keys that can verify a token signed with `kid`.
///
/// # Safety
/// `r` must be the live main request owning `rctx`.
pub unsafe fn keys(
    r: *mut ngx_http_request_t,
    rctx: &mut RequestCtx,
    p: &Provider,
    d: &Discovery,
    kid: Option<&str>,
    now: u64,
) -> Step<JwkSet> {
    if let Keys::Ready(set) = p.cache.borrow().keys(kid, now) {
        return Step::Ready(set.clone());
    }
    let accept = |status, body: &[u8]| {
        if status != 200 {
            return Err(fetch::describe(status, &p.conf.fetch_location));
        }
        let set = serde_json::from_slice::<JwkSet>(body).map_err(|e| format!("not a JWKS: {e}"))?;
        p.cache.borrow_mut().set_keys(set.clone(), now);
        metrics::documents_cached(p, now);
        Ok(set)
    };
    let stale = || p.cache.borrow().stale_keys().cloned();
    // SAFETY: per this function's contract.
    unsafe { provider_document(r, rctx, p, Endpoint::Jwks, &d.jwks_uri, accept, stale) }
}

/// A failed token-endpoint call, described for the error log.
pub fn token_failure(e: &token::TokenError, status: u16, location: &str) -> String {
    if fetch::answered(status) {
        format!("{e}{}{}", e.hint(), fetch::location_hint(status, location))
    } else {
        fetch::describe(status, location)
    }
}
