//! End-to-end: provider faults during login. The provider's token endpoint, discovery document
//! or JWKS answers with a 500, invalid JSON or a 10 MB body; a fresh browser's login then ends in
//! a clear 502/503 page (never a 500, never a hang), a logged-in browser keeps getting 200, the
//! error log names the cause, and once the fault is cleared login works again.

mod common;

use std::time::{Duration, Instant};

use common::*;

const PAGE: &str = "/some/page?x=1";

/// One GET with the browser's cookies over a fresh connection, no retry (a callback must not be
/// replayed). Status 0 = nginx closed the connection without an answer.
fn once(b: &Browser, url: &str) -> Resp {
    let u = url::Url::parse(url).unwrap();
    let path = &url[common::origin(&u).len()..];
    let mut head = format!(
        "GET {path} HTTP/1.1\r\nHost: {}:{}\r\nAccept: text/html\r\nConnection: close\r\n",
        u.host_str().unwrap(),
        u.port().unwrap()
    );
    if let Some(c) = b.jar.header_for(&u) {
        head.push_str(&format!("Cookie: {c}\r\n"));
    }
    head.push_str("\r\n");
    let (status, text) = raw_request(u.port().unwrap(), head.as_bytes());
    let body = text
        .split_once("\r\n\r\n")
        .map(|x| x.1.to_string())
        .unwrap_or_default();
    Resp {
        method: "GET".into(),
        url: url.into(),
        status,
        headers: Vec::new(),
        body,
    }
}

/// A clear "login is unavailable" page: 502 or 503, HTML, in time.
fn assert_clear_failure(what: &str, kind: &str, r: &Resp, took: Duration) {
    assert!(
        r.status != 0,
        "{what}/{kind}: nginx closed the connection without an answer (see error.log)"
    );
    assert!(
        matches!(r.status, 502 | 503),
        "{what}/{kind}: expected 502/503, got {}\n{}",
        r.summary(),
        &r.body[..r.body.len().min(600)]
    );
    assert!(
        r.body.contains("unavailable") || r.body.contains("identity provider"),
        "{what}/{kind}: the error page does not say what happened:\n{}",
        &r.body[..r.body.len().min(600)]
    );
    assert!(
        took < Duration::from_secs(10),
        "{what}/{kind}: took {took:?}"
    );
}

/// The logged-in browser still reaches the upstream.
fn assert_still_served(what: &str, kind: &str, b: &mut Browser) {
    for _ in 0..3 {
        let r = b.get(&format!("http://127.0.0.1:{}{PAGE}", port_of(b)), &[]);
        assert_eq!(
            r.status,
            200,
            "{what}/{kind}: a logged-in browser got {}",
            r.summary()
        );
    }
}

fn port_of(b: &Browser) -> u16 {
    // The first hop of a logged-in browser is the protected page on nginx.
    let u = url::Url::parse(&b.hops[0].url).unwrap();
    u.port().unwrap()
}

/// The error log's line naming the cause (`needle`), after `from` bytes.
fn cause_line(env: &Env, from: usize, needle: &str) -> Option<String> {
    let log = env.error_log();
    log.get(from..)
        .unwrap_or("")
        .lines()
        .find(|l| l.contains(needle))
        .map(str::to_string)
}

fn fault_story(what: &str, kind: &str) {
    let mut env = Env::start();
    let mut alice = logged_in(&env, PAGE, "alice");

    // Discovery and JWKS are cached per worker: start from empty caches so that the next
    // login must fetch them from the faulty provider.
    if what != "token" {
        env.restart_nginx();
    }
    assert_still_served(what, kind, &mut alice);
    env.provider.fault(what, kind);
    let log_start = env.error_log().len();

    let mut fresh = env.browser();
    let started = Instant::now();
    let r = if what == "discovery" {
        // The redirect to the provider needs the discovery document.
        once(&fresh, &env.url(PAGE))
    } else {
        let callback = fresh
            .authorize(&env.url(PAGE), "demo", "demo")
            .unwrap_or_else(|r| panic!("{what}/{kind}: authorize stopped at {}", r.summary()));
        once(&fresh, &callback)
    };
    let took = started.elapsed();
    assert_clear_failure(what, kind, &r, took);

    // Other browsers are not held up, and logged-in ones keep working during the fault.
    assert_still_served(what, kind, &mut alice);
    // A second failing login (the other worker or a retry) is just as clear.
    let mut again = env.browser();
    let started = Instant::now();
    let r2 = if what == "discovery" {
        once(&again, &env.url(PAGE))
    } else {
        let callback = again.authorize(&env.url(PAGE), "demo", "demo").unwrap();
        once(&again, &callback)
    };
    assert_clear_failure(what, kind, &r2, started.elapsed());

    let needle = match what {
        "discovery" => "discovery from",
        "token" => "code exchange failed",
        _ => "JWKS from",
    };
    let line = cause_line(&env, log_start, needle).unwrap_or_else(|| {
        panic!(
            "{what}/{kind}: no {needle:?} in error.log:\n{}",
            env.error_log().get(log_start..).unwrap_or("")
        )
    });
    eprintln!("{what}/{kind}: {} / error.log: {line}", r.status);

    env.provider.clear_faults();
    let mut b = logged_in(&env, PAGE, "demo");
    assert_still_served(what, kind, &mut b);
    assert_still_served(what, kind, &mut alice);
    env.assert_error_log_is_clean();
}

macro_rules! fault_tests {
    ($($name:ident: $what:expr, $kind:expr;)*) => {$(
        #[test]
        fn $name() {
            fault_story($what, $kind);
        }
    )*};
}

// "huge" is a 10 MB answer with a Content-Length, "hugechunked" one without: both are bigger
// than the module's 256 KiB fetch buffer, where nginx's own in-memory subrequest would fail with
// "too big subrequest response" and take the browser's connection down with it.
fault_tests! {
    token_endpoint_500_gives_a_clear_login_failure: "token", "500";
    token_endpoint_invalid_json_gives_a_clear_login_failure: "token", "badjson";
    token_endpoint_10mb_body_gives_a_clear_login_failure: "token", "huge";
    token_endpoint_10mb_chunked_body_gives_a_clear_login_failure: "token", "hugechunked";
    discovery_500_gives_a_clear_login_failure: "discovery", "500";
    discovery_invalid_json_gives_a_clear_login_failure: "discovery", "badjson";
    discovery_10mb_body_gives_a_clear_login_failure: "discovery", "huge";
    discovery_10mb_chunked_body_gives_a_clear_login_failure: "discovery", "hugechunked";
    jwks_500_gives_a_clear_login_failure: "jwks", "500";
    jwks_invalid_json_gives_a_clear_login_failure: "jwks", "badjson";
    jwks_10mb_body_gives_a_clear_login_failure: "jwks", "huge";
    jwks_10mb_chunked_body_gives_a_clear_login_failure: "jwks", "hugechunked";
}

#[test]
fn a_frozen_provider_fails_the_login_at_the_fetch_locations_timeout() {
    let opts = EnvOptions {
        http: format!(
            "{PROVIDER_BLOCK}{}",
            PROTECTED_SERVER.replace(
                "proxy_pass $oidc_fetch_url; }",
                "proxy_pass $oidc_fetch_url; proxy_read_timeout 2s; }"
            )
        ),
        ..Default::default()
    };
    let env = Env::start_with(opts);
    let mut alice = logged_in(&env, PAGE, "alice");
    let mut b = env.browser();
    let callback = b.authorize(&env.url(PAGE), "demo", "demo").unwrap();
    let log_start = env.error_log().len();

    env.provider.pause();
    let started = Instant::now();
    let r = once(&b, &callback);
    let took = started.elapsed();
    assert_still_served("token", "frozen", &mut alice);
    env.provider.resume();

    assert_clear_failure("token", "frozen", &r, took);
    assert!(
        took >= Duration::from_secs(2),
        "answered before proxy_read_timeout: {took:?}"
    );
    let line = cause_line(&env, log_start, "code exchange failed")
        .unwrap_or_else(|| panic!("no cause in error.log:\n{}", env.error_log()));
    assert!(
        env.error_log()[log_start..].contains("upstream timed out"),
        "{}",
        env.error_log()
    );
    eprintln!(
        "frozen provider: {} after {took:?} / error.log: {line}",
        r.status
    );
    env.assert_error_log_is_clean();
}
