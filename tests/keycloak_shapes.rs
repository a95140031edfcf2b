//! End-to-end: what a read of Keycloak's source showed the stand-in provider got wrong, each as
//! a regression test (issue 12). Roles only in the access token, the realm's other signing
//! algorithms, `iss` in the authorization response, tokens of other kinds presented as bearer
//! tokens, and a client-role rule naming another client.

mod common;

use std::time::{Duration, Instant};

use common::*;

/// The config contract's server plus a location for each thing a test here exercises.
fn server() -> String {
    protected_server_with(&[
        ("/realm-admins/", "oidc_require_roles admin;"),
        ("/editors/", "oidc_require_roles test:editor;"),
        ("/token/", "oidc_pass_access_token on;"),
        ("/api/", "oidc_bearer on;"),
    ])
}

/// The stand-in with `idp_env` (IDP_* settings), the provider block with `provider_extra`.
fn env_with(idp_env: &[(&str, &str)], provider_extra: &str, access_ttl: u32) -> Env {
    let provider = provider_block_with(&["refresh_leeway 1;", provider_extra]);
    let mut opts = EnvOptions::default().token_ttls(access_ttl, access_ttl, 600);
    opts.http = format!("{provider}{}", server());
    opts.provider.env = idp_env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Env::start_with(opts)
}

fn status_as(env: &Env, user: &str, paths: &[&str]) -> Vec<u16> {
    let mut b = logged_in(env, "/", user);
    paths
        .iter()
        .map(|p| b.get(&env.url(p), &[]).status)
        .collect()
}

fn jwt_part(jwt: &str, i: usize) -> serde_json::Value {
    serde_json::from_slice(&base64_decode(jwt.split('.').nth(i).expect("a JWT"))).unwrap()
}

/// The access token the module got for `user` at login (through `oidc_pass_access_token`).
fn access_token_of(env: &Env, user: &str) -> String {
    let mut b = logged_in(env, "/", user);
    b.get(&env.url("/token/x"), &[])
        .upstream_header("x-auth-request-access-token")
        .expect("the access token reaches the upstream")
}

fn api(env: &Env, token: &str) -> Resp {
    let auth = format!("Bearer {token}");
    env.browser().get(
        &env.url("/api/x"),
        &[("Authorization", &auth), ("Accept", "application/json")],
    )
}

/// A token of another kind for `user`, signed by the stand-in with its realm key.
fn minted(env: &Env, kind: &str, user: &str) -> String {
    let url = env
        .provider
        .url(&format!("/_test/mint?kind={kind}&user={user}"));
    ureq::post(&url)
        .call()
        .expect("mint a token")
        .into_string()
        .unwrap()
}

#[test]
fn role_rules_work_when_the_provider_puts_roles_in_the_access_token_only() {
    let env = env_with(&[], "", 300);
    // Like Keycloak's default "roles" scope: the ID token has no roles, the access token has.
    let at = access_token_of(&env, "alice");
    assert_eq!(jwt_part(&at, 1)["realm_access"]["roles"][1], "admin");
    let paths = ["/realm-admins/x", "/editors/x"];
    assert_eq!(status_as(&env, "alice", &paths), [200, 200]);
    assert_eq!(status_as(&env, "demo", &paths), [403, 403]);
    let log = env.error_log();
    assert!(
        log.contains("access denied to \"demo\": has none of the roles test:editor"),
        "{log}"
    );
    env.assert_error_log_is_clean();
}

#[test]
fn role_rules_also_work_when_an_administrator_maps_roles_into_the_id_token() {
    let env = env_with(&[("IDP_ROLES_IN_ID_TOKEN", "1")], "", 300);
    let paths = ["/realm-admins/x", "/editors/x"];
    assert_eq!(status_as(&env, "alice", &paths), [200, 200]);
    assert_eq!(status_as(&env, "demo", &paths), [403, 403]);
    env.assert_error_log_is_clean();
}

#[test]
fn a_role_granted_at_the_provider_applies_after_the_next_refresh() {
    let env = env_with(&[], "", 3);
    let mut b = logged_in(&env, "/", "bob");
    assert_eq!(b.get(&env.url("/realm-admins/x"), &[]).status, 403);
    let set = env
        .provider
        .url("/_test/set-roles?user=bob&realm=user,admin&client=editor");
    ureq::post(&set).call().expect("set bob's roles");
    // The access token lives 3 s; the refresh after it brings the new roles.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = 0;
    while Instant::now() < deadline {
        last = b.get(&env.url("/realm-admins/x"), &[]).status;
        if last == 200 {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(last, 200, "{}", b.transcript());
    assert_eq!(b.get(&env.url("/editors/x"), &[]).status, 200);
    // And taken away again.
    let unset = env.provider.url("/_test/set-roles?user=bob&realm=user");
    ureq::post(&unset).call().expect("set bob's roles");
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        last = b.get(&env.url("/editors/x"), &[]).status;
        if last == 403 {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(last, 403, "{}", b.transcript());
    env.assert_error_log_is_clean();
}

#[test]
fn id_logout_and_refresh_tokens_are_refused_as_bearer_tokens_with_the_reason_logged() {
    // The default bearer_audience is the client id; with the Audience mapper the access token
    // carries it, and so do the ID, logout and refresh tokens of this client.
    let env = env_with(&[("IDP_AUDIENCE_MAPPER", "1")], "", 300);
    let at = access_token_of(&env, "alice");
    let r = api(&env, &at);
    assert_eq!(r.status, 200, "a real access token passes: {}", r.summary());
    // The real ID token: the sign-out redirect shows it to the browser (id_token_hint).
    let mut b = logged_in(&env, "/", "alice");
    let out = b.get(&env.url("/oauth2/sign_out"), &[]);
    let id_token = out
        .location()
        .and_then(|l| query_param(l, "id_token_hint"))
        .unwrap_or_else(|| {
            panic!(
                "the sign-out redirect has an id_token_hint: {}",
                out.summary()
            )
        });
    assert_eq!(jwt_part(&id_token, 1)["aud"], "test");
    let r = api(&env, &id_token);
    assert_eq!(
        r.status,
        401,
        "the ID token from the sign-out URL: {}",
        r.summary()
    );
    assert!(env.error_log().lines().any(|l| l.contains("[warn]")
        && l.contains("bearer token refused: the token is not an access token: it has a nonce")));
    for (kind, why) in [
        (
            "id",
            "it has a nonce, at_hash or c_hash claim (an ID token)",
        ),
        (
            "logout",
            "its header typ is logout+jwt (a back-channel logout token)",
        ),
        (
            "refresh",
            "its typ is \"Refresh\" or \"Offline\" (a refresh token)",
        ),
    ] {
        let token = minted(&env, kind, "alice");
        assert_eq!(jwt_part(&token, 1)["aud"], "test");
        let r = api(&env, &token);
        assert_eq!(r.status, 401, "a {kind} token: {}", r.summary());
        assert_eq!(r.json()["error"], "invalid_token");
        let log = env.error_log();
        let want = format!("bearer token refused: the token is not an access token: {why}");
        let hit = log.lines().find(|l| l.contains(&want));
        assert!(
            hit.is_some_and(|l| l.contains("[warn]")),
            "want a [warn] line with: {want}\n{log}"
        );
    }
    env.assert_error_log_is_clean();
}

#[test]
fn a_realm_signing_with_es512_logs_in_and_its_access_tokens_verify() {
    a_realm_signing_with("ES512", "ES512");
}

#[test]
fn a_realm_signing_with_ed448_logs_in_and_its_access_tokens_verify() {
    a_realm_signing_with("Ed448", "EdDSA");
}

fn a_realm_signing_with(idp_alg: &str, jws_alg: &str) {
    let env = env_with(
        &[("IDP_SIGNING_ALG", idp_alg), ("IDP_AUDIENCE_MAPPER", "1")],
        "",
        300,
    );
    let at = access_token_of(&env, "alice");
    assert_eq!(jwt_part(&at, 0)["alg"], jws_alg);
    // The roles come from the access token, verified with the same algorithm.
    assert_eq!(
        status_as(&env, "alice", &["/realm-admins/x", "/editors/x"]),
        [200, 200]
    );
    assert_eq!(status_as(&env, "demo", &["/realm-admins/x"]), [403]);
    let r = api(&env, &at);
    assert_eq!(r.status, 200, "{}", r.summary());
    assert_eq!(
        r.upstream_header("x-auth-request-user").as_deref(),
        Some("alice")
    );
    let log = env.error_log();
    assert!(!log.contains("not taken from the access token"), "{log}");
    env.assert_error_log_is_clean();
}

/// The callback URL of a login as `user`, not yet requested.
fn callback_url(env: &Env, b: &mut Browser, user: &str) -> String {
    b.authorize(&env.url("/"), user, user)
        .unwrap_or_else(|r| panic!("stopped at {}\n{}", r.summary(), b.transcript()))
}

#[test]
fn an_authorization_response_from_the_configured_issuer_logs_in() {
    let env = env_with(&[], "", 300);
    let mut b = env.browser();
    let cb = callback_url(&env, &mut b, "demo");
    assert_eq!(
        query_param(&cb, "iss").as_deref(),
        Some(env.provider.issuer.as_str()),
        "the provider sends iss (RFC 9207), like Keycloak"
    );
    let r = b.get(&cb, &[]);
    let r = b.follow(r);
    assert_eq!(r.status, 200, "{}", b.transcript());
    env.assert_error_log_is_clean();
}

#[test]
fn an_authorization_response_naming_another_issuer_or_none_is_refused() {
    let env = env_with(&[], "", 300);
    let mut b = env.browser();
    let cb = callback_url(&env, &mut b, "demo");
    let forged = with_query_param(&cb, "iss", "http://127.0.0.1:9/realms/evil");
    let r = b.get(&forged, &[]);
    assert_eq!(r.status, 400, "{}", r.summary());
    assert!(b.jar.names().iter().all(|n| !is_session_cookie(n)));
    let log = env.error_log();
    assert!(
        log.contains(
            "login refused: the authorization response names issuer \
             \"http://127.0.0.1:9/realms/evil\", not"
        ),
        "{log}"
    );
    // Without iss: the stand-in's discovery promises it (authorization_response_iss_parameter_
    // supported), so its absence is a forged or rewritten response too.
    let mut b = env.browser();
    let cb = callback_url(&env, &mut b, "demo");
    let mut url = url::Url::parse(&cb).unwrap();
    let kept: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(k, _)| k != "iss")
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    url.query_pairs_mut().clear().extend_pairs(kept);
    let r = b.get(url.as_str(), &[]);
    assert_eq!(r.status, 400, "{}", r.summary());
    assert!(env
        .error_log()
        .contains("login refused: the authorization response has no \"iss\" parameter"));
    env.assert_error_log_is_clean();
}

#[test]
fn a_client_role_rule_naming_another_client_warns_at_nginx_t() {
    let key = format!("{}\n", new_cookie_key());
    let check = |rule: &str| {
        let http = format!("{PROVIDER_BLOCK}{PROTECTED_SERVER}").replace("@LOCATION_EXTRA@", rule);
        nginx_t(&http, &offline_config_vars(), &[("keys", &key)], true)
    };
    let t = check("oidc_require_roles admin client:editor;");
    assert!(t.ok, "a warning, not an error: {}", t.stderr);
    let warn = t
        .stderr
        .lines()
        .find(|l| l.contains("[warn]") && l.contains("oidc_require_roles"))
        .unwrap_or_else(|| panic!("no [warn] naming the directive:\n{}", t.stderr));
    assert!(
        warn.contains("\"client:editor\" is a role of client \"client\"")
            && warn.contains("client_id \"test\"")
            && warn.contains("\"test:editor\""),
        "{warn}"
    );
    let t = check("oidc_require_roles admin test:editor;");
    assert!(t.ok && !t.stderr.contains("[warn]"), "{}", t.stderr);
}
