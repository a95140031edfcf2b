//! Token refresh: one request per session asks the provider, in all workers together; the
//! others pass on the still-valid token, or wait and take the result from the shared zone.

use ngx::ffi::{ngx_http_request_t, NGX_LOG_ERR, NGX_LOG_INFO, NGX_LOG_WARN};
use ngx::ngx_log_error;

use serde_json::{Map, Value};
use std::rc::Rc;
use zeroize::Zeroizing;

use crate::cluster::refresh::{Claim, Report, ANSWER_WAIT};
use crate::glue::service::ctx::{RefreshState, RequestCtx};
use crate::glue::service::fetch::{self, FetchRequest};
use crate::glue::service::http::log;
use crate::glue::service::provider::{discovery, keys, token_failure, Step};
use crate::glue::service::set_cookie::queue_session;
use crate::glue::service::{cluster, metrics, pause, zone};
use crate::glue::Provider;
use crate::metrics::{Counter, Endpoint};
use crate::oidc::id_token::{self, Expectations};
use crate::oidc::jws;
use crate::oidc::{authorize, token};
use crate::session::{Session, Tokens, Verified};
use crate::shared::{self, Begin, Outcome};

/// How often a waiting request looks at the shared zone again.
const WAIT_STEP_MS: usize = 50;
/// Longest wait for another request's refresh (200 × 50 ms = 10 s).
const MAX_WAITS: u32 = 200;
/// How often a request looks for the cluster store's answer to its refresh question.
const CLAIM_STEP_MS: usize = 5;

/// Where a session's refresh stands for this request.
pub enum Refreshed {
    Ready(Rc<Verified>),
    /// The handler runs again later.
    Pending,
    /// The provider ended the login (`invalid_grant`).
    Ended,
    /// The provider cannot be asked now.
    Unavailable,
}

enum Decision {
    Go,
    Running,
    Done(String),
    Ended,
}

/// Renews `session`'s access token with its refresh token (OIDC Core §12, RFC 6749 §6), or
/// takes the result of another request's refresh from the shared zone.
///
/// # Safety
/// `r` must be a live main request in its access phase, owning `rctx`.
pub unsafe fn refresh(
    r: *mut ngx_http_request_t,
    rctx: &mut RequestCtx,
    p: &Provider,
    session: Session,
    now: u64,
) -> Refreshed {
    let Some(rt) = session.rt.clone() else {
        return Refreshed::Unavailable;
    };
    let key = shared::key(rt.as_bytes());
    if rctx.refresh == RefreshState::Fetching {
        rctx.refresh = RefreshState::Idle;
        let (status, body) = rctx.take_fetched(Endpoint::Refresh).unwrap_or_default();
        match token::parse(status, &body) {
            Ok(t) if t.id_token.is_some() || jws::header(&t.access_token).is_some() => {
                rctx.token = Some(t);
                rctx.refresh = RefreshState::Verifying;
            }
            answer => {
                let answer = answer
                    .map(|t| (t, RefreshedClaims::default()))
                    .map_err(|e| (e, status));
                // SAFETY: per this function's contract.
                return unsafe { finish(r, rctx, p, session, &key, answer, now) };
            }
        }
    }
    if rctx.refresh == RefreshState::Verifying {
        // SAFETY: per this function's contract.
        let claims = match unsafe { refreshed_claims(r, rctx, p, &session, now) } {
            Step::Pending => return Refreshed::Pending,
            Step::Ready(claims) => claims,
            Step::Failed(_) => RefreshedClaims::default(),
        };
        rctx.refresh = RefreshState::Idle;
        let Some(t) = rctx.token.take() else {
            return Refreshed::Unavailable;
        };
        // SAFETY: per this function's contract.
        return unsafe { finish(r, rctx, p, session, &key, Ok((t, claims)), now) };
    }
    // SAFETY: per this function's contract.
    let d = match unsafe { discovery(r, rctx, p, now) } {
        Step::Ready(d) => d,
        Step::Pending => return Refreshed::Pending,
        Step::Failed(_) => return Refreshed::Unavailable,
    };
    // A result is an answer to this request only if it is newer than the session the request
    // carries and its access token is still valid (checked under the zone's lock, see
    // `begin_refresh`); the session it opens to is kept for `Done`.
    let mut opened = None;
    let usable = |sealed: &[u8]| {
        opened = Session::open(&p.conf.keys, &p.conf.session_aad, sealed)
            .filter(|new| *new != session && new.access_token_valid(now));
        opened.is_some()
    };
    let decision = match rctx.refresh {
        // This request holds the node's refresh and waits for the cluster store.
        RefreshState::Claiming { .. } => Some(Decision::Go),
        // SAFETY: the zone belongs to this provider and the worker is running.
        _ => unsafe {
            zone::with_table(p.zone, |t| match t.begin_refresh(&key, now, usable) {
                Begin::Go => Decision::Go,
                Begin::Running => Decision::Running,
                Begin::Done(sealed) => Decision::Done(String::from_utf8_lossy(sealed).into_owned()),
                Begin::Ended => Decision::Ended,
            })
        },
    };
    match decision.unwrap_or(Decision::Go) {
        Decision::Go => {
            // SAFETY: per this function's contract.
            if let Some(answer) = unsafe { claim_in_cluster(r, rctx, p, &session, &key, now) } {
                return answer;
            }
            let req = FetchRequest {
                endpoint: Endpoint::Refresh,
                zone: p.zone,
                url: &d.token_endpoint,
                form: Some(authorize::refresh_body(&rt)),
                authorization: Some(authorize::client_basic_auth(
                    &p.conf.client_id,
                    &p.conf.client_secret,
                )),
            };
            // SAFETY: per this function's contract.
            if unsafe { fetch::start(r, rctx, &p.conf.fetch_location, req) }.is_ok() {
                rctx.refresh = RefreshState::Fetching;
                return Refreshed::Pending;
            }
            // SAFETY: as above.
            unsafe { zone::with_table(p.zone, |t| t.finish_refresh(&key, Outcome::Failed, now)) };
            cluster::report_refresh(p, &key, Report::Failed);
            metrics::count(p, Counter::RefreshFailed);
            Refreshed::Unavailable
        }
        Decision::Running if session.access_token_valid(now) => {
            Refreshed::Ready(Rc::new(Verified::new(session, &p.conf.user_claim)))
        }
        Decision::Running => {
            let waits = match rctx.refresh {
                RefreshState::Waiting(n) => n + 1,
                _ => 1,
            };
            if waits > MAX_WAITS {
                metrics::count(p, Counter::RefreshFailed);
                return Refreshed::Unavailable;
            }
            rctx.refresh = RefreshState::Waiting(waits);
            // SAFETY: per this function's contract; the caller returns NGX_AGAIN.
            unsafe { pause::pause(r, WAIT_STEP_MS) };
            Refreshed::Pending
        }
        Decision::Done(sealed) => match opened {
            // `usable` opened it and checked that its access token is valid: it goes upstream.
            Some(new) => {
                queue_session(rctx, p, &sealed, new.exp.saturating_sub(now));
                metrics::count(p, Counter::RefreshWaited);
                Refreshed::Ready(remember(p, &sealed, new))
            }
            None => Refreshed::Unavailable,
        },
        Decision::Ended => Refreshed::Ended,
    }
}

/// The node's refresh winner asks the other nodes (through the cluster store) before it calls
/// the provider: `None` means refresh now (this node won, or there is no store or no answer
/// in time: node-local coordination as without one); otherwise the request's answer.
///
/// # Safety
/// `r` must be a live main request in its access phase, owning `rctx`; this request holds
/// the zone's refresh slot of `key`.
unsafe fn claim_in_cluster(
    r: *mut ngx_http_request_t,
    rctx: &mut RequestCtx,
    p: &Provider,
    session: &Session,
    key: &shared::Key,
    now: u64,
) -> Option<Refreshed> {
    p.conf.cluster.as_ref()?;
    let (waits, unanswered) = match rctx.refresh {
        RefreshState::Claiming { waits, unanswered } => (waits, unanswered),
        _ => (0, 0),
    };
    let wait = |rctx: &mut RequestCtx, ms: usize, unanswered: u32| {
        rctx.refresh = RefreshState::Claiming {
            waits: waits + 1,
            unanswered,
        };
        // SAFETY: per this function's contract; the caller returns NGX_AGAIN.
        unsafe { pause::pause(r, ms) };
        Some(Refreshed::Pending)
    };
    let claim = match cluster::claim_refresh(p, key, now) {
        Some(claim) => claim,
        None if (unanswered as u128) * (CLAIM_STEP_MS as u128) < ANSWER_WAIT.as_millis() => {
            return wait(rctx, CLAIM_STEP_MS, unanswered + 1);
        }
        None => Claim::Unavailable,
    };
    let release = |outcome| {
        // SAFETY: the zone belongs to this provider and the worker is running.
        unsafe { zone::with_table(p.zone, |t| t.finish_refresh(key, outcome, now)) };
    };
    match claim {
        Claim::Won | Claim::Unavailable => {
            rctx.refresh = RefreshState::Idle;
            None
        }
        Claim::Taken(sealed) => {
            rctx.refresh = RefreshState::Idle;
            let sealed = String::from_utf8(sealed).ok()?;
            let new = Session::open(&p.conf.keys, &p.conf.session_aad, sealed.as_bytes())
                .filter(|new| new != session && new.access_token_valid(now))?;
            // The other workers of this node take it from the zone.
            release(Outcome::Done(sealed.as_bytes()));
            queue_session(rctx, p, &sealed, new.exp.saturating_sub(now));
            Some(Refreshed::Ready(remember(p, &sealed, new)))
        }
        Claim::Ended => {
            rctx.refresh = RefreshState::Idle;
            release(Outcome::Ended);
            Some(Refreshed::Ended)
        }
        Claim::Busy if session.access_token_valid(now) => {
            rctx.refresh = RefreshState::Idle;
            // The next request of this node asks again, and finds the result by then.
            release(Outcome::Failed);
            Some(Refreshed::Ready(Rc::new(Verified::new(
                session.clone(),
                &p.conf.user_claim,
            ))))
        }
        Claim::Busy if waits >= MAX_WAITS => {
            rctx.refresh = RefreshState::Idle;
            release(Outcome::Failed);
            Some(Refreshed::Unavailable)
        }
        Claim::Busy => wait(rctx, WAIT_STEP_MS, 0),
    }
}

/// What a refresh's tokens say about the user, when they verified: the identity claims of the
/// refreshed ID token, and the role claims of the refreshed access token.
#[derive(Default)]
struct RefreshedClaims {
    identity: Option<Map<String, Value>>,
    roles: Option<Map<String, Value>>,
}

/// The token endpoint's answer to a refresh: the tokens with what they say about the user,
/// or the error with the call's status.
type Answer = Result<(token::TokenResponse, RefreshedClaims), (token::TokenError, u16)>;

/// The identity claims of the refreshed ID token in `rctx.token`, verified like the login's
/// (but for the nonce) and about the same user, and the role claims of the refreshed access
/// token (when it is a JWT), so that group and role changes at the provider apply from the
/// next refresh on; what does not verify keeps the login's claims (logged).
///
/// # Safety
/// `r` must be a live main request owning `rctx`.
unsafe fn refreshed_claims(
    r: *mut ngx_http_request_t,
    rctx: &mut RequestCtx,
    p: &Provider,
    session: &Session,
    now: u64,
) -> Step<RefreshedClaims> {
    let Some(t) = rctx.token.as_ref() else {
        return Step::Ready(RefreshedClaims::default());
    };
    let idt = Zeroizing::new(t.id_token.clone());
    let at = Zeroizing::new(t.access_token.clone());
    // SAFETY: per this function's contract.
    let d = match unsafe { discovery(r, rctx, p, now) } {
        Step::Ready(d) => d,
        Step::Pending => return Step::Pending,
        Step::Failed(_) => return Step::Ready(RefreshedClaims::default()),
    };
    let kid = id_token::key_id(idt.as_deref().unwrap_or(&at));
    // SAFETY: per this function's contract.
    let set = match unsafe { keys(r, rctx, p, &d, kid.as_deref(), now) } {
        Step::Ready(set) => set,
        Step::Pending => return Step::Pending,
        Step::Failed(_) => return Step::Ready(RefreshedClaims::default()),
    };
    let want = Expectations {
        issuer: &p.conf.issuer,
        client_id: &p.conf.client_id,
        nonce: "",
        now,
        leeway: p.conf.clock_skew,
    };
    let sub = session.claim_str("sub").unwrap_or_default();
    let refused = |what: &str, e: id_token::JwtError| {
        ngx_log_error!(
            NGX_LOG_WARN,
            log(r),
            "oidc: provider \"{}\": the refreshed {} of \"{}\" was not accepted ({}); the login's claims stay",
            p.conf.name,
            what,
            session.user(&p.conf.user_claim).unwrap_or_default(),
            e
        );
    };
    let identity = match idt
        .as_deref()
        .map(|t| id_token::verify_refreshed(t, &set, &want, sub))
    {
        Some(Ok(claims)) => Some(claims),
        Some(Err(e)) => {
            refused("ID token", e);
            None
        }
        None => None,
    };
    let roles = match id_token::access_token_roles(&at, &set, &want, sub) {
        Ok(roles) => roles,
        Err(e) => {
            refused("access token", e);
            None
        }
    };
    Step::Ready(RefreshedClaims { identity, roles })
}

/// Applies the provider's answer (the tokens, and the refreshed ID token's claims when they
/// verified) and tells the other workers.
///
/// # Safety
/// `r` must be a live main request owning `rctx`.
unsafe fn finish(
    r: *mut ngx_http_request_t,
    rctx: &mut RequestCtx,
    p: &Provider,
    session: Session,
    key: &shared::Key,
    answer: Answer,
    now: u64,
) -> Refreshed {
    let (t, claims) = match answer {
        Ok(answer) => answer,
        Err((token::TokenError::Refused { error, description }, _)) if error == "invalid_grant" => {
            ngx_log_error!(
                NGX_LOG_INFO,
                log(r),
                "oidc: provider \"{}\": refresh refused ({}): the login of \"{}\" has ended",
                p.conf.name,
                description,
                session.user(&p.conf.user_claim).unwrap_or_default()
            );
            // SAFETY: the zone belongs to this provider.
            unsafe { zone::with_table(p.zone, |tb| tb.finish_refresh(key, Outcome::Ended, now)) };
            cluster::report_refresh(p, key, Report::Ended);
            metrics::count(p, Counter::RefreshEnded);
            return Refreshed::Ended;
        }
        Err((e, status)) => {
            ngx_log_error!(
                NGX_LOG_ERR,
                log(r),
                "oidc: provider \"{}\": token refresh failed: {}",
                p.conf.name,
                token_failure(&e, status, &p.conf.fetch_location)
            );
            // SAFETY: the zone belongs to this provider.
            unsafe { zone::with_table(p.zone, |tb| tb.finish_refresh(key, Outcome::Failed, now)) };
            cluster::report_refresh(p, key, Report::Failed);
            metrics::count(p, Counter::RefreshFailed);
            return Refreshed::Unavailable;
        }
    };
    let tokens = Tokens {
        refresh_token: t.refresh_token.as_deref(),
        access_token: Some(&t.access_token),
        expires_in: t.access_token_lifetime(now),
        refresh_expires_in: t.refresh_expires_in,
        id_token: t.id_token.as_deref(),
    };
    let session = match claims.identity {
        Some(c) => session.with_claims(c),
        None => session,
    };
    let session = session.with_roles(claims.roles.unwrap_or_default());
    let new = session
        .with_tokens(
            &tokens,
            now,
            p.conf.session_lifetime,
            p.keep_access_token.get(),
        )
        .with_id_token(tokens.id_token.filter(|_| p.keep_id_token.get()));
    let Ok(sealed) = new.seal(&p.conf.keys, &p.conf.session_aad) else {
        // SAFETY: the zone belongs to this provider.
        unsafe { zone::with_table(p.zone, |tb| tb.finish_refresh(key, Outcome::Failed, now)) };
        cluster::report_refresh(p, key, Report::Failed);
        metrics::count(p, Counter::RefreshFailed);
        return Refreshed::Unavailable;
    };
    // SAFETY: the zone belongs to this provider; `r` is live per the contract.
    unsafe {
        zone::with_table(p.zone, |tb| {
            tb.finish_refresh(key, Outcome::Done(sealed.as_bytes()), now)
        });
        cluster::report_refresh(p, key, Report::Done(sealed.as_bytes().to_vec()));
        queue_session(rctx, p, &sealed, new.exp.saturating_sub(now));
    }
    metrics::count(p, Counter::RefreshDone);
    Refreshed::Ready(remember(p, &sealed, new))
}

/// Caches a refreshed session under its new cookie, which the browser sends from now on.
fn remember(p: &Provider, sealed: &str, session: Session) -> Rc<Verified> {
    let v = Rc::new(Verified::new(session, &p.conf.user_claim));
    p.sessions
        .borrow_mut()
        .insert(sealed.as_bytes(), Rc::clone(&v));
    v
}
