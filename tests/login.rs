//! End-to-end: a real nginx with the module, the test OpenID Provider, an echo upstream and a
//! browser-like client walking the authorization code flow.

mod common;

use std::thread;
use std::time::Duration;

use common::*;

const PAGE: &str = "/some/page?x=1";

/// A redirect that stays on the site: a relative path starting with exactly one `/`, or an
/// absolute URL of the site itself (nginx's `absolute_redirect` completes relative ones).
fn assert_on_site_redirect(env: &Env, b: &Browser, r: &Resp) -> String {
    assert!(
        matches!(r.status, 301 | 302 | 303 | 307 | 308),
        "expected a redirect, got {}\n{}",
        r.summary(),
        b.transcript()
    );
    let loc = r.location().unwrap();
    let site = env.url("");
    if loc.starts_with('/') {
        assert!(
            !loc.starts_with("//") && !loc.starts_with("/\\"),
            "the redirect after login leaves the site: Location: {loc}\n{}",
            b.transcript()
        );
    } else {
        assert!(
            loc.starts_with(&format!("{site}/")),
            "the redirect after login leaves the site: Location: {loc}\n{}",
            b.transcript()
        );
    }
    assert!(!loc.contains(['\r', '\n', '\t']), "Location: {loc:?}");
    let resolved = r.location_url().unwrap();
    assert_eq!(origin(&resolved), site, "Location: {loc}");
    match resolved.query() {
        Some(q) => format!("{}?{q}", resolved.path()),
        None => resolved.path().to_string(),
    }
}

// ---------------------------------------------------------------------------- the login flow

#[test]
fn an_unauthenticated_browser_is_sent_to_the_provider_with_pkce() {
    let env = Env::start();
    let mut b = env.browser();
    let r = b.get(&env.url(PAGE), &[]);
    assert_sent_to_login(&env, &r, &b.transcript());
    let loc = r.location().unwrap();
    let p = |n: &str| query_param(loc, n);
    assert_eq!(p("response_type").as_deref(), Some("code"));
    assert_eq!(p("client_id").as_deref(), Some("test"));
    assert_eq!(p("redirect_uri"), Some(env.url("/oauth2/callback")));
    let scope = p("scope").unwrap_or_default();
    for s in ["openid", "email", "profile"] {
        assert!(
            scope.split(' ').any(|x| x == s),
            "scope {scope:?} lacks {s}"
        );
    }
    assert!(
        p("state").is_some_and(|s| s.len() >= 16),
        "state: {:?}",
        p("state")
    );
    assert!(
        p("nonce").is_some_and(|s| s.len() >= 16),
        "nonce: {:?}",
        p("nonce")
    );
    assert_eq!(p("code_challenge_method").as_deref(), Some("S256"));
    assert_eq!(p("code_challenge").map(|c| c.len()), Some(43));
    let cookies = r.set_cookies();
    assert!(!cookies.is_empty(), "no state cookie: {}", r.summary());
    assert!(session_cookies_set(&r).is_empty(), "a session before login");
    for c in &cookies {
        assert!(c.has("httponly"), "state cookie not HttpOnly: {}", c.raw);
        assert!(
            c.attr("samesite")
                .is_some_and(|v| v.eq_ignore_ascii_case("lax")),
            "state cookie not SameSite=Lax: {}",
            c.raw
        );
        assert!(!c.has("secure"), "cookie_secure off, but: {}", c.raw);
    }
    assert_eq!(
        env.upstream.count(),
        0,
        "the upstream saw an anonymous request"
    );

    // The state is fresh for every login attempt.
    let r2 = env.browser().get(&env.url(PAGE), &[]);
    assert_ne!(query_param(r2.location().unwrap(), "state"), p("state"));
}

#[test]
fn logging_in_returns_the_browser_to_the_page_it_asked_for() {
    let env = Env::start();
    let mut b = env.browser();
    let cb = b.login_callback(&env.url(PAGE), "demo", "demo");
    let path = assert_on_site_redirect(&env, &b, &cb);
    assert_eq!(path, PAGE);

    let session = session_cookies_set(&cb);
    assert!(!session.is_empty(), "no session cookie\n{}", b.transcript());
    let main = cb.set_cookie("_oidc").expect("a _oidc cookie");
    assert!(main.value.starts_with("v1."), "{}", main.raw);
    for c in &session {
        assert!(c.has("httponly"), "{}", c.raw);
        assert!(
            c.attr("samesite")
                .is_some_and(|v| v.eq_ignore_ascii_case("lax")),
            "{}",
            c.raw
        );
        assert_eq!(c.attr("path"), Some("/"), "{}", c.raw);
        assert!(!c.has("secure"), "cookie_secure off, but: {}", c.raw);
        assert!(
            c.name.len() + 1 + c.value.len() < 4096,
            "{} is too big",
            c.name
        );
    }

    let page = b.follow(cb);
    assert_eq!(page.status, 200, "{}", b.transcript());
    assert_eq!(page.json()["path"], PAGE);
    assert_eq!(
        page.upstream_header("x-auth-request-user").as_deref(),
        Some("demo")
    );
    assert_eq!(
        page.upstream_header("x-auth-request-email").as_deref(),
        Some("demo@example.com")
    );
    assert_eq!(
        page.upstream_header("x-auth-request-preferred-username")
            .as_deref(),
        Some("demo")
    );
    assert_eq!(
        page.upstream_header("x-auth-request-groups").as_deref(),
        Some("/demo")
    );
    env.assert_error_log_is_clean();
}

#[test]
fn login_works_although_the_access_token_audience_is_account() {
    // The test provider issues Keycloak-19-style access tokens (aud: account, not the client):
    // the module must check the audience of the ID token only.
    let env = Env::start();
    let b = logged_in(&env, PAGE, "alice");
    drop(b);
    env.assert_error_log_is_clean();
}

#[test]
fn a_logged_in_browser_is_served_without_calling_the_provider() {
    let env = Env::start();
    let mut b = logged_in(&env, PAGE, "demo");
    let before = env.provider.stats();
    for i in 0..20 {
        let r = b.get(&env.url(&format!("/page/{i}")), &[]);
        assert_eq!(r.status, 200, "request {i}: {}", r.summary());
        assert_eq!(
            r.upstream_header("x-auth-request-user").as_deref(),
            Some("demo")
        );
    }
    assert_eq!(
        env.provider.stats(),
        before,
        "the provider was called for a logged-in session"
    );
    env.assert_error_log_is_clean();
}

#[test]
fn the_upstream_never_sees_the_session_cookie() {
    let env = Env::start();
    let mut b = logged_in(&env, PAGE, "demo");
    let r = b.get(&env.url("/x"), &[]);
    let cookie = r.upstream_header("cookie").unwrap_or_default();
    assert!(
        !cookie
            .split(';')
            .any(|c| is_session_cookie(c.trim().split('=').next().unwrap_or(""))),
        "the upstream received the session cookie: {cookie}"
    );
    env.assert_error_log_is_clean();
}

#[test]
fn a_browser_sending_only_our_cookie_and_many_headers_is_served() {
    // Real browsers send headers nginx does not know (sec-ch-ua…) and, on a host of its own,
    // only the session cookie: the Cookie header then disappears for the upstream.
    let env = Env::start();
    let b = logged_in(&env, PAGE, "demo");
    let mut only_ours = env.browser();
    only_ours.jar.set("_oidc", &b.jar.get("_oidc").unwrap());
    let headers = [
        ("sec-ch-ua", "\"Chromium\";v=\"156\""),
        ("sec-ch-ua-mobile", "?0"),
        ("sec-ch-ua-platform", "\"Linux\""),
        ("Upgrade-Insecure-Requests", "1"),
        ("Sec-Fetch-Site", "none"),
        ("Sec-Fetch-Mode", "navigate"),
        ("Sec-Fetch-User", "?1"),
        ("Sec-Fetch-Dest", "document"),
        ("Accept-Language", "en-US,en;q=0.9"),
        ("Accept-Encoding", "gzip, deflate"),
        ("X-Forwarded-For", "10.0.0.1"),
        ("X-Custom-1", "a"),
        ("X-Custom-2", "b"),
        ("X-Custom-3", "c"),
        ("X-Custom-4", "d"),
        ("X-Custom-5", "e"),
        ("X-Custom-6", "f"),
    ];
    for _ in 0..5 {
        let r = only_ours.get(&env.url("/x"), &headers);
        assert_eq!(r.status, 200, "{}", r.summary());
        assert_eq!(r.upstream_header("cookie"), None);
        assert_eq!(
            r.upstream_header("x-auth-request-user").as_deref(),
            Some("demo")
        );
        assert_eq!(r.upstream_header("x-custom-6").as_deref(), Some("f"));
        assert_eq!(
            r.upstream_header("x-forwarded-for").as_deref(),
            Some("10.0.0.1")
        );
    }
    env.assert_error_log_is_clean();
}

#[test]
fn sign_in_with_rd_returns_to_the_destination() {
    let env = Env::start();
    let mut b = env.browser();
    let cb = b.login_callback(&env.url("/oauth2/sign_in?rd=/dest"), "demo", "demo");
    assert_eq!(assert_on_site_redirect(&env, &b, &cb), "/dest");
    let r = b.follow(cb);
    assert_eq!(r.status, 200, "{}", b.transcript());
    assert_eq!(r.json()["path"], "/dest");
    assert_eq!(
        r.upstream_header("x-auth-request-user").as_deref(),
        Some("demo")
    );
    env.assert_error_log_is_clean();
}

#[test]
fn two_tabs_can_log_in_at_the_same_time() {
    let env = Env::start();
    let mut b = env.browser();
    let first = b
        .authorize(&env.url("/tab/one"), "demo", "demo")
        .unwrap_or_else(|r| panic!("{}", r.summary()));
    let second = b
        .authorize(&env.url("/tab/two"), "demo", "demo")
        .unwrap_or_else(|r| panic!("{}", r.summary()));
    let r2 = b.get(&second, &[]);
    assert_eq!(assert_on_site_redirect(&env, &b, &r2), "/tab/two");
    let r1 = b.get(&first, &[]);
    assert_eq!(assert_on_site_redirect(&env, &b, &r1), "/tab/one");
    env.assert_error_log_is_clean();
}

#[test]
fn users_coming_back_from_the_provider_at_once_to_a_freshly_started_worker_all_log_in() {
    let env = Env::start();
    let mut users: Vec<(Browser, String, String)> = (1..=3)
        .map(|i| {
            let mut b = env.browser();
            let page = format!("/user/{i}");
            let callback = b
                .authorize(&env.url(&page), "demo", "demo")
                .unwrap_or_else(|r| panic!("{}", r.summary()));
            (b, page, callback)
        })
        .collect();
    // New workers know nothing of the provider yet, and the provider answers the discovery
    // document only once all three callbacks have asked for it: at least two of them (two
    // workers) wait for it in one worker at the same time.
    env.nginx.reload_and_drain();
    env.provider.hold("discovery", 3);
    let results: Vec<_> = users
        .drain(..)
        .map(|(mut b, page, callback)| {
            thread::spawn(move || {
                let r = b.get(&callback, &[]);
                (b, page, r)
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap())
        .collect();
    for (b, page, r) in &results {
        assert_eq!(assert_on_site_redirect(&env, b, r), *page);
    }
    assert_eq!(
        env.provider.stats()["token_requests"]["authorization_code"],
        3
    );
    env.assert_error_log_is_clean();
}

/// Starts a login from each of `pages` in one browser before any comes back (a browser
/// restoring its tabs), then completes them oldest first; each lands on its own page.
fn tabs_opened_together_all_log_in(env: &Env, pages: &[String]) {
    let mut b = env.browser();
    let mut authorizations = Vec::new();
    for page in pages {
        let r = b.get(&env.url(page), &[]);
        assert_sent_to_login(env, &r, &b.transcript());
        assert!(
            r.set_cookies().iter().all(|c| !c.is_deletion()),
            "a login start deleted another tab's login: {:?}",
            r.all("set-cookie")
        );
        authorizations.push(r.location_url().unwrap().to_string());
    }
    let states = b.jar.names_where(|n| n.starts_with("_oidc_st_"));
    assert_eq!(states.len(), pages.len(), "pending logins: {states:?}");
    let header = b
        .jar
        .header_for(&url::Url::parse(&env.url("/")).unwrap())
        .unwrap();
    assert!(
        header.len() < 4096,
        "Cookie header of {} bytes",
        header.len()
    );
    for (page, auth) in pages.iter().zip(&authorizations) {
        let callback = b
            .authorize_for(&env.url(""), auth, "demo", "demo")
            .unwrap_or_else(|r| panic!("{}\n{}", r.summary(), b.transcript()));
        let cb = b.get(&callback, &[]);
        assert_eq!(assert_on_site_redirect(env, &b, &cb), *page);
        let r = b.follow(cb);
        assert_eq!(r.status, 200, "{}\n{}", r.summary(), b.transcript());
        assert_eq!(r.json()["path"], page.as_str());
    }
    assert!(b.jar.names_where(|n| n.starts_with("_oidc_st_")).is_empty());
}

#[test]
fn six_tabs_opened_together_all_log_in_and_land_on_their_own_pages() {
    let env = Env::start();
    let pages: Vec<String> = (1..=6).map(|i| format!("/tab/{i}?restored=1")).collect();
    tabs_opened_together_all_log_in(&env, &pages);
    env.assert_error_log_is_clean();
}

#[test]
fn ten_tabs_with_short_return_urls_all_log_in() {
    let env = Env::start();
    let pages: Vec<String> = (1..=10).map(|i| format!("/tab/{i}")).collect();
    tabs_opened_together_all_log_in(&env, &pages);
    env.assert_error_log_is_clean();
}

#[test]
fn more_tabs_than_fit_drop_the_oldest_logins_first() {
    let env = Env::start();
    let mut b = env.browser();
    let mut authorizations = Vec::new();
    for i in 1..=14 {
        let r = b.get(&env.url(&format!("/tab/{i}")), &[]);
        assert_sent_to_login(&env, &r, &b.transcript());
        authorizations.push(r.location_url().unwrap().to_string());
    }
    let header = b
        .jar
        .header_for(&url::Url::parse(&env.url("/")).unwrap())
        .unwrap();
    assert!(
        header.len() <= 3072,
        "Cookie header of {} bytes",
        header.len()
    );
    let kept = b.jar.names_where(|n| n.starts_with("_oidc_st_")).len();
    assert!((9..14).contains(&kept), "{kept} pending logins kept");
    // The newest tab logs in; the oldest one's login is gone and says to start again.
    let last = b
        .authorize_for(&env.url(""), &authorizations[13], "demo", "demo")
        .unwrap();
    let cb = b.get(&last, &[]);
    let r = b.follow(cb);
    assert_eq!(r.json()["path"], "/tab/14");
    let first = b
        .authorize_for(&env.url(""), &authorizations[0], "demo", "demo")
        .unwrap();
    let r = b.get(&first, &[]);
    assert_eq!(r.status, 400, "{}", r.summary());
    assert!(r.body.contains("start again"), "{}", r.body);
}

#[test]
fn a_browser_that_drops_the_session_cookie_gets_the_loop_page_after_three_rounds() {
    let env = Env::start();
    let mut b = env.browser();
    for round in 1..=3 {
        let cb = b.login_callback(&env.url(PAGE), "demo", "demo");
        assert_eq!(
            assert_on_site_redirect(&env, &b, &cb),
            PAGE,
            "round {round}"
        );
        // The browser refuses the session cookie (too big for it, or a proxy drops it).
        for name in b.jar.names_where(is_session_cookie) {
            b.jar.remove(&name);
        }
    }
    let r = b.get(&env.url(PAGE), &[]);
    assert_eq!(r.status, 400, "{}\n{}", r.summary(), b.transcript());
    assert!(r.body.contains("Login keeps starting over"), "{}", r.body);
    assert!(env
        .error_log()
        .contains("3 logins in a row came back to /some/page within 20s each"));
    // The page says what to do; the next attempt starts afresh.
    let r = b.get(&env.url(PAGE), &[]);
    assert_sent_to_login(&env, &r, &b.transcript());
}

#[test]
fn a_foreign_guard_cookie_sent_first_does_not_hide_a_login_loop() {
    // Another application's `_oidc_n` at Path=/app comes before ours in every request under
    // /app (issue 13): the loop guard still counts the rounds in its own cookie.
    let env = Env::start();
    let mut b = env.browser();
    let app = url::Url::parse(&env.url("/app/")).unwrap();
    b.jar.store(&app, "_oidc_n=the-other-apps-value; Path=/app");
    for round in 1..=3 {
        let cb = b.login_callback(&env.url("/app/page"), "demo", "demo");
        assert_eq!(
            assert_on_site_redirect(&env, &b, &cb),
            "/app/page",
            "round {round}"
        );
        for name in b.jar.names_where(is_session_cookie) {
            b.jar.remove(&name);
        }
    }
    let r = b.get(&env.url("/app/page"), &[]);
    assert_eq!(r.status, 400, "{}\n{}", r.summary(), b.transcript());
    assert!(r.body.contains("Login keeps starting over"), "{}", r.body);
    let header = b.jar.header_for(&app.join("page").unwrap());
    assert!(
        header.is_some_and(|h| h.starts_with("_oidc_n=the-other-apps-value; ")),
        "the other application's cookie is left alone: {}",
        b.transcript()
    );
}

// ---------------------------------------------------------------------------- identity headers

#[test]
fn client_sent_identity_headers_never_reach_the_upstream() {
    let env = Env::start();
    let forged: &[(&str, &str)] = &[
        ("X-Auth-Request-User", "admin"),
        ("X-Auth-Request-Email", "admin@evil.example"),
        ("X-Auth-Request-Preferred-Username", "admin"),
        ("X-Auth-Request-Groups", "/admins"),
        ("x-auth-request-user", "admin2"),
        ("X_Auth_Request_User", "admin3"),
    ];
    let check = |r: &Resp, expect_user: Option<&str>| {
        assert_eq!(r.status, 200, "{}", r.summary());
        let headers = r.json()["headers"].clone();
        let obj = headers.as_object().unwrap();
        for (k, v) in obj {
            let k = k.replace('_', "-");
            if k.starts_with("x-auth-request-") {
                let v = v.as_str().unwrap_or("");
                assert!(
                    !v.contains("admin") && !v.contains("evil"),
                    "a forged {k}: {v} reached the upstream"
                );
            }
        }
        assert_eq!(
            obj.get("x-auth-request-user").and_then(|v| v.as_str()),
            expect_user
        );
    };

    // Without a session, on an unprotected location.
    let mut anon = env.browser();
    let r = anon.get(&env.url("/public/x"), forged);
    check(&r, None);

    // Without a session, on a protected location: nothing reaches the upstream at all.
    let count = env.upstream.count();
    let r = anon.get(&env.url(PAGE), forged);
    assert_sent_to_login(&env, &r, &anon.transcript());
    assert_eq!(env.upstream.count(), count);

    // With a session, on a protected location: only the module's values.
    let mut b = logged_in(&env, PAGE, "demo");
    let r = b.get(&env.url(PAGE), forged);
    check(&r, Some("demo"));
    assert_eq!(
        r.upstream_header("x-auth-request-groups").as_deref(),
        Some("/demo")
    );

    // With a session, on an unprotected location.
    let r = b.get(&env.url("/public/y"), forged);
    check(&r, None);
    env.assert_error_log_is_clean();
}

#[test]
fn oidc_variables_expose_the_user_and_claims() {
    let env = Env::start_with(EnvOptions::default().location_extra(
        "add_header X-Test-User $oidc_user always;\n\
         add_header X-Test-Email $oidc_email always;\n\
         add_header X-Test-Groups $oidc_groups always;\n\
         proxy_set_header X-Claim-Name $oidc_claim_name;\n\
         proxy_set_header X-Claim-Email-Verified $oidc_claim_email_verified;",
    ));
    let mut b = env.browser();
    let r = b.login(&env.url(PAGE), "bob", "bob");
    assert_eq!(r.status, 200, "{}", b.transcript());
    assert_eq!(r.header("x-test-user"), Some("bob"));
    assert_eq!(r.header("x-test-email"), Some("bob@other.org"));
    assert_eq!(r.header("x-test-groups"), Some("/staff"));
    assert_eq!(
        r.upstream_header("x-claim-name").as_deref(),
        Some("Bob Builder")
    );
    assert_eq!(
        r.upstream_header("x-claim-email-verified").as_deref(),
        Some("false")
    );

    let mut a = env.browser();
    let r = a.login(&env.url(PAGE), "alice", "alice");
    assert_eq!(r.header("x-test-groups"), Some("/admins,/staff"));
    assert_eq!(
        r.upstream_header("x-auth-request-groups").as_deref(),
        Some("/admins,/staff")
    );
    assert_eq!(
        r.upstream_header("x-claim-email-verified").as_deref(),
        Some("true")
    );
    env.assert_error_log_is_clean();
}

#[test]
fn a_user_with_150_groups_can_log_in() {
    let env = Env::start();
    let mut b = env.browser();
    let cb = b.login_callback(&env.url(PAGE), "biggroups", "biggroups");
    for c in cb.set_cookies() {
        assert!(
            c.name.len() + 1 + c.value.len() < 4096,
            "{} is {} bytes: browsers drop cookies over 4096",
            c.name,
            c.name.len() + 1 + c.value.len()
        );
    }
    let r = b.follow(cb);
    assert_eq!(r.status, 200, "{}", b.transcript());
    assert_eq!(
        r.upstream_header("x-auth-request-user").as_deref(),
        Some("biggroups")
    );
    let groups = r
        .upstream_header("x-auth-request-groups")
        .unwrap_or_default();
    assert_eq!(groups.split(',').count(), 150, "groups: {groups}");
    // And again, from the (possibly chunked) cookie alone.
    let r = b.get(&env.url("/again"), &[]);
    assert_eq!(r.status, 200, "{}", b.transcript());
    env.assert_error_log_is_clean();
}

// ---------------------------------------------------------------------------- /oauth2/*

#[test]
fn the_auth_endpoint_answers_202_with_a_session_and_401_without() {
    let env = Env::start();
    let mut anon = env.browser();
    let r = anon.get(&env.url("/oauth2/auth"), &[]);
    assert_eq!(r.status, 401, "{}", r.summary());
    let r = anon.get(&env.url("/oauth2/auth"), &[("Accept", "*/*")]);
    assert_eq!(r.status, 401, "{}", r.summary());

    let mut b = logged_in(&env, PAGE, "alice");
    let r = b.get(&env.url("/oauth2/auth"), &[]);
    assert_eq!(r.status, 202, "{}\n{}", r.summary(), b.transcript());
    assert_eq!(r.header("x-auth-request-user"), Some("alice"));
    assert_eq!(r.header("x-auth-request-email"), Some("alice@example.com"));
    assert_eq!(r.header("x-auth-request-groups"), Some("/admins,/staff"));
    env.assert_error_log_is_clean();
}

#[test]
fn the_userinfo_endpoint_shows_the_session_user() {
    let env = Env::start();
    let mut anon = env.browser();
    let r = anon.get(
        &env.url("/oauth2/userinfo"),
        &[("Accept", "application/json")],
    );
    assert_eq!(r.status, 401, "{}", r.summary());
    let mut b = logged_in(&env, PAGE, "demo");
    let r = b.get(
        &env.url("/oauth2/userinfo"),
        &[("Accept", "application/json")],
    );
    assert_eq!(r.status, 200, "{}", r.summary());
    let j = r.json();
    assert!(j.to_string().contains("demo@example.com"), "userinfo: {j}");
    env.assert_error_log_is_clean();
}

#[test]
fn an_api_request_without_a_session_gets_401() {
    let env = Env::start();
    let mut b = env.browser();
    for headers in [
        &[("Accept", "application/json")][..],
        &[("X-Requested-With", "XMLHttpRequest"), ("Accept", "*/*")][..],
    ] {
        let r = b.get(&env.url("/api/things"), headers);
        assert_eq!(r.status, 401, "{headers:?}: {}", r.summary());
        assert!(
            r.header("www-authenticate").is_some(),
            "no WWW-Authenticate"
        );
    }
    assert_eq!(env.upstream.count(), 0);
}

#[test]
fn signing_out_ends_the_session() {
    let env = Env::start();
    let mut b = logged_in(&env, PAGE, "demo");
    let r = b.get(&env.url("/oauth2/sign_out"), &[]);
    assert!(matches!(r.status, 302 | 303), "{}", r.summary());
    assert!(
        b.jar.names_where(is_session_cookie).is_empty(),
        "session cookies left after sign_out: {:?}\n{}",
        b.jar.names(),
        b.transcript()
    );
    let r = b.get(&env.url(PAGE), &[]);
    assert_sent_to_login(&env, &r, &b.transcript());
    env.assert_error_log_is_clean();
}

// ---------------------------------------------------------------------------- bad cookies

fn tampered_variants(value: &str) -> Vec<(&'static str, String)> {
    let mid = value.len() / 2;
    let mut flipped = value.as_bytes().to_vec();
    flipped[mid] = if flipped[mid] == b'A' { b'B' } else { b'A' };
    let flipped_end = {
        let mut v = value.as_bytes().to_vec();
        let i = v.len() - 2;
        v[i] = if v[i] == b'A' { b'B' } else { b'A' };
        String::from_utf8(v).unwrap()
    };
    vec![
        ("one byte flipped", String::from_utf8(flipped).unwrap()),
        ("tag flipped", flipped_end),
        ("truncated", value[..mid].to_string()),
        ("only the prefix", "v1.".to_string()),
        ("empty", String::new()),
        ("garbage", "v1.!!!not*base64~~~".to_string()),
        ("random", format!("v1.{}", base64_url(&random_bytes(300)))),
        ("unknown version", format!("v9.{}", &value[3..])),
        ("huge", format!("v1.{}", "A".repeat(3800))),
    ]
}

#[test]
fn a_tampered_cookie_sends_the_browser_to_login() {
    let env = Env::start();
    let b = logged_in(&env, PAGE, "demo");
    let value = b.jar.get("_oidc").expect("a session cookie");
    for (what, bad) in tampered_variants(&value) {
        let mut t = Browser::new();
        t.jar = b.jar.clone();
        t.jar.set("_oidc", &bad);
        let r = t.get(&env.url(PAGE), &[]);
        assert!(r.status != 500, "{what}: 500");
        assert_sent_to_login(&env, &r, &t.transcript());
        // An API client is not redirected to a login page it cannot follow (401), and
        // nothing answers 500.
        let r = t.get(&env.url(PAGE), &[("Accept", "application/json")]);
        assert!(
            matches!(r.status, 302 | 401),
            "{what}, Accept: application/json: {}",
            r.summary()
        );
    }
    env.assert_error_log_is_clean();
}

#[test]
fn a_cookie_sealed_with_another_key_sends_the_browser_to_login() {
    let mut env = Env::start();
    let mut b = logged_in(&env, PAGE, "demo");
    env.set_cookie_keys(&[new_cookie_key()]);
    let r = b.get(&env.url(PAGE), &[]);
    assert_sent_to_login(&env, &r, &b.transcript());
    env.assert_error_log_is_clean();
}

#[test]
fn an_old_key_still_opens_sessions_after_key_rotation() {
    let mut env = Env::start();
    let mut b = logged_in(&env, PAGE, "demo");
    let old = env.cookie_keys[0].clone();
    env.set_cookie_keys(&[new_cookie_key(), old]);
    let r = b.get(&env.url(PAGE), &[]);
    assert_eq!(r.status, 200, "{}", b.transcript());
    assert_eq!(
        r.upstream_header("x-auth-request-user").as_deref(),
        Some("demo")
    );
    env.assert_error_log_is_clean();
}

#[test]
fn an_expired_session_sends_the_browser_to_login() {
    let env = Env::start_with(EnvOptions::default().token_ttls(2, 2, 3));
    let mut b = logged_in(&env, PAGE, "demo");
    thread::sleep(Duration::from_secs(5));
    let r = b.get(&env.url(PAGE), &[]);
    assert_sent_to_login(&env, &r, &b.transcript());
    env.assert_error_log_is_clean();
}

#[test]
fn a_session_outlives_its_access_token_by_refreshing() {
    let env = Env::start_with(EnvOptions::default().token_ttls(2, 2, 120));
    let mut b = logged_in(&env, PAGE, "demo");
    thread::sleep(Duration::from_secs(4));
    let r = b.get(&env.url(PAGE), &[]);
    assert_eq!(r.status, 200, "{}", b.transcript());
    assert_eq!(
        r.upstream_header("x-auth-request-user").as_deref(),
        Some("demo")
    );
    let refreshes = env.provider.stats()["token_requests"]["refresh_token"]
        .as_u64()
        .unwrap_or(0);
    assert!(refreshes >= 1, "no refresh_token grant at the provider");
    env.assert_error_log_is_clean();
}

// ---------------------------------------------------------------------------- bad callbacks

#[test]
fn a_callback_with_an_unknown_state_is_refused() {
    let env = Env::start();
    let mut b = env.browser();
    let r = b.get(&env.url("/oauth2/callback?code=abc&state=unknown"), &[]);
    assert_refused(&b, &r);
    let r = b.get(&env.url("/oauth2/callback"), &[]);
    assert_refused(&b, &r);
    env.assert_error_log_is_clean();
}

#[test]
fn the_logs_never_show_the_authorization_code_or_state() {
    let mut env = Env::start();
    logged_in(&env, PAGE, "demo");
    let mut b = env.browser();
    b.get(&env.url("/oauth2/callback?code=c0de&state=unknown"), &[]);
    // nginx's own error line about the provider subrequest carries the callback's request.
    let callback = b.authorize(&env.url(PAGE), "demo", "demo").unwrap();
    env.provider.kill();
    let r = b.get(&callback, &[]);
    assert!(r.status == 502 || r.status == 503, "{}", r.summary());

    let access = std::fs::read_to_string(env.dir.path.join("access.log")).unwrap();
    let error = env.error_log();
    for (name, log) in [("access.log", &access), ("error.log", &error)] {
        assert!(
            !shows_one_time_value(log),
            "{name} shows a code or state:\n{log}"
        );
        assert!(
            log.contains("/oauth2/callback?code=[hidden]&state=[hidden]"),
            "{name} does not show the callback:\n{log}"
        );
    }
    assert!(
        error.contains("connect() failed") && error.contains("state=[hidden]&iss="),
        "no nginx connect() error with the hidden callback request:\n{error}"
    );
    env.assert_error_log_is_clean();
}

#[test]
fn a_callback_without_the_state_cookie_is_refused() {
    let env = Env::start();
    let mut victim = env.browser();
    let callback = victim.authorize(&env.url(PAGE), "demo", "demo").unwrap();
    let mut attacker = env.browser();
    let r = attacker.get(&callback, &[]);
    assert_refused(&attacker, &r);
    env.assert_error_log_is_clean();
}

#[test]
fn a_callback_with_a_mismatched_state_is_refused() {
    let env = Env::start();
    let mut b = env.browser();
    let callback = b.authorize(&env.url(PAGE), "demo", "demo").unwrap();
    let r = b.get(&with_query_param(&callback, "state", &random_hex(16)), &[]);
    assert_refused(&b, &r);
    env.assert_error_log_is_clean();
}

#[test]
fn a_denied_login_is_refused_without_a_session() {
    let env = Env::start();
    let mut b = env.browser();
    let r = b.get(&env.url(PAGE), &[]);
    assert_sent_to_login(&env, &r, &b.transcript());
    let state = query_param(r.location().unwrap(), "state").unwrap();
    let r = b.get(
        &with_query_param(
            &env.url("/oauth2/callback?error=access_denied&error_description=no"),
            "state",
            &state,
        ),
        &[],
    );
    assert_refused(&b, &r);
    env.assert_error_log_is_clean();
}

#[test]
fn a_replayed_code_is_refused() {
    let env = Env::start();
    let mut b = env.browser();
    let callback = b.authorize(&env.url(PAGE), "demo", "demo").unwrap();
    let before = b.jar.clone();
    let r = b.get(&callback, &[]);
    assert_eq!(assert_on_site_redirect(&env, &b, &r), PAGE);

    // The same browser replays the callback.
    let mut again = Browser::new();
    again.jar = b.jar.clone();
    again.jar.remove("_oidc");
    for n in b.jar.names_where(is_session_cookie) {
        again.jar.remove(&n);
    }
    let r = again.get(&callback, &[]);
    assert_refused(&again, &r);

    // A copy of the browser from before the callback (state cookie intact): the provider
    // refuses the used code, and the module must answer 4xx, not 5xx.
    let mut copy = Browser::new();
    copy.jar = before;
    let r = copy.get(&callback, &[]);
    assert_refused(&copy, &r);
    env.assert_error_log_is_clean();
}

// ---------------------------------------------------------------------------- open redirects

#[test]
fn sign_in_refuses_to_send_the_browser_off_site() {
    let env = Env::start();
    let payloads = [
        "//evil.com",
        "/\\evil.com",
        "https:evil.com",
        "https://evil.com/",
        "http://evil.com",
        "///evil.com",
        "/\\/evil.com",
        "\\\\evil.com",
        "/%09/evil.com",
        "/%2F/evil.com",
        "//evil.com/%2F..",
        " //evil.com",
        "javascript:alert(1)",
        "http://127.0.0.1.evil.com/",
        &format!("http://127.0.0.1:{}@evil.com/", env.port),
    ];
    for payload in payloads {
        for encoded in [false, true] {
            let rd = if encoded {
                url::form_urlencoded::byte_serialize(payload.as_bytes()).collect::<String>()
            } else {
                payload.replace(' ', "%20").replace('\t', "%09")
            };
            let start = env.url(&format!("/oauth2/sign_in?rd={rd}"));
            let mut b = env.browser();
            let first = b.get(&start, &[]);
            if first.status == 400 {
                continue; // refused up front
            }
            assert_sent_to_login(&env, &first, &b.transcript());
            let mut b = env.browser();
            let cb = b.login_callback(&start, "demo", "demo");
            if (400..500).contains(&cb.status) {
                continue;
            }
            assert_on_site_redirect(&env, &b, &cb);
        }
    }
    env.assert_error_log_is_clean();
}

#[test]
fn a_protected_page_with_a_double_slash_path_does_not_redirect_off_site() {
    let env = Env::start();
    for path in ["//evil.com/", "//evil.com/%2F..", "/\\evil.com/"] {
        let mut b = env.browser();
        let first = b.get(&env.url(path), &[]);
        if first.status == 400 {
            continue;
        }
        let cb = b.login_callback(&env.url(path), "demo", "demo");
        if (400..500).contains(&cb.status) {
            continue;
        }
        assert_on_site_redirect(&env, &b, &cb);
    }
    env.assert_error_log_is_clean();
}

// ---------------------------------------------------------------------------- the provider

#[test]
fn a_wrong_password_keeps_the_browser_at_the_provider() {
    let env = Env::start();
    let mut b = env.browser();
    let r = b
        .authorize(&env.url(PAGE), "demo", "wrong")
        .expect_err("a wrong password must not log in");
    assert_eq!(r.status, 200);
    assert!(r.body.contains("Invalid username or password."));
    assert!(b.jar.names_where(is_session_cookie).is_empty());
}

// ---------------------------------------------------------------------------- config errors

fn contract() -> String {
    format!("{PROVIDER_BLOCK}{PROTECTED_SERVER}")
}

#[test]
fn the_documented_config_passes_nginx_t() {
    let key = new_cookie_key();
    let t = nginx_t(
        &contract(),
        &offline_config_vars(),
        &[("keys", &format!("{key}\n"))],
        true,
    );
    assert!(t.ok, "nginx -t failed:\n{}\n{}", t.stderr, t.config);
}

#[test]
fn cookie_key_files_accept_standard_and_url_safe_base64_with_several_keys() {
    // Keys whose base64 holds + and /, in both alphabets.
    let mut key = new_cookie_key();
    while !(key.contains('+') || key.contains('/')) {
        key = new_cookie_key();
    }
    let url_safe = key.replace('+', "-").replace('/', "_");
    let keys = format!("{}\n{key}\n{url_safe}\n", new_cookie_key());
    let t = nginx_t(
        &contract(),
        &offline_config_vars(),
        &[("keys", &keys)],
        true,
    );
    assert!(t.ok, "nginx -t failed:\n{}", t.stderr);
}

#[test]
fn config_mistakes_fail_nginx_t_naming_the_directive() {
    let good_key = format!("{}\n", new_cookie_key());
    let short_key = format!("{}\n", base64_std(&random_bytes(16)));
    let contract = contract();
    let without = |line: &str| {
        let c = contract.replace(line, "");
        assert_ne!(c, contract, "{line} not in the contract");
        c
    };
    let two = format!("{PROVIDER_BLOCK}{contract}");
    let cases: Vec<(&str, String, &str, &str)> = vec![
        (
            "an unknown provider in oidc_auth",
            contract.replace("oidc_auth keycloak;", "oidc_auth nosuch;"),
            good_key.as_str(),
            "oidc_auth",
        ),
        (
            "an unknown provider in oidc_endpoints",
            contract.replace("oidc_endpoints keycloak;", "oidc_endpoints nosuch;"),
            &good_key,
            "oidc_endpoints",
        ),
        (
            "no issuer",
            without("issuer             @ISSUER@;"),
            &good_key,
            "issuer",
        ),
        (
            "no client_id",
            without("client_id          test;"),
            &good_key,
            "client_id",
        ),
        (
            "no cookie_secret_file",
            without("cookie_secret_file @KEYS@;"),
            &good_key,
            "cookie_secret_file",
        ),
        (
            "a 16-byte key",
            contract.clone(),
            &short_key,
            "cookie_secret_file",
        ),
        (
            "a key that is not base64",
            contract.clone(),
            "not base64 at all!!\n",
            "cookie_secret_file",
        ),
        (
            "an empty key file",
            contract.clone(),
            "",
            "cookie_secret_file",
        ),
        (
            "a missing key file",
            contract.replace("@KEYS@", "@DIR@/no-such-file"),
            &good_key,
            "cookie_secret_file",
        ),
        (
            "two providers with one name",
            two,
            &good_key,
            "oidc_provider",
        ),
    ];
    let mut failures = Vec::new();
    for (what, config, keys, directive) in &cases {
        let t = nginx_t(config, &offline_config_vars(), &[("keys", keys)], true);
        if t.ok {
            failures.push(format!("{what}: nginx -t passed"));
        } else if t.stderr.contains("load_module") || t.stderr.contains("dlopen") {
            failures.push(format!(
                "{what}: the module did not load: {}",
                t.stderr.trim()
            ));
        } else if !t.stderr.contains(directive) {
            failures.push(format!(
                "{what}: the error does not name \"{directive}\": {}",
                t.stderr.trim()
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}
