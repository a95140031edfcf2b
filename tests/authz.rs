//! End-to-end: authorization rules (groups, roles, claims, email domains), `/oauth2/auth` with
//! oauth2-proxy's `allowed_*` parameters, the Keycloak misconfiguration diagnostics, and a
//! user in 150 groups.

mod common;

use common::*;

/// Locations with one rule each; `location /` only needs a login.
fn rules_server() -> String {
    protected_server_with(&[
        (
            "/admins/",
            "oidc_require_groups admins /ops;\n            \
             location /admins/open/ {\n                oidc_require_groups off;\n                \
             proxy_pass http://127.0.0.1:@UPSTREAM@;\n            }",
        ),
        ("/roles/", "oidc_require_roles admin test:viewer;"),
        ("/editors/", "oidc_require_roles test:editor;"),
        (
            "/claims/",
            "oidc_require_claim preferred_username demo alice bob;\n            \
             oidc_require_claim email_verified true;",
        ),
        ("/domains/", "oidc_email_domains Example.COM;"),
        ("/anydomain/", "oidc_email_domains *;"),
        (
            "/big/",
            "oidc_require_groups \
             /department-0001/team-with-a-long-name-for-large-token-tests-0001;",
        ),
        ("/token/", "oidc_pass_access_token on;"),
        (
            "/api/",
            "oidc_bearer on;\n            oidc_require_roles admin;",
        ),
    ])
}

fn env_with_provider(provider_extra: &str) -> Env {
    let provider = provider_block_with(&["bearer_audience account;", provider_extra]);
    Env::start_with(EnvOptions {
        http: format!("{provider}{}", rules_server()),
        ..Default::default()
    })
}

fn rules_env() -> Env {
    env_with_provider("")
}

fn logged_in(env: &Env, user: &str) -> Browser {
    let mut b = env.browser();
    b.login_ok(&env.url("/"), user);
    b
}

/// The status each user gets for each path, as a page navigation.
fn statuses(env: &Env, users: &[&str], path: &str) -> Vec<(String, u16)> {
    users
        .iter()
        .map(|u| {
            let mut b = logged_in(env, u);
            (u.to_string(), b.get(&env.url(path), &[]).status)
        })
        .collect()
}

fn expect(pairs: &[(&str, u16)]) -> Vec<(String, u16)> {
    pairs.iter().map(|(u, s)| (u.to_string(), *s)).collect()
}

#[test]
fn groups_rules_let_members_in_with_or_without_the_leading_slash() {
    let env = rules_env();
    assert_eq!(
        statuses(&env, &["alice", "demo", "bob"], "/admins/x"),
        expect(&[("alice", 200), ("demo", 403), ("bob", 403)])
    );
    // A nested location switches the inherited rule off.
    assert_eq!(
        statuses(&env, &["demo"], "/admins/open/x"),
        expect(&[("demo", 200)])
    );
    let log = env.error_log();
    assert!(
        log.contains("access denied to \"demo\": not in any of the groups admins, /ops"),
        "{log}"
    );
    env.assert_error_log_is_clean();
}

#[test]
fn realm_roles_and_client_roles_are_read_from_keycloaks_claims() {
    let env = rules_env();
    assert_eq!(
        statuses(&env, &["alice", "demo", "bob"], "/roles/x"),
        expect(&[("alice", 200), ("demo", 200), ("bob", 403)])
    );
    assert_eq!(
        statuses(&env, &["alice", "demo"], "/editors/x"),
        expect(&[("alice", 200), ("demo", 403)])
    );
    assert!(env
        .error_log()
        .contains("access denied to \"demo\": has none of the roles test:editor"));
    env.assert_error_log_is_clean();
}

#[test]
fn every_claim_rule_must_hold() {
    let env = rules_env();
    // bob is named, but his email is not verified.
    assert_eq!(
        statuses(&env, &["alice", "demo", "bob", "biggroups"], "/claims/x"),
        expect(&[
            ("alice", 200),
            ("demo", 200),
            ("bob", 403),
            ("biggroups", 403)
        ])
    );
    let log = env.error_log();
    assert!(
        log.contains("access denied to \"bob\": claim \"email_verified\""),
        "{log}"
    );
    assert!(
        log.contains("access denied to \"biggroups\": claim \"preferred_username\""),
        "{log}"
    );
    env.assert_error_log_is_clean();
}

#[test]
fn email_domains_need_a_verified_address_by_default() {
    let env = rules_env();
    assert_eq!(
        statuses(&env, &["alice", "demo", "bob"], "/domains/x"),
        expect(&[("alice", 200), ("demo", 200), ("bob", 403)])
    );
    assert_eq!(
        statuses(&env, &["bob"], "/anydomain/x"),
        expect(&[("bob", 403)])
    );
    let log = env.error_log();
    assert!(
        log.contains("access denied to \"bob\": email \"bob@other.org\" is not verified")
            && log.contains("allow_unverified_email on"),
        "{log}"
    );
    env.assert_error_log_is_clean();
}

#[test]
fn allow_unverified_email_lets_unverified_addresses_through_the_domain_rule() {
    let env = env_with_provider("        allow_unverified_email on;\n");
    assert_eq!(
        statuses(&env, &["bob"], "/anydomain/x"),
        expect(&[("bob", 200)])
    );
    assert_eq!(
        statuses(&env, &["bob"], "/domains/x"),
        expect(&[("bob", 403)])
    );
    assert!(env
        .error_log()
        .contains("email \"bob@other.org\" is not in the domains example.com"));
    env.assert_error_log_is_clean();
}

#[test]
fn a_denied_user_gets_a_403_page_not_a_login_loop() {
    let env = rules_env();
    let mut b = env.browser();
    // Logging in straight from a page the user may not see ends on the 403, after one login.
    let r = b.login(&env.url("/admins/page"), "demo", "demo");
    assert_eq!(r.status, 403, "{}", b.transcript());
    assert!(r.location().is_none());
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("text/html")),
        "{}",
        r.summary()
    );
    assert!(
        r.body.contains("Access denied") && r.body.contains("signed in as &quot;demo&quot;"),
        "{}",
        r.body
    );
    let logins = env.provider.stats()["token_requests"]["authorization_code"].as_u64();
    // Again: still 403, no redirect, the session cookie is kept (no deletion).
    let r = b.get(&env.url("/admins/page"), &[]);
    assert_eq!(r.status, 403, "{}", b.transcript());
    assert!(r.location().is_none() && session_cookies_set(&r).is_empty());
    assert_eq!(
        env.provider.stats()["token_requests"]["authorization_code"].as_u64(),
        logins
    );
    // An API call gets JSON.
    let r = b.get(
        &env.url("/admins/page"),
        &[("Accept", "application/json"), ("Sec-Fetch-Mode", "cors")],
    );
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["error"], "forbidden", "{}", r.body);
    // The rest of the site still works.
    assert_eq!(b.get(&env.url("/"), &[]).status, 200, "{}", b.transcript());
    assert!(env
        .upstream
        .requests
        .lock()
        .unwrap()
        .iter()
        .all(|q| !q.path.starts_with("/admins/page")));
    env.assert_error_log_is_clean();
}

#[test]
fn bearer_tokens_are_held_to_the_same_rules() {
    let env = rules_env();
    let token_of = |user: &str| {
        let mut b = logged_in(&env, user);
        let r = b.get(&env.url("/token/x"), &[]);
        r.upstream_header("x-auth-request-access-token")
            .expect("access token header")
    };
    let api = |token: &str| {
        let mut b = env.browser();
        let auth = format!("Bearer {token}");
        b.get(
            &env.url("/api/x"),
            &[("Authorization", &auth), ("Accept", "application/json")],
        )
    };
    assert_eq!(api(&token_of("alice")).status, 200);
    let r = api(&token_of("demo"));
    assert_eq!(r.status, 403, "{}", r.summary());
    assert_eq!(r.json()["error"], "forbidden");
    env.assert_error_log_is_clean();
}

#[test]
fn the_auth_endpoint_honours_allowed_groups_and_emails() {
    let env = rules_env();
    let mut alice = logged_in(&env, "alice");
    let mut demo = logged_in(&env, "demo");
    let mut bob = logged_in(&env, "bob");
    let auth = |b: &mut Browser, q: &str| b.get(&env.url(&format!("/oauth2/auth{q}")), &[]).status;
    assert_eq!(auth(&mut alice, "?allowed_groups=admins,ops"), 202);
    assert_eq!(auth(&mut demo, "?allowed_groups=admins,ops"), 403);
    assert_eq!(auth(&mut demo, "?allowed_groups=%2Fdemo"), 202);
    assert_eq!(auth(&mut alice, "?allowed_emails=alice%40example.com"), 202);
    assert_eq!(auth(&mut demo, "?allowed_emails=alice%40example.com"), 403);
    assert_eq!(auth(&mut demo, "?allowed_email_domains=example.com"), 202);
    assert_eq!(
        auth(&mut bob, "?allowed_email_domains=other.org"),
        403,
        "bob's address is not verified"
    );
    assert_eq!(auth(&mut bob, ""), 202);
    let mut anon = env.browser();
    assert_eq!(auth(&mut anon, "?allowed_groups=admins"), 401);
    env.assert_error_log_is_clean();
}

#[test]
fn the_auth_endpoint_honours_the_rules_of_its_location() {
    let server = rules_server().replace(
        "location /oauth2/ { oidc_endpoints keycloak; }",
        "location /oauth2/ { oidc_endpoints keycloak; oidc_require_roles admin; }",
    );
    let env = Env::start_with(EnvOptions {
        http: format!("{PROVIDER_BLOCK}{server}"),
        ..Default::default()
    });
    let mut alice = logged_in(&env, "alice");
    let mut demo = logged_in(&env, "demo");
    assert_eq!(alice.get(&env.url("/oauth2/auth"), &[]).status, 202);
    assert_eq!(demo.get(&env.url("/oauth2/auth"), &[]).status, 403);
    env.assert_error_log_is_clean();
}

/// The `_oidc` Set-Cookie of a login, as the browser stores it.
fn session_cookie_size(env: &Env, user: &str, start: &str) -> (usize, usize, Browser) {
    let mut b = env.browser();
    let cb = b.login_callback(&env.url(start), user, user);
    let set: Vec<SetCookie> = session_cookies_set(&cb)
        .into_iter()
        .filter(|c| !c.is_deletion())
        .collect();
    assert!(!set.is_empty(), "{}", b.transcript());
    let total = set.iter().map(|c| c.name.len() + 1 + c.value.len()).sum();
    (total, set.len(), b)
}

#[test]
fn a_user_in_150_groups_passes_a_groups_rule_with_default_header_buffers() {
    let env = rules_env();
    assert!(!env.nginx.config.contains("large_client_header_buffers"));
    let (demo_size, demo_chunks, _) = session_cookie_size(&env, "demo", "/");
    let (big_size, big_chunks, mut b) = session_cookie_size(&env, "biggroups", "/big/page");
    eprintln!(
        "session cookie: demo {demo_size} bytes in {demo_chunks} cookie(s), \
         biggroups (150 groups) {big_size} bytes in {big_chunks} cookie(s)"
    );
    assert!(
        big_size < 8000,
        "the cookie header must fit one 8 KB header buffer"
    );
    let r = b.get(&env.url("/big/page"), &[]);
    assert_eq!(r.status, 200, "{}", b.transcript());
    assert_eq!(
        r.upstream_header("x-auth-request-user").as_deref(),
        Some("biggroups")
    );
    assert_eq!(b.get(&env.url("/admins/x"), &[]).status, 403);
    env.assert_error_log_is_clean();
}

// ---------------------------------------------------------------- Keycloak diagnostics

#[test]
fn an_issuer_with_keycloaks_old_auth_prefix_logs_the_issuer_to_use() {
    let provider =
        PROVIDER_BLOCK.replace("@ISSUER@", "http://127.0.0.1:@IDP_PORT@/auth/realms/test");
    let env = Env::start_with(EnvOptions {
        http: format!("{provider}{PROTECTED_SERVER}"),
        ..Default::default()
    });
    let mut b = env.browser();
    let r = b.get(&env.url("/page"), &[]);
    assert!(r.status >= 500, "{}", r.summary());
    let want = format!(
        "discovery from http://127.0.0.1:{p}/auth/realms/test/.well-known/openid-configuration \
         failed: HTTP 404 (no discovery document at this URL: check `issuer`; Keycloak 17+ \
         serves realms without the /auth prefix: try \"http://127.0.0.1:{p}/realms/test\"",
        p = env.provider.port
    );
    let log = env.error_log();
    assert!(log.contains(&want), "want: {want}\nlog:\n{log}");
    env.assert_error_log_is_clean();
}

#[test]
fn an_issuer_that_differs_from_discovery_logs_the_mismatch_and_the_frontend_url_fix() {
    // A provider behind a proxy whose discovery document names its public URL (Keycloak's
    // hostname / frontend URL setting), served here by nginx itself.
    let doc = r#"{"issuer":"https://sso.example.com/realms/test","authorization_endpoint":"https://sso.example.com/a","token_endpoint":"https://sso.example.com/t","jwks_uri":"https://sso.example.com/j"}"#;
    let provider = PROVIDER_BLOCK.replace("@ISSUER@", "http://127.0.0.1:@PORT@/kc/realms/test");
    let server = PROTECTED_SERVER.replace(
        "location /public/",
        &format!(
            "location = /kc/realms/test/.well-known/openid-configuration {{ oidc_auth off; \
             default_type application/json; return 200 '{doc}'; }}\n        location /public/"
        ),
    );
    let env = Env::start_with(EnvOptions {
        http: format!("{provider}{server}"),
        ..Default::default()
    });
    let mut b = env.browser();
    let r = b.get(&env.url("/page"), &[]);
    assert!(r.status >= 500, "{}", r.summary());
    let log = env.error_log();
    assert!(
        log.contains(
            "issuer mismatch: discovery says \"https://sso.example.com/realms/test\", the config \
             says \"http://127.0.0.1:"
        ) && log.contains("Keycloak 17+ dropped the /auth prefix")
            && log.contains("hostname / frontend URL"),
        "{log}"
    );
    env.assert_error_log_is_clean();
}

#[test]
fn a_wrong_client_secret_logs_check_client_secret() {
    let provider = PROVIDER_BLOCK.replace("@CLIENT_SECRET@", "not-the-secret");
    let env = Env::start_with(EnvOptions {
        http: format!("{provider}{PROTECTED_SERVER}"),
        ..Default::default()
    });
    let mut b = env.browser();
    let callback = b
        .authorize(&env.url("/page"), "demo", "demo")
        .unwrap_or_else(|r| panic!("{}\n{}", r.summary(), b.transcript()));
    let r = b.get(&callback, &[]);
    assert_eq!(r.status, 401, "{}", r.summary());
    assert!(session_cookies_set(&r).iter().all(|c| c.is_deletion()));
    let log = env.error_log();
    assert!(
        log.contains("code exchange failed")
            && log.contains("invalid_client")
            && log.contains("check client_id and client_secret"),
        "{log}"
    );
    assert!(!log.contains("not-the-secret"), "the secret was logged");
    env.assert_error_log_is_clean();
}

// (A bearer token with `aud: account` is provoked in tests/lifecycle.rs; clock skew is
// covered by the unit tests of src/oidc/id_token.rs: the test provider cannot issue tokens
// from the future.)

#[test]
fn rule_mistakes_fail_nginx_t_naming_the_directive() {
    let key = format!("{}\n", new_cookie_key());
    let with_extra = |extra: &str| {
        format!("{PROVIDER_BLOCK}{PROTECTED_SERVER}").replace("@LOCATION_EXTRA@", extra)
    };
    let good = nginx_t(
        &with_extra(
            "oidc_require_groups admins; oidc_require_roles admin test:viewer; \
             oidc_require_claim department sales ops; oidc_email_domains example.com;",
        ),
        &offline_config_vars(),
        &[("keys", &key)],
        true,
    );
    assert!(good.ok, "{}\n{}", good.stderr, good.config);
    let cases = [
        (
            with_extra("oidc_require_groups \"\";"),
            "oidc_require_groups",
        ),
        (with_extra("oidc_require_groups;"), "oidc_require_groups"),
        (
            with_extra("oidc_require_groups a; oidc_require_groups b;"),
            "oidc_require_groups",
        ),
        (
            with_extra("oidc_require_roles test:;"),
            "oidc_require_roles",
        ),
        (
            with_extra("oidc_require_claim department;"),
            "oidc_require_claim",
        ),
        (
            with_extra("oidc_email_domains @example.com;"),
            "oidc_email_domains",
        ),
        (
            format!("{PROVIDER_BLOCK}{PROTECTED_SERVER}")
                .replace("cookie_secure      off;", "allow_unverified_email yes;"),
            "allow_unverified_email",
        ),
        (
            format!("{PROVIDER_BLOCK}{PROTECTED_SERVER}").replace(
                "@ISSUER@",
                "http://127.0.0.1:9/realms/test/.well-known/openid-configuration",
            ),
            "issuer",
        ),
    ];
    let mut failures = Vec::new();
    for (config, directive) in &cases {
        let t = nginx_t(config, &offline_config_vars(), &[("keys", &key)], true);
        if t.ok {
            failures.push(format!("{directive}: nginx -t passed"));
        } else if !t.stderr.contains(directive) {
            failures.push(format!("{directive}: {}", t.stderr.trim()));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn an_unregistered_redirect_uri_is_named_in_the_log() {
    let mut opts = EnvOptions::default();
    opts.provider.redirect_uris = vec!["https://elsewhere.example/oauth2/callback".into()];
    let env = Env::start_with(opts);
    let mut b = env.browser();
    let r = b.get(&env.url("/page"), &[]);
    let r = b.follow(r);
    assert!(
        r.status >= 400 && r.body.contains("redirect_uri"),
        "the provider refuses the login: {}\n{}",
        r.summary(),
        &r.body[..r.body.len().min(400)]
    );
    let want = format!(
        "redirecting to login with redirect_uri http://127.0.0.1:{}/oauth2/callback (if the \
         provider answers \"Invalid parameter: redirect_uri\"",
        env.port
    );
    let log = env.error_log();
    assert!(log.contains(&want), "want: {want}\nlog:\n{log}");
    env.assert_error_log_is_clean();
}
