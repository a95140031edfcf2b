//! Migrating from the setup ngx-oidc replaces: nginx `auth_request` → the real oauth2-proxy →
//! the provider, configured as the seed article does (tests/migration/oauth2-proxy.conf and the
//! article's oauth2-proxy flags). The same file, pointed at the module instead
//! (tests/migration/ngx-oidc.conf), works without oauth2-proxy and the application behind it
//! sees the same `X-User` and `X-Email` for the same user.

mod common;

use common::*;

const OAUTH2_PROXY_CONF: &str = include_str!("migration/oauth2-proxy.conf");
const NGX_OIDC_CONF: &str = include_str!("migration/ngx-oidc.conf");

/// The application: `proxy_pass http://backend/;` in both files.
const BACKEND: &str = "
    upstream backend { server 127.0.0.1:@UPSTREAM@; }
";

/// In place of oauth2-proxy's flags. oauth2-proxy sends the ID token's `sub` as
/// `X-Auth-Request-User`; `user_claim sub` keeps that value for the application.
const PROVIDER: &str = r#"
    oidc_provider keycloak {
        issuer             @ISSUER@;
        client_id          test;
        client_secret      @CLIENT_SECRET@;
        cookie_secret_file @KEYS@;
        cookie_secure      off;
        user_claim         sub;
    }
"#;

const PAGE: &str = "/some/page?x=1";

/// What the application received for `user`'s first page after logging in through `env`.
fn login_as(env: &Env, user: &str) -> EchoRequest {
    let mut b = env.browser();
    let r = b.login(&env.url(PAGE), user, user);
    assert_eq!(
        r.status,
        200,
        "after login: {}\n{}",
        r.summary(),
        b.transcript()
    );
    let got = env.upstream.last().expect("the application got no request");
    // A second visit with the session: no new login, same headers.
    let again = b.get(&env.url("/another/page"), &[]);
    assert_eq!(again.status, 200, "{}", again.summary());
    assert_eq!(again.json()["path"], "/another/page");
    for h in ["x-user", "x-email"] {
        assert_eq!(
            again.upstream_header(h).as_deref(),
            got.headers.get(h).map(String::as_str),
            "{h} changed on the second request"
        );
    }
    got
}

/// The seed's setup: nginx with oauth2-proxy.conf and the real oauth2-proxy next to it.
fn seed_setup() -> (Env, OAuth2Proxy) {
    let oauth2_proxy_port = free_port();
    let http = format!("{BACKEND}{OAUTH2_PROXY_CONF}")
        .replace("@OAUTH2_PROXY_PORT@", &oauth2_proxy_port.to_string());
    let env = Env::start_with(EnvOptions {
        http,
        with_module: false,
        ..Default::default()
    });
    let proxy = OAuth2Proxy::start(
        oauth2_proxy_port,
        &env.provider,
        &env.url("/oauth2/callback"),
        &env.dir.path,
    );
    (env, proxy)
}

/// The same file pointed at the module: no oauth2-proxy.
fn migrated_setup() -> Env {
    Env::start_with(EnvOptions {
        http: format!("{BACKEND}{PROVIDER}{NGX_OIDC_CONF}"),
        ..Default::default()
    })
}

#[test]
fn the_seed_config_logs_in_through_oauth2_proxy_and_the_migrated_one_through_the_module_with_the_same_headers(
) {
    let (seed, _proxy) = seed_setup();
    let before = login_as(&seed, "demo");
    let alice_before = login_as(&seed, "alice");
    drop(seed);

    let env = migrated_setup();
    let after = login_as(&env, "demo");
    let alice_after = login_as(&env, "alice");

    for (who, before, after) in [
        ("demo", &before, &after),
        ("alice", &alice_before, &alice_after),
    ] {
        eprintln!(
            "{who}: with oauth2-proxy X-User {:?} X-Email {:?}; with the module X-User {:?} X-Email {:?}",
            before.headers.get("x-user"),
            before.headers.get("x-email"),
            after.headers.get("x-user"),
            after.headers.get("x-email"),
        );
        for h in ["x-user", "x-email"] {
            let v = before.headers.get(h);
            assert!(
                v.is_some_and(|v| !v.is_empty()),
                "oauth2-proxy passed no {h} for {who}: {:?}",
                before.headers
            );
            assert_eq!(
                after.headers.get(h),
                v,
                "{h} of {who} differs after the migration"
            );
        }
        assert_eq!(
            before.path, PAGE,
            "oauth2-proxy did not return {who} to the page"
        );
        assert_eq!(
            after.path, PAGE,
            "the module did not return {who} to the page"
        );
    }
    assert_eq!(before.headers["x-email"], "demo@example.com");
    env.assert_error_log_is_clean();
}

#[test]
fn without_a_session_both_setups_send_the_browser_to_the_provider_and_nothing_to_the_application() {
    let (seed, _proxy) = seed_setup();
    let env = migrated_setup();
    for (name, e) in [("oauth2-proxy", &seed), ("ngx-oidc", &env)] {
        let mut b = e.browser();
        let r = b.get(&e.url(PAGE), &[]);
        assert_sent_to_login(e, &r, &format!("{name}\n{}", b.transcript()));
        assert_eq!(e.upstream.count(), 0, "{name} let a request through");
    }
}

/// The lines that differ between the two files, as (removed, added) after the header comment.
fn changed_lines(a: &str, b: &str) -> (Vec<String>, Vec<String>) {
    let body = |s: &str| -> Vec<String> {
        s.lines()
            .skip_while(|l| l.starts_with('#'))
            .map(|l| l.trim().to_string())
            .collect()
    };
    let (a, b) = (body(a), body(b));
    // Longest common subsequence over lines (the files are ~70 lines).
    let mut lcs = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut removed, mut added) = (0, 0, Vec::new(), Vec::new());
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            i += 1;
            j += 1;
        } else if j < b.len() && (i == a.len() || lcs[i][j + 1] >= lcs[i + 1][j]) {
            added.push(b[j].clone());
            j += 1;
        } else {
            removed.push(a[i].clone());
            i += 1;
        }
    }
    (removed, added)
}

#[test]
fn the_migrated_config_differs_from_the_seed_only_in_the_documented_lines() {
    let (removed, added) = changed_lines(OAUTH2_PROXY_CONF, NGX_OIDC_CONF);
    assert_eq!(
        removed,
        [
            "proxy_pass       http://127.0.0.1:@OAUTH2_PROXY_PORT@;",
            "proxy_pass       http://127.0.0.1:@OAUTH2_PROXY_PORT@;",
            "auth_request_set $user   $upstream_http_x_auth_request_user;",
            "auth_request_set $email  $upstream_http_x_auth_request_email;",
        ]
    );
    assert_eq!(
        added,
        [
            "location /_oidc { internal; proxy_pass $oidc_fetch_url; }",
            "oidc_endpoints   keycloak;",
            "oidc_endpoints   keycloak;",
            "auth_request_set $user   $sent_http_x_auth_request_user;",
            "auth_request_set $email  $sent_http_x_auth_request_email;",
        ]
    );
}
