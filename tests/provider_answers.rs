//! End-to-end: providers that answer in the shapes other relying parties met in the field
//! (issue 13): an issuer ending in `/`, non-integer token times and lifetimes sent as strings,
//! refresh answers that keep the same refresh token or leave optional fields out. The
//! upstream must never receive an expired access token, whatever the provider does.

mod common;

use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;

const PAGE: &str = "/some/page?x=1";

fn refreshes(env: &Env) -> u64 {
    env.provider.stats()["token_requests"]["refresh_token"]
        .as_u64()
        .unwrap_or(0)
}

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis()
}

/// A provider started with the `IDP_*` settings `env`, short-lived access tokens of
/// `access_ttl` seconds, the default `refresh_leeway` (30 s) and the access token passed
/// upstream.
fn env_with(access_ttl: u32, env: &[(&str, &str)]) -> Env {
    let mut opts = EnvOptions::default()
        .token_ttls(access_ttl, access_ttl, 600)
        .location_extra("oidc_pass_access_token on;");
    for (k, v) in env {
        opts.provider.env.push((k.to_string(), v.to_string()));
    }
    Env::start_with(opts)
}

/// What one browser saw while it kept using a page through several access-token lifetimes.
struct Watch {
    /// Requests made.
    requests: usize,
    /// Responses carrying a new session cookie.
    with_set_cookie: usize,
    /// Distinct access tokens the upstream received, in order.
    tokens: Vec<String>,
}

/// Requests the page every 200 ms until the upstream has received `distinct` different access
/// tokens (the login's and the refreshed ones), failing after `deadline`. Every access token
/// must be unexpired when its response arrives (so also when the upstream received it).
fn watch_tokens(env: &Env, b: &mut Browser, distinct: usize, deadline: Duration) -> Watch {
    let start = Instant::now();
    let mut w = Watch {
        requests: 0,
        with_set_cookie: 0,
        tokens: Vec::new(),
    };
    while w.tokens.len() < distinct {
        assert!(
            start.elapsed() < deadline,
            "only {} distinct access tokens within {deadline:?} ({} refresh calls)\n{}",
            w.tokens.len(),
            refreshes(env),
            b.transcript()
        );
        let r = b.get(&env.url(PAGE), &[]);
        let arrived = now_ms();
        assert_eq!(r.status, 200, "{}\n{}", r.summary(), b.transcript());
        w.requests += 1;
        if r.set_cookie("_oidc").is_some() {
            w.with_set_cookie += 1;
        }
        let at = r
            .upstream_header("x-auth-request-access-token")
            .expect("the upstream received an access token");
        let exp = jwt_claims(&at)["exp"].as_f64().expect("exp");
        assert!(
            exp * 1000.0 > arrived as f64,
            "the upstream received an access token that had expired {} ms earlier (request {})",
            arrived as f64 - exp * 1000.0,
            w.requests
        );
        if w.tokens.last() != Some(&at) {
            w.tokens.push(at);
        }
        thread::sleep(Duration::from_millis(200));
    }
    w
}

/// The story of the field report: the upstream keeps getting fresh tokens through several
/// refreshes, and only the responses of a refresh carry a new session cookie.
fn upstream_only_gets_fresh_tokens(env: &Env) {
    let mut b = logged_in(env, PAGE, "demo");
    let w = watch_tokens(env, &mut b, 4, Duration::from_secs(40));
    let calls = refreshes(env);
    assert!(
        calls >= 3,
        "3 refreshes for 4 tokens, the provider saw {calls}"
    );
    assert!(
        w.with_set_cookie < w.requests,
        "every response carried a Set-Cookie ({} of {})",
        w.with_set_cookie,
        w.requests
    );
    assert!(
        w.with_set_cookie as u64 <= calls,
        "{} responses set a new session for {calls} refreshes",
        w.with_set_cookie
    );
    env.assert_error_log_is_clean();
}

// ---------------------------------------------------------------------------- the issuer

#[test]
fn a_provider_whose_issuer_ends_in_a_slash_logs_people_in() {
    let mut opts = EnvOptions::default();
    opts.provider
        .env
        .push(("IDP_ISSUER_TRAILING_SLASH".into(), "1".into()));
    let env = Env::start_with(opts);
    assert!(env.provider.issuer.ends_with("/realms/test/"));
    assert!(
        env.nginx.config.contains("/realms/test/;"),
        "configured with the slash"
    );
    let mut b = logged_in(&env, PAGE, "demo");
    let r = b.get(&env.url(PAGE), &[]);
    assert_eq!(
        r.upstream_header("x-auth-request-user").as_deref(),
        Some("demo")
    );
    let log = env.error_log();
    assert!(!log.contains("issuer mismatch"), "{log}");
    env.assert_error_log_is_clean();
}

#[test]
fn an_issuer_configured_without_the_providers_slash_is_named_in_the_log() {
    let mut opts = EnvOptions::default();
    opts.provider
        .env
        .push(("IDP_ISSUER_TRAILING_SLASH".into(), "1".into()));
    opts.http = opts
        .http
        .replace("@ISSUER@", "http://127.0.0.1:@IDP_PORT@/realms/test");
    let env = Env::start_with(opts);
    let r = env.browser().get(&env.url(PAGE), &[]);
    assert_eq!(r.status, 502, "{}", r.summary());
    let log = env.error_log();
    assert!(
        log.contains("issuer mismatch") && log.contains("differ only in the trailing \"/\""),
        "{log}"
    );
}

// ---------------------------------------------------------------------------- numbers

#[test]
fn fractional_token_times_and_string_lifetimes_log_in_and_refresh() {
    let env = env_with(4, &[("IDP_NUMBERS", "fractional")]);
    let mut b = logged_in(&env, PAGE, "demo");
    let r = b.get(&env.url(PAGE), &[]);
    let at = r
        .upstream_header("x-auth-request-access-token")
        .expect("access token");
    let iat = jwt_claims(&at)["iat"].as_f64().unwrap();
    assert!(
        iat.fract() != 0.0,
        "the provider sent an integer iat: {iat}"
    );
    // The session refreshes with these answers too, and the upstream never gets a stale token.
    watch_tokens(&env, &mut b, 3, Duration::from_secs(30));
    assert!(refreshes(&env) >= 2);
    let log = env.error_log();
    assert!(!log.contains("lacks the claim"), "{log}");
    assert!(
        !log.contains("not accepted"),
        "a refreshed ID token was refused: {log}"
    );
    env.assert_error_log_is_clean();
}

// ---------------------------------------------------------------------------- refreshes

#[test]
fn with_rotating_refresh_tokens_the_upstream_never_gets_an_expired_token() {
    let env = env_with(4, &[]);
    upstream_only_gets_fresh_tokens(&env);
}

#[test]
fn with_the_same_refresh_token_every_time_the_upstream_never_gets_an_expired_token() {
    let env = env_with(4, &[("IDP_ROTATE_REFRESH", "0")]);
    upstream_only_gets_fresh_tokens(&env);
}

#[test]
fn refresh_answers_without_refresh_token_and_expires_in_keep_tokens_fresh() {
    let env = env_with(
        4,
        &[
            ("IDP_ROTATE_REFRESH", "0"),
            ("IDP_REFRESH_OMIT_FIELDS", "refresh_token,expires_in"),
        ],
    );
    upstream_only_gets_fresh_tokens(&env);
}

#[test]
fn a_provider_that_never_sends_expires_in_still_gets_its_tokens_refreshed() {
    let env = env_with(4, &[("IDP_OMIT_FIELDS", "expires_in")]);
    upstream_only_gets_fresh_tokens(&env);
}
