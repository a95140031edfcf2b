//! Checks of the end-to-end harness itself (no module loaded): if these fail, the login tests'
//! failures say nothing about the module.

mod common;

use common::*;
use serde_json::Value;

#[test]
fn the_provider_and_nginx_start() {
    let env = Env::start_with(EnvOptions::plain_proxy());
    let mut browser = env.browser();

    let r = browser.get(&env.url("/hello/world?x=1&y=%20z"), &[("X-Probe", "42")]);
    assert_eq!(r.status, 200, "{}", browser.transcript());
    let echo = r.json();
    assert_eq!(echo["method"], "GET");
    assert_eq!(echo["path"], "/hello/world?x=1&y=%20z");
    assert_eq!(r.upstream_header("x-probe").as_deref(), Some("42"));
    assert_eq!(env.upstream.count(), 1);

    let discovery: Value = browser
        .get(
            &format!("{}/.well-known/openid-configuration", env.provider.issuer),
            &[("Accept", "application/json")],
        )
        .json();
    assert_eq!(discovery["issuer"], env.provider.issuer.as_str());
    assert_eq!(
        discovery["authorization_endpoint"],
        format!("{}/protocol/openid-connect/auth", env.provider.issuer)
    );
    assert_eq!(env.provider.stats()["discovery_requests"], 1);
    env.provider.reset();
    assert_eq!(env.provider.calls(), 0);

    let check = nginx_t(PLAIN_PROXY, &env.vars, &[], false);
    assert!(check.ok, "nginx -t failed:\n{}", check.stderr);
}

#[test]
fn nginx_can_be_restarted_on_the_same_port() {
    let mut env = Env::start_with(EnvOptions::plain_proxy());
    let mut browser = env.browser();
    assert_eq!(browser.get(&env.url("/a"), &[]).status, 200);
    env.restart_nginx();
    assert_eq!(browser.get(&env.url("/b"), &[]).status, 200);
    assert_eq!(env.upstream.count(), 2);
}

/// The browser walks the provider's login form and comes back with a code; the code exchange
/// gives an ID token for our client and a Keycloak-19-style access token with `aud: account`.
#[test]
fn the_browser_can_log_in_at_the_provider() {
    let env = Env::start_with(EnvOptions::plain_proxy());
    let p = &env.provider;
    let redirect_uri = env.url("/oauth2/callback");
    let auth = format!(
        "{}/protocol/openid-connect/auth?response_type=code&client_id=test&scope=openid%20email%20profile\
         &redirect_uri={}&state=st-123&nonce=n-456",
        p.issuer,
        url::form_urlencoded::byte_serialize(redirect_uri.as_bytes()).collect::<String>()
    );

    // A wrong password shows the form again.
    let mut browser = env.browser();
    let wrong = browser
        .authorize_for(&env.url(""), &auth, "demo", "nope")
        .expect_err("a wrong password must not log in");
    assert_eq!(wrong.status, 200);
    assert!(wrong.body.contains("Invalid username or password."));

    let mut browser = env.browser();
    let callback = browser
        .authorize_for(&env.url(""), &auth, "demo", "demo")
        .unwrap_or_else(|r| panic!("stopped at {}\n{}", r.summary(), browser.transcript()));
    assert!(callback.starts_with(&redirect_uri), "{callback}");
    assert_eq!(query_param(&callback, "state").as_deref(), Some("st-123"));
    let code = query_param(&callback, "code").expect("code");

    // The provider's session cookie makes a second login skip the form.
    let again = browser
        .authorize_for(&env.url(""), &auth, "demo", "demo")
        .expect("SSO login");
    assert!(again.starts_with(&redirect_uri));

    let token = ureq::post(&format!("{}/protocol/openid-connect/token", p.issuer))
        .set(
            "Authorization",
            &format!(
                "Basic {}",
                base64_std(format!("test:{}", p.client_secret).as_bytes())
            ),
        )
        .send_form(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", &redirect_uri),
        ])
        .map_err(|e| match e {
            ureq::Error::Status(s, r) => format!("{s}: {}", r.into_string().unwrap_or_default()),
            e => e.to_string(),
        })
        .expect("token exchange")
        .into_json::<Value>()
        .unwrap();
    let id = jwt_claims(token["id_token"].as_str().expect("id_token"));
    assert_eq!(id["iss"], p.issuer.as_str());
    assert_eq!(id["aud"], "test");
    assert_eq!(id["nonce"], "n-456");
    assert_eq!(id["preferred_username"], "demo");
    let access = jwt_claims(token["access_token"].as_str().expect("access_token"));
    let aud = &access["aud"];
    assert!(
        aud == "account"
            || aud
                .as_array()
                .is_some_and(|a| a.iter().any(|x| x == "account")),
        "access token aud: {aud}"
    );
    assert!(token["refresh_token"].is_string());
    assert_eq!(p.stats()["token_requests"]["authorization_code"], 1);
}

#[test]
fn the_cookie_jar_behaves_like_a_browser() {
    let a = url::Url::parse("http://127.0.0.1:8080/some/page").unwrap();
    let b = url::Url::parse("http://127.0.0.1:8081/realms/test/x").unwrap();
    let other = url::Url::parse("http://localhost:8080/").unwrap();
    let mut jar = CookieJar::default();
    jar.store(&a, "_oidc=v1.abc; Path=/; HttpOnly; SameSite=Lax");
    jar.store(&a, "_oidc_1=def; Path=/");
    jar.store(&a, "deep=1; Path=/some");
    jar.store(&a, "sec=1; Path=/; Secure");
    jar.store(&b, "idp=1; Path=/realms/test");
    // one jar for all ports of a host, path matching, longest path first
    assert_eq!(
        jar.header_for(&a).as_deref(),
        Some("deep=1; _oidc=v1.abc; _oidc_1=def")
    );
    assert_eq!(
        jar.header_for(&b).as_deref(),
        Some("idp=1; _oidc=v1.abc; _oidc_1=def")
    );
    assert_eq!(jar.header_for(&other), None);
    // deletion by Max-Age=0 and by Expires in the past
    jar.store(&a, "_oidc_1=; Path=/; Max-Age=0");
    jar.store(
        &a,
        "_oidc=; Path=/; Expires=Thu, 01 Jan 1970 00:00:01 GMT; HttpOnly",
    );
    assert_eq!(jar.header_for(&a).as_deref(), Some("deep=1"));
    // a future Expires keeps it
    jar.store(&a, "later=1; Path=/; Expires=Wed, 01-Jan-2100 00:00:00 GMT");
    assert!(jar.get("later").is_some());

    assert_eq!(parse_http_date("Thu, 01 Jan 1970 00:00:01 GMT"), Some(1));
    assert_eq!(
        parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
        Some(784111777)
    );
    let sc = SetCookie::parse("_oidc=v1.x; Max-Age=0; Path=/").unwrap();
    assert!(sc.is_deletion());
    assert!(is_session_cookie("_oidc") && is_session_cookie("_oidc_12"));
    assert!(!is_session_cookie("_oidc_state_abc") && !is_session_cookie("_oidcx"));
}

#[test]
fn the_login_form_action_is_found() {
    let html = r#"<html><form id="kc-form-login" class="x" method="post"
        action="/realms/test/interaction/abc&amp;d/login"><input name="username"></form>"#;
    assert_eq!(
        login_form_action(html).as_deref(),
        Some("/realms/test/interaction/abc&d/login")
    );
    let key = new_cookie_key();
    assert_eq!(key.len(), 44);
    assert_eq!(base64_decode(&key).len(), 32);
    assert_eq!(base64_std(b"hi?"), "aGk/");
    assert_eq!(base64_url(b"hi?"), "aGk_");
}
