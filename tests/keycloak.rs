//! End-to-end against a real Keycloak (`scripts/keycloak.sh`: the server distribution from
//! Maven Central in dev mode, realms from tests/keycloak/*.json): nginx with the module, an
//! echo upstream and a browser-like client that logs in through Keycloak's own login form.
//! One Keycloak serves every test of this file (each test has its own nginx); tests that end
//! sessions use a user of their own so that they cannot disturb the others.

mod common;

use std::thread;
use std::time::{Duration, Instant};

use common::keycloak::*;
use common::*;
use serde_json::Value;

/// The access token as the upstream received it (`oidc_pass_access_token on` in `/tokens/`).
fn passed_access_token(b: &Browser, r: &Resp) -> String {
    assert_eq!(r.status, 200, "{}\n{}", r.summary(), b.transcript());
    r.upstream_header("x-auth-request-access-token")
        .unwrap_or_else(|| panic!("no access token upstream: {}", r.body))
}

/// Waits until the clock is past the `exp` of `access_token` (checked every 100 ms, at most
/// 60 s): from then on the token is expired for Keycloak and for nginx alike.
fn wait_until_expired(access_token: &str) {
    let exp = jwt_claims(access_token)["exp"].as_i64().expect("exp");
    wait_for(
        "the access token to expire",
        Duration::from_secs(60),
        || (unix_now() > exp).then_some(()),
    );
}

/// Keycloak's user events of `kind` for `user`, once at least `at_least` of them are stored
/// (Keycloak stores events after answering; polled for at most 30 s).
fn events_once_stored(env: &KcEnv, user: &str, kind: &str, at_least: usize) -> Vec<Value> {
    let start = Instant::now();
    loop {
        let events = env.kc.events(env.opts.realm, user, kind);
        if events.len() >= at_least || start.elapsed() > Duration::from_secs(30) {
            return events;
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// Whether `resp` is Keycloak's login page with the username/password form.
fn is_password_form(resp: &Resp) -> bool {
    resp.status == 200 && login_form_action(&resp.body).is_some()
}

/// Keycloak's "Do you want to log out?" page (shown when a logout request carries no
/// `id_token_hint`): the form's action and hidden `session_code`.
fn logout_confirmation(html: &str) -> Option<(String, String)> {
    let field = html.find("name=\"session_code\"")?;
    let start = html[..field].rfind("<form")?;
    let tag = &html[start..start + html[start..].find('>')?];
    let action = tag.split("action=\"").nth(1)?.split('"').next()?;
    let code = html
        .split("name=\"session_code\" value=\"")
        .nth(1)?
        .split('"')
        .next()?;
    Some((action.replace("&amp;", "&"), code.to_string()))
}

// ---------------------------------------------------------------------------------- login

#[test]
fn a_user_logs_in_at_keycloaks_own_form_and_the_upstream_gets_user_email_and_group_paths() {
    let env = KcEnv::start(KcOptions::default());
    let mut b = env.browser();
    let r = b.get(&env.url("/some/page?x=1"), &[]);
    let login = b.follow_while(r, |u| origin(u) == env.kc.url);
    assert!(
        is_password_form(&login) && login.url.starts_with(&env.issuer),
        "expected Keycloak's login form, got {}\n{}",
        login.summary(),
        b.transcript()
    );
    let mut b = env.browser();
    let r = b.login(&env.url("/some/page?x=1"), "alice", "alice");
    assert_eq!(r.status, 200, "{}\n{}", r.summary(), b.transcript());
    assert_eq!(r.json()["path"], "/some/page?x=1");
    let h = |n: &str| r.upstream_header(n);
    assert_eq!(h("x-auth-request-user").as_deref(), Some("alice"));
    assert_eq!(
        h("x-auth-request-preferred-username").as_deref(),
        Some("alice")
    );
    assert_eq!(
        h("x-auth-request-email").as_deref(),
        Some("alice@example.com")
    );
    assert_eq!(
        h("x-auth-request-groups").as_deref(),
        Some("/admins,/admins/security"),
        "the Group Membership mapper's full paths"
    );
    // The session works without Keycloak for the next page.
    let again = b.get(&env.url("/another"), &[]);
    assert_eq!(again.status, 200, "{}", b.transcript());
    assert_eq!(
        again.upstream_header("x-auth-request-user").as_deref(),
        Some("alice")
    );
    env.assert_error_log_is_clean();
}

#[test]
fn a_user_in_150_groups_logs_in_and_is_served_with_nginxs_default_header_buffers() {
    let env = KcEnv::start(KcOptions::default());
    let mut b = env.logged_in("/big/page", "biggroups");
    let r = b.get(&env.url("/big/other"), &[]);
    assert_eq!(r.status, 200, "{}\n{}", r.summary(), b.transcript());
    let groups = r.upstream_header("x-auth-request-groups").unwrap();
    let groups: Vec<&str> = groups.split(',').collect();
    assert_eq!(groups.len(), 150, "groups upstream: {groups:?}");
    assert!(groups.contains(&"/department-0150/team-with-a-long-name-for-large-token-tests-0150"));
    assert!(
        !env.nginx.config.contains("large_client_header_buffers"),
        "the test must use nginx's default header buffers"
    );
    let cookie = b
        .jar
        .header_for(&url::Url::parse(&env.url("/")).unwrap())
        .unwrap();
    eprintln!("biggroups: Cookie header to nginx {} bytes", cookie.len());
    env.assert_error_log_is_clean();
}

#[test]
fn keycloak_over_https_verified_against_its_ca_logs_the_user_in() {
    let env = KcEnv::start(KcOptions {
        https: true,
        ..Default::default()
    });
    assert!(env.issuer.starts_with("https://127.0.0.1:"));
    assert!(env.nginx.config.contains("proxy_ssl_verify on;"));
    let mut b = env.logged_in("/secure/page", "demo");
    assert!(
        b.hops.iter().any(|h| h.url.starts_with(&env.kc.https_url)),
        "the login form was not served over https:\n{}",
        b.transcript()
    );
    let r = b.get(&env.url("/secure/page"), &[]);
    assert_eq!(
        r.upstream_header("x-auth-request-email").as_deref(),
        Some("demo@example.com")
    );
    assert!(
        !env.error_log().contains("certificate verify failed"),
        "{}",
        env.error_log()
    );
    env.assert_error_log_is_clean();
}

// ---------------------------------------------------------------------------------- roles

#[test]
fn a_realm_role_rule_lets_the_role_holder_in_and_refuses_a_user_without_it() {
    let env = KcEnv::start(KcOptions::default());
    let mut alice = env.logged_in("/", "alice");
    let r = alice.get(&env.url("/realm-admins/page"), &[]);
    assert_eq!(
        r.status,
        200,
        "alice has realm role app-admin (Keycloak's default \"roles\" scope puts it in the access \
         token): {}\n{}",
        r.summary(),
        env.error_log()
    );
    let mut demo = env.logged_in("/", "demo");
    let r = demo.get(&env.url("/realm-admins/page"), &[]);
    assert_eq!(r.status, 403, "demo lacks app-admin: {}", r.summary());
    env.assert_error_log_is_clean();
}

#[test]
fn a_client_role_rule_lets_the_role_holder_in_and_refuses_a_user_without_it() {
    let env = KcEnv::start(KcOptions::default());
    let mut alice = env.logged_in("/", "alice");
    let r = alice.get(&env.url("/test-editors/page"), &[]);
    assert_eq!(
        r.status,
        200,
        "alice has client role editor of client test: {}\n{}",
        r.summary(),
        env.error_log()
    );
    let mut demo = env.logged_in("/", "demo");
    let r = demo.get(&env.url("/test-editors/page"), &[]);
    assert_eq!(r.status, 403, "demo has only viewer: {}", r.summary());
    env.assert_error_log_is_clean();
}

// -------------------------------------------------------------------------------- refresh

#[test]
fn with_revoke_refresh_token_32_requests_after_expiry_all_pass_on_one_refresh_and_it_refreshes_again(
) {
    let env = KcEnv::start(KcOptions {
        realm: ROTATE_REALM,
        provider_extra: "refresh_leeway 1s;".into(),
        ..Default::default()
    });
    let user = "erin";
    let before = env.kc.events(env.opts.realm, user, "REFRESH_TOKEN").len();
    let mut b = env.logged_in("/tokens/first", user);
    let r = b.get(&env.url("/tokens/first"), &[]);
    let first = passed_access_token(&b, &r);
    wait_until_expired(&first);

    let cookie = b
        .jar
        .header_for(&url::Url::parse(&env.url("/tokens/")).unwrap())
        .unwrap();
    let results = concurrent_gets(&env.url("/tokens/burst"), &cookie, 32);
    for (status, who) in &results {
        assert_eq!(*status, 200, "results: {results:?}\n{}", env.error_log());
        assert_eq!(who.as_deref(), Some(user));
    }
    let refreshes = events_once_stored(&env, user, "REFRESH_TOKEN", before + 1);
    assert_eq!(
        refreshes.len(),
        before + 1,
        "Keycloak recorded {} refreshes for 32 simultaneous requests",
        refreshes.len() - before
    );
    assert_eq!(
        env.kc
            .events(env.opts.realm, user, "REFRESH_TOKEN_ERROR")
            .len(),
        0,
        "a rotated refresh token was used twice"
    );

    // The browser still holds the pre-refresh cookie: it is served, and gets the new session.
    let r = b.get(&env.url("/tokens/second"), &[]);
    let second = passed_access_token(&b, &r);
    assert_ne!(first, second);
    assert!(
        session_cookies_set(&r).iter().any(|c| c.name == "_oidc"),
        "the refreshed session did not reach the browser: {}",
        r.summary()
    );
    wait_until_expired(&second);
    let r = b.get(&env.url("/tokens/third"), &[]);
    let third = passed_access_token(&b, &r);
    assert_ne!(
        second, third,
        "the session did not refresh after the next expiry"
    );
    let refreshes = events_once_stored(&env, user, "REFRESH_TOKEN", before + 2);
    assert_eq!(refreshes.len(), before + 2);
    assert_eq!(
        env.kc
            .events(env.opts.realm, user, "REFRESH_TOKEN_ERROR")
            .len(),
        0
    );
    env.assert_error_log_is_clean();
}

// --------------------------------------------------------------------------------- logout

#[test]
fn sign_out_ends_the_keycloak_session_so_the_next_login_shows_the_password_form() {
    let env = KcEnv::start(KcOptions::default());
    let mut b = env.logged_in("/page", "dave");

    // Without signing out, Keycloak's own session logs a browser without nginx's cookie
    // straight back in, with no form.
    let mut sso = env.browser();
    sso.jar = b.jar.clone();
    for name in sso.jar.names_where(|n| n.starts_with("_oidc")) {
        sso.jar.remove(&name);
    }
    let r = sso.get(&env.url("/page"), &[]);
    let back = sso.follow_while(r, |u| origin(u) == env.kc.url);
    assert!(
        back.location_url()
            .is_some_and(|u| u.path() == "/oauth2/callback" && origin(&u) == env.url("")),
        "Keycloak's SSO session did not send the browser back without the form:\n{}",
        sso.transcript()
    );

    let out = b.get(&env.url("/oauth2/sign_out"), &[]);
    let mut done = b.follow(out);
    if let Some((action, code)) = logout_confirmation(&done.body) {
        let action = url::Url::parse(&done.url).unwrap().join(&action).unwrap();
        let r = b.post_form(
            action.as_str(),
            &[("session_code", &code), ("confirmLogout", "Logout")],
            &[],
        );
        done = b.follow(r);
    }
    assert!(
        b.hops
            .iter()
            .any(|h| h.url.contains("/protocol/openid-connect/logout")),
        "sign-out did not go through Keycloak's logout:\n{}",
        b.transcript()
    );
    assert!(
        is_password_form(&done),
        "sign-out should end at Keycloak's password form (rd=/ is protected), got {}\n{}",
        done.summary(),
        b.transcript()
    );

    let r = b.get(&env.url("/page"), &[]);
    let next = b.follow_while(r, |u| origin(u) == env.kc.url);
    assert!(
        is_password_form(&next),
        "after sign-out Keycloak should ask for the password, got {}\n{}",
        next.summary(),
        b.transcript()
    );
    env.assert_error_log_is_clean();
}

#[test]
fn an_administrator_signing_the_user_out_in_keycloak_ends_the_session_within_a_second() {
    let env = KcEnv::start(KcOptions {
        client_id: "backchannel",
        ..Default::default()
    });
    env.kc.set_client_attribute(
        REALM,
        "backchannel",
        "backchannel.logout.url",
        &env.url("/oauth2/backchannel_logout"),
    );
    let user = "carol";
    let mut b = env.logged_in("/page", user);
    let api = [("Accept", "application/json")];
    assert_eq!(b.get(&env.url("/page"), &api).status, 200);

    env.kc.sign_out_user(REALM, user);
    let signed_out = Instant::now();
    let status = wait_for(
        "nginx to refuse the session after Keycloak's back-channel logout",
        Duration::from_secs(1),
        || {
            let s = b.get(&env.url("/page"), &api).status;
            (s != 200).then_some(s)
        },
    );
    assert_eq!(status, 401, "{}", b.transcript());
    eprintln!(
        "session refused {:?} after the admin sign-out returned",
        signed_out.elapsed()
    );
    assert!(
        env.error_log()
            .contains("back-channel logout: a session ended at the provider"),
        "the logout token did not come from Keycloak:\n{}",
        env.error_log()
    );
    env.assert_error_log_is_clean();
}

// --------------------------------------------------------------------------------- bearer

#[test]
fn a_keycloak_access_token_with_aud_account_gets_401_naming_the_audience_mapper_and_with_the_mapper_200(
) {
    // Client `test` as README sets it up: its access tokens say `aud: account`.
    let env = KcEnv::start(KcOptions::default());
    let t = env
        .kc
        .password_grant(REALM, "test", client_secret("test"), "demo");
    let token = t["access_token"].as_str().unwrap();
    assert_eq!(jwt_claims(token)["aud"], "account");
    let mut b = env.browser();
    let auth = format!("Bearer {token}");
    let r = b.get(
        &env.url("/api/items"),
        &[("Authorization", &auth), ("Accept", "application/json")],
    );
    assert_eq!(r.status, 401, "{}", r.summary());
    let log = env.error_log();
    assert!(
        log.lines()
            .any(|l| l.contains("Audience mapper") && l.contains("account")),
        "no log line names the Audience mapper:\n{log}"
    );
    env.assert_error_log_is_clean();

    // Client `test-aud` has the Audience mapper: its access tokens carry its id.
    let env = KcEnv::start(KcOptions {
        client_id: "test-aud",
        ..Default::default()
    });
    let t = env
        .kc
        .password_grant(REALM, "test-aud", client_secret("test-aud"), "demo");
    let token = t["access_token"].as_str().unwrap();
    let aud = jwt_claims(token)["aud"].clone();
    assert!(
        aud.as_array()
            .is_some_and(|a| a.contains(&"test-aud".into())),
        "aud: {aud}"
    );
    let auth = format!("Bearer {token}");
    let r = b.get(
        &env.url("/api/items"),
        &[("Authorization", &auth), ("Accept", "application/json")],
    );
    assert_eq!(r.status, 200, "{}\n{}", r.summary(), env.error_log());
    assert_eq!(
        r.upstream_header("x-auth-request-user").as_deref(),
        Some("demo")
    );
    env.assert_error_log_is_clean();
}
