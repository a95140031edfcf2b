//! End-to-end: what happens to a session after login — token refresh (one call for many
//! concurrent requests, across workers, with rotating refresh tokens), a login ended at the
//! provider, a provider that is down, passing tokens upstream, sign-out, and who gets a 401.

mod common;

use std::thread;
use std::time::Duration;

use common::*;
use serde_json::Value;

const PAGE: &str = "/some/page?x=1";

/// The contract config with a short refresh leeway, so that tests can use short token
/// lifetimes (the default leeway of 30 s would refresh on every request).
/// Tokens that live `access_ttl` seconds, refreshed `leeway` before expiry. The module counts
/// a second less than `expires_in` and nginx's clock ticks in whole seconds, so a 5 s token
/// with a 1 s leeway is due 2–3 s after the login and expired 3–4 s after it: the login's own
/// last request can never find it due (a 3 s token could be, across a second boundary).
fn env_with(access_ttl: u32, leeway: &str, location_extra: &str) -> Env {
    let provider = provider_block_with(&[&format!("refresh_leeway {leeway};")]);
    let mut opts = EnvOptions::default()
        .token_ttls(access_ttl, access_ttl, 600)
        .location_extra(location_extra);
    opts.http = format!("{provider}{PROTECTED_SERVER}");
    Env::start_with(opts)
}

fn refreshes(env: &Env) -> u64 {
    env.provider.stats()["token_requests"]["refresh_token"]
        .as_u64()
        .unwrap_or(0)
}

#[test]
fn thirty_two_concurrent_requests_needing_a_refresh_make_one_refresh_call() {
    let env = env_with(5, "1s", "");
    let b = logged_in(&env, PAGE, "demo");
    // The refreshed tokens live long, so the check below that the old cookie is served from the
    // shared result cannot meet them due again on a slow machine.
    env.provider.set_token_ttls(600, 600);
    let cookie = b
        .jar
        .header_for(&url::Url::parse(&env.url(PAGE)).unwrap())
        .unwrap();
    thread::sleep(Duration::from_millis(4500));
    assert_eq!(refreshes(&env), 0);

    let results = concurrent_gets(&env.url(PAGE), &cookie, 32);
    for (status, user) in &results {
        assert_eq!(*status, 200, "results: {results:?}");
        assert_eq!(user.as_deref(), Some("demo"));
    }
    assert_eq!(
        refreshes(&env),
        1,
        "the provider saw more than one refresh for one session"
    );

    // The provider rotates refresh tokens, so the old cookie's token is dead; a request that
    // still carries it is served from the shared result, without another provider call.
    let again = concurrent_gets(&env.url(PAGE), &cookie, 1);
    assert_eq!(again[0].0, 200);
    assert_eq!(refreshes(&env), 1);
    env.assert_error_log_is_clean();
}

#[test]
fn the_upstream_always_gets_a_fresh_access_token() {
    let env = env_with(
        5,
        "1s",
        "oidc_pass_access_token on; oidc_set_authorization_header on;",
    );
    let mut b = logged_in(&env, PAGE, "demo");
    let r = b.get(&env.url(PAGE), &[]);
    let first = r
        .upstream_header("x-auth-request-access-token")
        .expect("access token header");
    assert_eq!(
        r.upstream_header("authorization"),
        Some(format!("Bearer {first}"))
    );
    let claims = jwt_claims(&first);
    assert_eq!(claims["aud"], "account", "a Keycloak-shaped access token");
    env.provider.set_token_ttls(600, 600);

    thread::sleep(Duration::from_millis(4500));
    let r = b.get(&env.url(PAGE), &[]);
    assert_eq!(r.status, 200, "{}", b.transcript());
    let second = r
        .upstream_header("x-auth-request-access-token")
        .expect("access token header");
    assert_ne!(first, second, "an expired access token was passed upstream");
    let exp = jwt_claims(&second)["exp"].as_i64().unwrap();
    assert!(exp > unix_now(), "the passed token expired at {exp}");
    assert!(
        r.set_cookie("_oidc").is_some(),
        "the refreshed session was not sent to the browser"
    );
    assert_eq!(refreshes(&env), 1);

    // A client cannot inject its own token or Authorization header.
    let r = b.get(
        &env.url(PAGE),
        &[
            ("X-Auth-Request-Access-Token", "forged"),
            ("Authorization", "Bearer forged"),
        ],
    );
    // On a slow machine this request may already be due for the next refresh (the 3 s token
    // is refreshed a second before it expires), so it is checked for being the provider's
    // token, not for being `second`.
    let third = r
        .upstream_header("x-auth-request-access-token")
        .expect("access token header");
    assert_ne!(third, "forged");
    assert_eq!(jwt_claims(&third)["aud"], "account", "the provider's token");
    assert_eq!(
        r.upstream_header("authorization"),
        Some(format!("Bearer {third}"))
    );
    env.assert_error_log_is_clean();
}

#[test]
fn a_login_ended_at_the_provider_ends_the_session() {
    let env = env_with(5, "1s", "");
    let mut b = logged_in(&env, PAGE, "alice");
    env.provider.revoke_grants();
    thread::sleep(Duration::from_millis(4500));

    let r = b.get(&env.url("/api/data"), &[("Accept", "application/json")]);
    assert_eq!(
        r.status,
        401,
        "an API call after the login ended: {}",
        r.summary()
    );
    assert!(r.header("www-authenticate").is_some());
    // The dead session cookie is cleared, so the browser does not send it again.
    assert!(
        b.jar.get("_oidc").is_none(),
        "cookies left: {:?}",
        b.jar.names()
    );
    let r = b.get(&env.url(PAGE), &[]);
    let auth = format!("{}/protocol/openid-connect/auth?", env.provider.issuer);
    assert!(
        r.status == 302 && r.location().is_some_and(|l| l.starts_with(&auth)),
        "a page navigation after the login ended goes to login: {}\n{}",
        r.summary(),
        b.transcript()
    );
    assert!(env.error_log().contains("the login of \"alice\" has ended"));
    env.assert_error_log_is_clean();
}

#[test]
fn while_the_provider_is_down_valid_tokens_pass_and_expired_ones_get_503() {
    let mut env = env_with(12, "10s", "");
    let mut b = logged_in(&env, PAGE, "demo");
    env.provider.kill();

    // Due for a refresh (the 10 s leeway is capped at half the 12 s lifetime) but not expired
    // (5 s to spare for a slow machine): the refresh fails, the request passes.
    thread::sleep(Duration::from_millis(7000));
    let r = b.get(&env.url(PAGE), &[]);
    assert_eq!(
        r.status,
        200,
        "a still-valid session while the provider is down: {}",
        r.summary()
    );

    // Expired and not refreshable: a clear 503, never a silent pass.
    thread::sleep(Duration::from_millis(6000));
    let r = b.get(&env.url(PAGE), &[]);
    assert_eq!(r.status, 503, "{}", r.summary());
    assert!(r.body.contains("cannot be reached"), "{}", r.body);
    assert!(env.error_log().contains("token refresh failed"));
    env.assert_error_log_is_clean();
}

#[test]
fn sign_out_ends_the_provider_session_and_a_copied_cookie_stops_working() {
    let env = env_with(300, "30s", "");
    let mut b = logged_in(&env, PAGE, "demo");
    let stolen = b.jar.get("_oidc").expect("session cookie");

    let r = b.get(&env.url("/oauth2/sign_out"), &[]);
    let end_session = format!("{}/protocol/openid-connect/logout?", env.provider.issuer);
    let loc = r.location().unwrap_or_default().to_string();
    assert!(
        r.status == 302 && loc.starts_with(&end_session),
        "{}",
        r.summary()
    );
    assert_eq!(query_param(&loc, "client_id").as_deref(), Some("test"));
    assert!(query_param(&loc, "id_token_hint").is_some_and(|t| t.split('.').count() == 3));
    assert_eq!(
        query_param(&loc, "post_logout_redirect_uri").as_deref(),
        Some(env.url("/").as_str())
    );
    assert!(b.jar.get("_oidc").is_none());

    // The provider ends its session and sends the browser back; the next page asks for a
    // password again instead of logging the user straight back in.
    let r = b.follow_while(r, |u| u.as_str().starts_with(&end_session));
    assert!(
        r.location().is_some_and(|l| l.starts_with(&env.url("/"))),
        "{}",
        b.transcript()
    );
    let first = b.get(&env.url(PAGE), &[]);
    let r = b.follow(first);
    assert!(
        r.body.contains("kc-form-login"),
        "after sign-out the provider did not ask to log in again: {}",
        r.summary()
    );

    // A copy of the session cookie taken before sign-out no longer works.
    assert_session_refused(&env, &stolen, "a session cookie replayed after sign-out");
    env.assert_error_log_is_clean();
}

#[test]
fn oidc_unauth_action_overrides_the_guess_per_location() {
    let env = env_with(300, "30s", "oidc_unauth_action 401;");
    let mut b = env.browser();
    let r = b.get(&env.url(PAGE), &[]);
    assert_eq!(
        r.status,
        401,
        "a page navigation with oidc_unauth_action 401: {}",
        r.summary()
    );

    let env = env_with(300, "30s", "oidc_unauth_action redirect;");
    let mut b = env.browser();
    let r = b.get(&env.url("/api"), &[("Accept", "application/json")]);
    assert_eq!(
        r.status,
        302,
        "an API call with oidc_unauth_action redirect: {}",
        r.summary()
    );
}

// ---------------------------------------------------------------------------- bearer tokens

/// The access token the upstream received for a logged-in browser.
fn access_token_of(env: &Env, b: &mut Browser) -> String {
    let r = b.get(&env.url(PAGE), &[]);
    r.upstream_header("x-auth-request-access-token")
        .expect("access token header")
}

fn bearer_get(env: &Env, token: &str) -> (u16, Option<String>, Option<String>) {
    let agent = ureq::AgentBuilder::new().redirects(0).build();
    let auth = format!("Bearer {token}");
    match agent
        .get(&env.url("/api/me"))
        .set("Authorization", &auth)
        .call()
    {
        Ok(r) | Err(ureq::Error::Status(_, r)) => {
            let status = r.status();
            let challenge = r.header("www-authenticate").map(str::to_string);
            let body: Value = r.into_json().unwrap_or(Value::Null);
            let user = body["headers"]["x-auth-request-user"]
                .as_str()
                .map(str::to_string);
            (status, user, challenge)
        }
        Err(e) => panic!("request failed: {e}"),
    }
}

#[test]
fn a_valid_bearer_token_is_accepted_without_a_cookie() {
    let provider = provider_block_with(&["bearer_audience account;"]);
    let mut opts =
        EnvOptions::default().location_extra("oidc_bearer on; oidc_pass_access_token on;");
    opts.http = format!("{provider}{PROTECTED_SERVER}");
    let env = Env::start_with(opts);
    let mut b = logged_in(&env, PAGE, "alice");
    let token = access_token_of(&env, &mut b);

    env.provider.reset();
    for _ in 0..10 {
        let (status, user, _) = bearer_get(&env, &token);
        assert_eq!((status, user.as_deref()), (200, Some("alice")));
    }
    // Each of the two workers may fetch the keys once; the token is then verified in-process.
    let stats = env.provider.stats();
    assert!(stats["jwks_requests"].as_u64().unwrap_or(0) <= 2, "{stats}");
    assert_eq!(stats["token_requests"]["refresh_token"], 0, "{stats}");
    assert_eq!(stats["userinfo_requests"], 0, "{stats}");

    let mut forged = token.clone();
    forged.replace_range(forged.len() - 6.., "AAAAAA");
    let (status, _, challenge) = bearer_get(&env, &forged);
    assert_eq!(status, 401);
    assert!(challenge.is_some_and(|c| c.contains("invalid_token")));
    let (status, _, _) = bearer_get(&env, "not-a-jwt");
    assert_eq!(status, 401);
    env.assert_error_log_is_clean();
}

#[test]
fn a_keycloak_access_token_for_account_is_refused_with_the_audience_mapper_fix() {
    let env = env_with(300, "30s", "oidc_bearer on; oidc_pass_access_token on;");
    let mut b = logged_in(&env, PAGE, "demo");
    let token = access_token_of(&env, &mut b);
    let (status, _, _) = bearer_get(&env, &token);
    assert_eq!(status, 401, "bearer_audience defaults to the client id");
    let log = env.error_log();
    assert!(
        log.contains("bearer token refused") && log.contains("Audience mapper"),
        "{log}"
    );
    env.assert_error_log_is_clean();
}

// ---------------------------------------------------------------------------- back-channel

#[test]
fn the_provider_ends_sessions_through_back_channel_logout() {
    let mut opts = EnvOptions::default();
    opts.provider.env.push((
        "IDP_BACKCHANNEL_LOGOUT_URI".into(),
        "http://127.0.0.1:@PORT@/oauth2/backchannel_logout".into(),
    ));
    let env = Env::start_with(opts);
    let mut b = logged_in(&env, PAGE, "demo");

    // A second browser shares the provider login (single sign-on), so its nginx session has
    // the same provider session id.
    let mut other = env.browser();
    for name in b.jar.names().into_iter().filter(|n| !is_session_cookie(n)) {
        other.jar.set(&name, &b.jar.get(&name).unwrap());
    }
    let r = other.login(&env.url(PAGE), "demo", "demo");
    assert_eq!(r.status, 200, "{}", other.transcript());

    let out = b.get(&env.url("/oauth2/sign_out"), &[]);
    let _ = b.follow(out);
    let log = env.error_log();
    assert!(
        log.contains("back-channel logout: a session ended at the provider"),
        "the provider's logout token was not accepted:\n{log}"
    );
    let r = other.get(&env.url(PAGE), &[("Accept", "application/json")]);
    assert_eq!(
        r.status, 401,
        "the other browser's session survived the logout"
    );

    // Anything but a valid logout token is refused.
    let agent = ureq::AgentBuilder::new().build();
    let url = env.url("/oauth2/backchannel_logout");
    let status = |res: Result<ureq::Response, ureq::Error>| match res {
        Ok(r) | Err(ureq::Error::Status(_, r)) => r.status(),
        Err(e) => panic!("{e}"),
    };
    assert_eq!(
        status(agent.post(&url).send_form(&[("logout_token", "a.b.c")])),
        400
    );
    assert_eq!(status(agent.post(&url).send_form(&[("other", "x")])), 400);
    assert_eq!(status(agent.get(&url).call()), 405);
    env.assert_error_log_is_clean();
}

#[test]
fn expired_and_unsigned_bearer_tokens_are_refused() {
    let provider = provider_block_with(&[
        "bearer_audience account;",
        "refresh_leeway 1s;",
        "clock_skew 1s;",
    ]);
    let mut opts = EnvOptions::default()
        .token_ttls(2, 2, 600)
        .location_extra("oidc_bearer on; oidc_pass_access_token on;");
    opts.http = format!("{provider}{PROTECTED_SERVER}");
    let env = Env::start_with(opts);
    let mut b = logged_in(&env, PAGE, "demo");
    let token = access_token_of(&env, &mut b);
    assert_eq!(bearer_get(&env, &token).0, 200);

    let payload = token.split('.').nth(1).unwrap();
    let none = format!(
        "{}.{payload}.",
        base64_url(br#"{"alg":"none","typ":"JWT"}"#)
    );
    assert_eq!(bearer_get(&env, &none).0, 401, "alg none");

    thread::sleep(Duration::from_millis(3500));
    assert_eq!(bearer_get(&env, &token).0, 401, "an expired bearer token");
    env.assert_error_log_is_clean();
}

#[test]
fn a_session_ends_when_its_refresh_token_expires() {
    let mut opts = EnvOptions::default().token_ttls(2, 2, 4);
    opts.http = format!(
        "{}{PROTECTED_SERVER}",
        provider_block_with(&["refresh_leeway 1s;"])
    );
    let env = Env::start_with(opts);
    let mut b = logged_in(&env, PAGE, "demo");
    thread::sleep(Duration::from_millis(5000));
    let r = b.get(&env.url(PAGE), &[("Accept", "application/json")]);
    assert_eq!(
        r.status,
        401,
        "a session past its refresh token's life: {}",
        r.summary()
    );
    env.assert_error_log_is_clean();
}

#[test]
fn a_group_change_at_the_provider_applies_from_the_next_refresh() {
    let env = env_with(5, "1s", "oidc_require_groups /admins;");
    let mut alice = logged_in(&env, PAGE, "alice");
    let groups = |b: &mut Browser| {
        let r = b.get(&env.url(PAGE), &[("Accept", "application/json")]);
        (r.status, r.upstream_header("x-auth-request-groups"))
    };
    assert_eq!(groups(&mut alice), (200, Some("/admins,/staff".into())));

    env.provider.set_groups("alice", &["/staff"]);
    thread::sleep(Duration::from_millis(3500));
    let (status, _) = groups(&mut alice);
    assert_eq!(
        status, 403,
        "alice left /admins at the provider but still gets in"
    );
    assert_eq!(refreshes(&env), 1);

    env.provider
        .set_groups("alice", &["/admins", "/staff", "/new"]);
    thread::sleep(Duration::from_millis(3500));
    assert_eq!(
        groups(&mut alice),
        (200, Some("/admins,/staff,/new".into()))
    );
    assert_eq!(refreshes(&env), 2);
    env.assert_error_log_is_clean();
}
