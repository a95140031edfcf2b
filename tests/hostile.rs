//! End-to-end: hostile requests and faults. A real nginx with the module, the test provider and
//! an echo upstream; every story ends with a clean error log — no 500, no worker crash
//! (`exited on signal`), no `[alert]`, no secret.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use common::*;

const PAGE: &str = "/some/page?x=1";

/// `GET path` with `Cookie: <cookie>` (raw bytes), `Accept: text/html`, `Connection: close`.
fn raw_get_with_cookie(port: u16, path: &str, cookie: &[u8]) -> (u16, String) {
    let mut head = format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: text/html\r\n\
         Connection: close\r\nCookie: "
    )
    .into_bytes();
    head.extend_from_slice(cookie);
    head.extend_from_slice(b"\r\n\r\n");
    raw_request(port, &head)
}

fn assert_no_script(what: &str, r: &Resp) {
    let lower = r.body.to_ascii_lowercase();
    assert!(
        !lower.contains("<script") && !lower.contains("<img"),
        "{what}: {} reflects markup unescaped:\n{}",
        r.summary(),
        r.body
    );
    for (k, v) in &r.headers {
        assert!(!v.contains(['\r', '\n']), "{what}: header {k}: {v:?}");
    }
}

// ---------------------------------------------------------------------------- cookies

#[test]
fn a_cookie_beyond_nginx_header_buffers_gets_400_from_nginx_without_a_crash() {
    let env = Env::start();
    let b = logged_in(&env, PAGE, "demo");
    let session = b.jar.get("_oidc").unwrap();
    // Default large_client_header_buffers: 4 x 8k. One 20 KB cookie line does not fit.
    let huge = format!("_oidc={session}; junk={}", "A".repeat(20_000));
    let (status, _) = raw_get_with_cookie(env.port, PAGE, huge.as_bytes());
    assert_eq!(status, 400, "an oversized Cookie header");
    // Just below the limit: our cookie with a large neighbour still works.
    let big = format!("_oidc={session}; junk={}", "A".repeat(5_000));
    let (status, text) = raw_get_with_cookie(env.port, PAGE, big.as_bytes());
    assert_eq!(status, 200, "{}", &text[..text.len().min(400)]);
    assert!(text.contains("\"x-auth-request-user\":\"demo\""), "{text}");
    // A huge value of our own cookie, split over many Cookie headers.
    let mut head =
        format!("GET {PAGE} HTTP/1.1\r\nHost: x\r\nAccept: text/html\r\nConnection: close\r\n");
    head.push_str(&format!("Cookie: _oidc=v1.{}\r\n", "B".repeat(7_000)));
    for i in 1..=3 {
        head.push_str(&format!("Cookie: _oidc_{i}={}\r\n", "C".repeat(7_000)));
    }
    head.push_str("\r\n");
    let (status, _) = raw_request(env.port, head.as_bytes());
    assert!(
        matches!(status, 302 | 400),
        "an 28 KB chunked cookie: {status}"
    );
    env.assert_error_log_is_clean();
}

#[test]
fn forty_bogus_chunks_are_no_session_not_an_error() {
    let env = Env::start();
    let b = logged_in(&env, PAGE, "demo");
    let session = b.jar.get("_oidc").unwrap();
    for first in [session.as_str(), "v1.AAAA", "", "x"] {
        let mut cookie = format!("_oidc={first}");
        for i in 1..=40 {
            cookie.push_str(&format!("; _oidc_{i}={}", base64_url(&random_bytes(60))));
        }
        let (status, text) = raw_get_with_cookie(env.port, PAGE, cookie.as_bytes());
        assert!(
            matches!(status, 200 | 302),
            "first chunk {first:.10}: {status}\n{}",
            &text[..text.len().min(300)]
        );
        // A chunk index that does not fit in any integer.
        let cookie =
            format!("_oidc={first}; _oidc_99999999999999999999999=x; _oidc_-1=y; _oidc_=z");
        let (status, _) = raw_get_with_cookie(env.port, PAGE, cookie.as_bytes());
        assert!(matches!(status, 200 | 302), "odd chunk names: {status}");
    }
    env.assert_error_log_is_clean();
}

/// The contract config with room for a Cookie header of up to 32 KB.
fn env_with_big_header_buffers() -> Env {
    let mut opts = EnvOptions::default();
    opts.http = format!("large_client_header_buffers 4 32k;\n{}", opts.http);
    Env::start_with(opts)
}

#[test]
fn a_chunked_session_missing_a_chunk_or_with_chunks_swapped_goes_to_login() {
    let env = env_with_big_header_buffers();
    let mut b = env.browser();
    let r = b.login(&env.url(PAGE), "chunky", "chunky");
    assert_eq!(r.status, 200, "{}", b.transcript());
    let chunks = b.jar.names_where(is_session_cookie);
    assert!(
        chunks.len() >= 3,
        "the 200-group session should need at least 3 chunks, got {chunks:?}"
    );
    eprintln!("the chunky session: {} cookies", chunks.len());
    // Drop each chunk in turn (the first, a middle one, the last).
    let last = format!("_oidc_{}", chunks.len() - 1);
    for missing in ["_oidc", "_oidc_1", last.as_str()] {
        let mut t = Browser::new();
        t.jar = b.jar.clone();
        t.jar.remove(missing);
        let r = t.get(&env.url(PAGE), &[]);
        assert_sent_to_login(&env, &r, "");
    }
    // Two chunks swapped; a chunk repeated.
    let (one, two) = (b.jar.get("_oidc_1").unwrap(), b.jar.get("_oidc_2").unwrap());
    for (c1, c2) in [(&two, &one), (&one, &one)] {
        let mut t = Browser::new();
        t.jar = b.jar.clone();
        t.jar.set("_oidc_1", c1);
        t.jar.set("_oidc_2", c2);
        let r = t.get(&env.url(PAGE), &[]);
        assert_sent_to_login(&env, &r, "");
    }
    // Extra stale chunks after the last one are ignored.
    let mut t = Browser::new();
    t.jar = b.jar.clone();
    for i in chunks.len()..16 {
        t.jar.set(&format!("_oidc_{i}"), "stale");
    }
    let r = t.get(&env.url(PAGE), &[]);
    assert_eq!(
        r.status,
        200,
        "stale chunks after the last: {}",
        r.summary()
    );
    // The intact jar still works.
    let r = b.get(&env.url(PAGE), &[]);
    assert_eq!(r.status, 200);
    env.assert_error_log_is_clean();
}

#[test]
fn non_utf8_and_control_bytes_in_cookies_are_no_session() {
    let env = Env::start();
    let b = logged_in(&env, PAGE, "demo");
    let session = b.jar.get("_oidc").unwrap();
    let cookies: Vec<Vec<u8>> = vec![
        b"_oidc=v1.\xff\xfe\xfd".to_vec(),
        b"_oidc=\xc3\x28; other=1".to_vec(),
        b"\xff\xff=\xff; _oidc=v1.abc".to_vec(),
        b"_oidc=v1.\x01\x02\x7f".to_vec(),
        [b"_oidc=", session.as_bytes(), b"\xff"].concat(),
        [b"_oidc=\xe2\x80\xae", session.as_bytes()].concat(),
        b"_oidc".to_vec(),
        b"=;=;;;_oidc=;".to_vec(),
        b";;;;".to_vec(),
        b"_oidc=\"v1.abc\"".to_vec(),
    ];
    for c in &cookies {
        let (status, text) = raw_get_with_cookie(env.port, PAGE, c);
        assert!(
            matches!(status, 302 | 400),
            "Cookie {:?}: {status}\n{}",
            String::from_utf8_lossy(c),
            &text[..text.len().min(300)]
        );
    }
    // Our valid cookie next to a non-UTF-8 neighbour still opens.
    let c = [b"bad=\xff\xfe; _oidc=", session.as_bytes()].concat();
    let (status, _) = raw_get_with_cookie(env.port, PAGE, &c);
    assert_eq!(status, 200);
    env.assert_error_log_is_clean();
}

/// Two providers sharing one key file, with different names and cookie names; a third with
/// the cookie name of the first.
const TWO_PROVIDERS: &str = r#"
    oidc_provider one {
        issuer             @ISSUER@;
        client_id          test;
        client_secret      @CLIENT_SECRET@;
        cookie_secret_file @KEYS@;
        cookie_secure      off;
        cookie_name        _one;
    }
    oidc_provider two {
        issuer             @ISSUER@;
        client_id          test;
        client_secret      @CLIENT_SECRET@;
        cookie_secret_file @KEYS@;
        cookie_secure      off;
        cookie_name        _two;
        redirect_uri       /two/oauth2/callback;
    }
    oidc_provider three {
        issuer             @ISSUER@;
        client_id          test;
        client_secret      @CLIENT_SECRET@;
        cookie_secret_file @KEYS@;
        cookie_secure      off;
        cookie_name        _one;
        redirect_uri       /three/oauth2/callback;
    }
    server {
        listen 127.0.0.1:@PORT@;
        location /_oidc { internal; proxy_pass $oidc_fetch_url; }
        location /oauth2/ { oidc_endpoints one; }
        location /two/oauth2/ { oidc_endpoints two; }
        location /three/oauth2/ { oidc_endpoints three; }
        location /two/ { oidc_auth two; proxy_pass http://127.0.0.1:@UPSTREAM@; }
        location /three/ { oidc_auth three; proxy_pass http://127.0.0.1:@UPSTREAM@; }
        location / { oidc_auth one; proxy_pass http://127.0.0.1:@UPSTREAM@; }
    }
"#;

#[test]
fn a_cookie_of_another_provider_or_cookie_name_does_not_log_in() {
    let env = Env::start_with(EnvOptions {
        http: TWO_PROVIDERS.to_string(),
        ..Default::default()
    });
    let mut b = env.browser();
    let r = b.login(&env.url(PAGE), "demo", "demo");
    assert_eq!(r.status, 200, "{}", b.transcript());
    let value = b.jar.get("_one").expect("provider one's session cookie");

    // The same sealed value under provider two's cookie name, at provider two.
    let mut t = Browser::new();
    t.jar.set("_two", &value);
    let r = t.get(&env.url("/two/page"), &[]);
    assert_sent_to_login(&env, &r, "");

    // The same cookie name, but provider three: the AAD names the provider too.
    let mut t = Browser::new();
    t.jar.set("_one", &value);
    let r = t.get(&env.url("/three/page"), &[]);
    assert_sent_to_login(&env, &r, "");

    // And it still works where it belongs (the refusals above deleted `t`'s copy).
    let mut t = Browser::new();
    t.jar.set("_one", &value);
    let r = t.get(&env.url("/one/page"), &[]);
    assert_eq!(r.status, 200, "{}", t.transcript());
    env.assert_error_log_is_clean();
}

#[test]
fn a_cookie_sealed_with_a_retired_key_goes_to_login_and_login_works_again() {
    let mut env = Env::start();
    let mut b = logged_in(&env, PAGE, "demo");
    env.set_cookie_keys(&[new_cookie_key()]);
    let r = b.get(&env.url(PAGE), &[]);
    assert_sent_to_login(&env, &r, "");
    let r = b.get(&env.url(PAGE), &[("Accept", "application/json")]);
    assert_eq!(r.status, 401, "an API request with a retired cookie");
    // Logging in again with the old cookie still in the jar.
    let r = b.login(&env.url(PAGE), "demo", "demo");
    assert_eq!(r.status, 200, "{}", b.transcript());
    assert_eq!(
        r.upstream_header("x-auth-request-user").as_deref(),
        Some("demo")
    );
    env.assert_error_log_is_clean();
}

#[test]
fn a_cookie_replayed_after_sign_out_does_not_log_in() {
    let env = Env::start();
    let mut b = logged_in(&env, PAGE, "demo");
    let jar = b.jar.clone();
    let r = b.get(&env.url("/oauth2/sign_out"), &[]);
    assert!(r.status < 500, "{}", r.summary());
    let mut replay = Browser::new();
    replay.jar = jar;
    let r = replay.get(&env.url(PAGE), &[]);
    assert_sent_to_login(&env, &r, "");
    env.assert_error_log_is_clean();
}

// ---------------------------------------------------------------------------- callbacks

#[test]
fn a_callback_with_missing_duplicate_or_huge_parameters_gets_4xx() {
    // Room for a 10 KB code in the request line, so that the module sees it (with the default
    // 8k buffers nginx answers 414 itself and logs the request line, `code=` included).
    let env = env_with_big_header_buffers();
    let mut b = env.browser();
    let callback = b.authorize(&env.url(PAGE), "demo", "demo").unwrap();
    let code = query_param(&callback, "code").unwrap();
    let state = query_param(&callback, "state").unwrap();
    let huge = "c".repeat(10 * 1024);
    let queries = [
        String::new(),
        "?".into(),
        format!("?code={code}"),
        format!("?state={state}"),
        format!("?code=&state={state}"),
        format!("?code={code}&state="),
        format!("?code={code}&code={code}&state={state}"),
        format!("?code={code}&state={state}&state={state}"),
        format!("?code={huge}&state={state}"),
        format!("?code={code}&state={huge}"),
        format!("?code=%ff%fe&state={state}"),
        format!("?code={code}&state=%00"),
        "?code=%&state=%zz".to_string(),
        format!("?error=&state={state}"),
        format!("?error=x&error=y&state={state}"),
        format!("?error={huge}&error_description={huge}&state={state}"),
        "?&&&==&=".into(),
    ];
    for q in &queries {
        let mut t = Browser::new();
        t.jar = b.jar.clone();
        let r = t.get(&env.url(&format!("/oauth2/callback{q}")), &[]);
        assert_refused(&t, &r);
    }
    // The state cookie survived all that: the real callback still logs in.
    let r = b.get(&callback, &[]);
    assert!(r.is_redirect(), "the real callback: {}", r.summary());
    assert!(!session_cookies_set(&r).is_empty());
    env.assert_error_log_is_clean();
}

#[test]
fn a_callback_with_another_browsers_state_is_refused_login_csrf() {
    let env = Env::start();
    // The attacker logs in at the provider as themselves and keeps the callback URL.
    let mut attacker = env.browser();
    let evil_callback = attacker.authorize(&env.url(PAGE), "demo", "demo").unwrap();
    // The victim has a login of their own in progress (their own state cookie).
    let mut victim = env.browser();
    let r = victim.get(&env.url(PAGE), &[]);
    assert_sent_to_login(&env, &r, "");
    // The victim is tricked into the attacker's callback.
    let r = victim.get(&evil_callback, &[]);
    assert_refused(&victim, &r);
    // Nor with the attacker's code and the victim's own state.
    let auth = victim.hops[0].location.clone().unwrap();
    let own_state = query_param(&auth, "state").unwrap();
    let mixed = with_query_param(&evil_callback, "state", &own_state);
    let r = victim.get(&mixed, &[]);
    assert_refused(&victim, &r);
    env.assert_error_log_is_clean();
}

// ---------------------------------------------------------------------------- return URLs

/// Return URLs that would send the browser off-site, as the decoded value of `rd`.
fn open_redirect_payloads(port: u16) -> Vec<String> {
    let mut p: Vec<String> = [
        // scheme-relative and absolute
        "//evil.com",
        "///evil.com",
        "////evil.com",
        "//evil.com/%2F..",
        "//evil.com#@127.0.0.1",
        "//evil.com\\@127.0.0.1",
        "//user:pass@evil.com",
        "https://evil.com",
        "http://evil.com/",
        "https:evil.com",
        "http:/evil.com",
        "HTTPS://EVIL.COM",
        "ftp://evil.com",
        "javascript:alert(1)",
        "JaVaScRiPt:alert(1)",
        "data:text/html,<script>alert(1)</script>",
        "http://127.0.0.1.evil.com/",
        "evil.com",
        "..//evil.com",
        // backslashes
        "/\\evil.com",
        "\\/evil.com",
        "\\\\evil.com",
        "/\\/evil.com",
        "/\\\\evil.com",
        // encoded once more (a proxy or framework may decode again)
        "/%2Fevil.com",
        "/%2f%2fevil.com",
        "%2F%2Fevil.com",
        "/%5Cevil.com",
        "/%5c%5cevil.com",
        "%5C%5Cevil.com",
        "/%2F%2Fevil.com",
        "/%09/evil.com",
        "/%00//evil.com",
        "https%3A%2F%2Fevil.com",
        // whitespace and CR/LF
        " //evil.com",
        "\t//evil.com",
        "/\t/evil.com",
        "/\n/evil.com",
        "/\r\nLocation: http://evil.com",
        "/%0d%0aLocation:%20http://evil.com",
        "/\r\nSet-Cookie: _oidc=x",
        "%0d%0a//evil.com",
        "/ /evil.com",
        // unicode
        "/\u{FF0F}evil.com",
        "\u{FF0F}\u{FF0F}evil.com",
        "/\u{FF3C}evil.com",
        "/\u{2215}evil.com",
        "//evil\u{3002}com",
        "/\u{3002}/evil.com",
        "/%5c/evil.com",
        "/\u{202E}moc.live//",
        "/\u{0085}/evil.com",
        "/\u{00A0}//evil.com",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // userinfo tricks naming this very site
    p.push(format!("http://127.0.0.1:{port}@evil.com/"));
    p.push(format!("//127.0.0.1:{port}@evil.com"));
    p.push(format!("http://evil.com#127.0.0.1:{port}"));
    p
}

#[test]
fn sign_in_refuses_forty_plus_open_redirect_payloads_with_400() {
    let env = Env::start();
    let payloads = open_redirect_payloads(env.port);
    assert!(payloads.len() >= 40);
    let mut accepted = Vec::new();
    for payload in &payloads {
        let rd = url::form_urlencoded::byte_serialize(payload.as_bytes()).collect::<String>();
        let mut b = env.browser();
        let r = b.get(&env.url(&format!("/oauth2/sign_in?rd={rd}")), &[]);
        assert_no_script(payload, &r);
        if r.status != 400 {
            accepted.push(format!("{payload:?} -> {}", r.summary()));
        }
    }
    assert!(
        accepted.is_empty(),
        "sign_in accepted {} of {} payloads:\n{}",
        accepted.len(),
        payloads.len(),
        accepted.join("\n")
    );
    // And a plain path still works.
    let mut b = env.browser();
    let r = b.get(&env.url("/oauth2/sign_in?rd=%2Fapp%2Fpage%3Fa%3D1"), &[]);
    assert_sent_to_login(&env, &r, "");
    env.assert_error_log_is_clean();
}

#[test]
fn error_pages_never_reflect_markup() {
    let env = Env::start();
    let xss = [
        "<script>alert(1)</script>",
        "\"><img src=x onerror=alert(1)>",
        "'><script>alert(1)</script>",
    ];
    for x in xss {
        let enc = url::form_urlencoded::byte_serialize(x.as_bytes()).collect::<String>();
        // A provider error with our own state: the module's error page.
        let mut b = env.browser();
        let r = b.get(&env.url(PAGE), &[]);
        assert_sent_to_login(&env, &r, "");
        let state = query_param(r.location().unwrap(), "state").unwrap();
        for q in [
            format!("error=access_denied&error_description={enc}&state={state}"),
            format!("error={enc}&error_description={enc}&state={state}"),
            format!("error={enc}&state=unknown"),
            format!("code={enc}&state={enc}"),
        ] {
            let r = b.get(&env.url(&format!("/oauth2/callback?{q}")), &[]);
            assert!((400..500).contains(&r.status), "{q}: {}", r.summary());
            assert_no_script(&q, &r);
        }
        // A return path carrying markup: refused or kept out of every body.
        for rd in [
            enc.clone(),
            format!("%2F{enc}"),
            format!("javascript:{enc}"),
        ] {
            let mut b = env.browser();
            let r = b.get(&env.url(&format!("/oauth2/sign_in?rd={rd}")), &[]);
            assert!(r.status < 500, "rd={rd}: {}", r.summary());
            assert_no_script(&rd, &r);
            let r = b.get(&env.url(&format!("/oauth2/sign_out?rd={rd}")), &[]);
            assert!(r.status < 500, "sign_out rd={rd}: {}", r.summary());
            assert_no_script(&rd, &r);
        }
        // Markup in the path and query of a protected page.
        let r = b.get(
            &env.url(&format!("/{enc}?q={enc}")),
            &[("Accept", "application/json")],
        );
        assert_no_script("a protected page", &r);
    }
    env.assert_error_log_is_clean();
}

// ---------------------------------------------------------------------------- spoofed headers

const SPOOFED: &[(&str, &str)] = &[
    ("X-Auth-Request-User", "admin"),
    ("x-auth-request-email", "admin@evil.com"),
    ("X-AUTH-REQUEST-GROUPS", "/admins"),
    ("X-Auth-Request-Preferred-Username", "admin"),
    ("X-Auth-Request-Access-Token", "forged"),
    ("X-Auth-Request-Anything", "forged"),
];

#[test]
fn spoofed_x_auth_request_headers_never_reach_the_upstream() {
    let env = Env::start();
    // Public location, no session.
    let mut b = env.browser();
    let r = b.get(&env.url("/public/x"), SPOOFED);
    assert_eq!(r.status, 200, "{}", r.summary());
    let headers = r.json()["headers"].clone();
    for (k, _) in SPOOFED {
        assert!(
            headers.get(k.to_ascii_lowercase()).is_none(),
            "/public/ passed {k} upstream: {headers}"
        );
    }
    // Protected location with a session: the module's values only, none of the forged.
    let mut b = logged_in(&env, PAGE, "demo");
    let r = b.get(&env.url(PAGE), SPOOFED);
    assert_eq!(r.status, 200, "{}", r.summary());
    let headers = r.json()["headers"].clone();
    assert_eq!(headers["x-auth-request-user"], "demo", "{headers}");
    let all = headers.to_string();
    for bad in ["admin", "forged", "/admins", "evil.com"] {
        assert!(!all.contains(bad), "the upstream saw {bad:?}: {headers}");
    }
    // Public location with a session too.
    let r = b.get(&env.url("/public/x"), SPOOFED);
    let all = r.json()["headers"].to_string();
    for bad in ["admin", "forged", "/admins", "evil.com"] {
        assert!(
            !all.contains(bad),
            "/public/ with a session: the upstream saw {bad:?}: {all}"
        );
    }
    // Repeated and raw headers, past ureq.
    let head = "GET /public/y HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
         X-Auth-Request-User: spoof-1\r\nX-Auth-Request-User: spoof-2\r\n\
         x-auth-request-user:spoof-3\r\nX-Auth-Request-User : spoof-4\r\n\r\n";
    let (status, text) = raw_request(env.port, head.as_bytes());
    assert!(status == 200 || status == 400, "{status}");
    if status == 200 {
        let body = &text[text.find("\r\n\r\n").unwrap() + 4..];
        assert!(!body.contains("spoof-"), "{body}");
    }
    env.assert_error_log_is_clean();
}

// ---------------------------------------------------------------------------- faults

#[test]
fn a_frozen_provider_does_not_delay_a_logged_in_user() {
    let env = Env::start();
    let user = logged_in(&env, PAGE, "demo");
    // A second user's login, frozen between the provider's redirect and the token exchange.
    let mut other = env.browser();
    let callback = other.authorize(&env.url(PAGE), "alice", "alice").unwrap();
    env.provider.pause();
    let already_open = env.provider.open_connections();
    let stuck_jar = other.jar.clone();
    let stuck = thread::spawn(move || {
        let mut b = Browser::new();
        b.jar = stuck_jar;
        let started = Instant::now();
        let r = b.get(&callback, &[]);
        (r.status, started.elapsed())
    });
    wait_for(
        "the callback's token request to reach the frozen provider",
        Duration::from_secs(10),
        || (env.provider.open_connections() > already_open).then_some(()),
    );
    assert!(
        !stuck.is_finished(),
        "the callback did not wait for the frozen provider"
    );
    // Each request on a new connection, so that both workers (the one holding the stuck
    // callback too) answer some of them.
    let mut worst = Duration::ZERO;
    for i in 0..20 {
        let mut t = Browser::new();
        t.jar = user.jar.clone();
        let started = Instant::now();
        let r = t.get(&env.url(&format!("/page/{i}")), &[]);
        worst = worst.max(started.elapsed());
        let started = Instant::now();
        let r2 = Browser::new().get(&env.url("/public/x"), &[]);
        worst = worst.max(started.elapsed());
        assert_eq!(r.status, 200, "{}", r.summary());
        assert_eq!(r2.status, 200);
    }
    eprintln!("slowest logged-in request while the provider was frozen: {worst:?}");
    assert!(
        worst < Duration::from_secs(1),
        "slowest logged-in request: {worst:?}"
    );
    env.provider.resume();
    let (status, took) = stuck.join().unwrap();
    eprintln!("the stuck callback answered {status} after {took:?}");
    assert!(
        status < 500 || status == 502 || status == 503 || status == 504,
        "{status}"
    );
    env.assert_error_log_is_clean();
}

/// Sum of a `/proc/PID/status` field (in KiB) over nginx's workers.
fn workers_kib(env: &Env, field: &str) -> u64 {
    let master = env.nginx.master_pid().expect("nginx is running");
    let children = std::fs::read_to_string(format!("/proc/{master}/task/{master}/children"))
        .unwrap_or_default();
    children
        .split_whitespace()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/status")).ok())
        .filter_map(|st| {
            st.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .sum()
}

#[test]
fn callbacks_waiting_on_a_frozen_provider_cost_little_memory() {
    // Anyone can start a login and post a made-up code with its state: each such callback
    // holds a provider call open for as long as the provider takes.
    let n = 300;
    // Each held callback is two connections in one worker (the browser's and the one to the
    // provider), and nothing spreads them over the 2 workers: one may take all of them. On
    // top: the listening socket and the `n` login starts' connections that the worker may not
    // have seen closed yet. The default 512 made this an `[alert] worker_connections are not
    // enough` whenever the kernel handed most of the callbacks to one worker.
    let env = Env::start_with(EnvOptions {
        worker_connections: 3 * n + 16,
        ..Default::default()
    });
    let callback_url = url::Url::parse(&env.url("/oauth2/callback")).unwrap();
    let starts: Vec<(String, String)> = (0..n)
        .map(|i| {
            let mut b = env.browser();
            let r = b.get(&env.url(&format!("/p{i}")), &[]);
            assert_sent_to_login(&env, &r, "");
            let state = query_param(r.location().unwrap(), "state").expect("state");
            let cookie = b.jar.header_for(&callback_url).expect("login-state cookie");
            (state, cookie)
        })
        .collect();
    env.provider.pause();
    let already_open = env.provider.open_connections();
    let before = workers_kib(&env, "VmSize:");
    // The provider names itself in its authorization responses (RFC 9207), so a made-up
    // callback carries its `iss` too, or it is refused before any provider call.
    let iss: String =
        url::form_urlencoded::byte_serialize(env.provider.issuer.as_bytes()).collect();
    let open: Vec<TcpStream> = starts
        .iter()
        .map(|(state, cookie)| {
            let mut s = TcpStream::connect(("127.0.0.1", env.port)).unwrap();
            write!(
                s,
                "GET /oauth2/callback?code=made-up&state={state}&iss={iss} HTTP/1.1\r\n\
                 Host: 127.0.0.1\r\nCookie: {cookie}\r\n\r\n"
            )
            .unwrap();
            s
        })
        .collect();
    // Every callback is waiting once its token request is in the frozen provider's accept
    // queue (300 fit: Node's listen backlog is 511).
    wait_for(
        "every callback's token request to reach the frozen provider",
        Duration::from_secs(30),
        || (env.provider.open_connections() >= already_open + n).then_some(()),
    );
    let grown = workers_kib(&env, "VmSize:").saturating_sub(before);
    env.provider.resume();
    drop(open);
    let each = grown / n as u64;
    eprintln!(
        "{n} callbacks waiting on a frozen provider: workers' address space +{grown} KiB ({each} KiB each)"
    );
    // A fixed 256 KiB answer buffer per call made this ~270 KiB each.
    assert!(each < 64, "+{grown} KiB for {n} waiting callbacks");
    env.assert_error_log_is_clean();
}

/// wrk script: counts answers that are a 200 carrying the user to the upstream (`ok`) and
/// everything else (`bad`), over all threads.
const WRK_SESSION_CHECK: &str = r#"
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) ok = 0; bad = 0 end
function response(status, headers, body)
  if status == 200 and body:find('"x-auth-request-user":"demo"', 1, true) then
    ok = ok + 1
  else
    bad = bad + 1
  end
end
function done(summary, latency, requests)
  local ok, bad = 0, 0
  for _, t in ipairs(threads) do ok = ok + t:get("ok"); bad = bad + t:get("bad") end
  local e = summary.errors
  io.write(string.format("WRKRESULT %d %d %d %d %d %d\n", ok, bad,
    e.connect, e.read, e.write, e.timeout))
end
"#;

#[test]
fn reloads_under_wrk_load_fail_no_request_and_keep_sessions_and_sign_outs() {
    let env = Env::start();
    let b = logged_in(&env, PAGE, "demo");
    let cookie = b
        .jar
        .header_for(&url::Url::parse(&env.url(PAGE)).unwrap())
        .unwrap();
    // A signed-out session lives on only as a revocation in the shared zone.
    let mut alice = logged_in(&env, PAGE, "alice");
    let stolen = alice.jar.get("_oidc").expect("session cookie");
    alice.get(&env.url("/oauth2/sign_out"), &[]);

    let script = env.dir.path.join("session-check.lua");
    std::fs::write(&script, WRK_SESSION_CHECK).unwrap();
    let wrk = |connection: &str| {
        std::process::Command::new("wrk")
            .args(["-t1", "-c8", "-d8s", "-s"])
            .arg(&script)
            .args([
                "-H",
                &format!("Cookie: {cookie}"),
                "-H",
                "Accept: text/html",
            ])
            .args(["-H", &format!("Connection: {connection}")])
            .arg(env.url(PAGE))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("wrk (apt-get install wrk; scripts/test.sh installs it)")
    };
    let keepalive = wrk("keep-alive");
    let close = wrk("close");
    thread::sleep(Duration::from_millis(1500));
    for _ in 0..3 {
        env.nginx.reload();
        thread::sleep(Duration::from_millis(1500));
    }
    let result = |child: std::process::Child| -> (u64, u64, Vec<u64>) {
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let n: Vec<u64> = text
            .lines()
            .find_map(|l| l.strip_prefix("WRKRESULT "))
            .unwrap_or_else(|| {
                panic!(
                    "no result from wrk: {text}{}",
                    String::from_utf8_lossy(&out.stderr)
                )
            })
            .split(' ')
            .map(|n| n.parse().unwrap())
            .collect();
        (n[0], n[1], n[2..].to_vec())
    };
    let (ka_ok, ka_bad, ka_err) = result(keepalive);
    let (cl_ok, cl_bad, cl_err) = result(close);
    eprintln!(
        "during 3 reloads: keep-alive {ka_ok} served, {ka_bad} other, socket errors \
         (connect/read/write/timeout) {ka_err:?}; new connection per request {cl_ok} served, \
         {cl_bad} other, socket errors {cl_err:?}"
    );
    assert!(
        ka_ok > 1000 && cl_ok > 200,
        "too few requests: {ka_ok}, {cl_ok}"
    );
    assert_eq!(
        ka_bad + cl_bad,
        0,
        "answers without the session during reloads"
    );
    assert_eq!(
        cl_err.iter().sum::<u64>(),
        0,
        "failed requests during reloads"
    );
    // An exiting worker closes its idle keep-alive connections; wrk counts a request it had
    // just written on one as a read error (browsers retry it). That is nginx's own reload
    // (plain nginx serving a file: 25 in the same run), a few per connection and reload (a
    // reconnect can land on a worker that is about to exit), and never a wrong answer.
    assert!(
        ka_err[0] + ka_err[2] + ka_err[3] == 0 && ka_err[1] <= 8 * 3 * 4,
        "keep-alive socket errors beyond the idle connections closed by reloads: {ka_err:?}"
    );

    assert_session_refused(&env, &stolen, "a session signed out before the reloads");
    env.assert_error_log_is_clean();
}

#[test]
fn a_new_first_key_and_a_reload_keep_old_sessions_and_seal_new_ones_with_the_new_key() {
    let env = Env::start();
    let mut old_user = logged_in(&env, PAGE, "demo");
    let old_key = env.cookie_keys[0].clone();
    let new_key = new_cookie_key();
    std::fs::write(&env.keys_file, format!("{new_key}\n{old_key}\n")).unwrap();
    env.nginx.reload();
    let r = old_user.get(&env.url(PAGE), &[]);
    assert_eq!(
        r.status,
        200,
        "the old session after rotation: {}",
        r.summary()
    );
    let mut new_user = logged_in(&env, PAGE, "demo");
    // Retire the old key: the new session still opens (it was sealed with the new key), the
    // old one does not.
    std::fs::write(&env.keys_file, format!("{new_key}\n")).unwrap();
    env.nginx.reload();
    let r = new_user.get(&env.url(PAGE), &[]);
    assert_eq!(
        r.status,
        200,
        "the new session after retiring the old key: {}",
        r.summary()
    );
    let r = old_user.get(&env.url(PAGE), &[]);
    assert_sent_to_login(&env, &r, "");
    env.assert_error_log_is_clean();
}
