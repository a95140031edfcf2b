//! End-to-end: values that broke other relying parties in the field (issue 13): claims with
//! line breaks and other control characters, cookies named like ours that are not ours, and
//! long deep links. A real nginx with the module, the test provider and an echo upstream.

mod common;

use common::*;
use serde_json::json;

const PAGE: &str = "/some/page?x=1";

/// The README's header encoding: bytes outside printable ASCII, and `%`, as `%XX`; in list
/// items `,` too.
fn encoded(value: &str, list: bool) -> String {
    value
        .bytes()
        .map(|b| {
            if (0x20..0x7f).contains(&b) && b != b'%' && !(list && b == b',') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The response's header lines named `name` (case-insensitive), from a raw HTTP answer.
fn raw_header_lines<'a>(raw: &'a str, name: &str) -> Vec<&'a str> {
    let head = &raw[..raw.find("\r\n\r\n").unwrap_or(raw.len())];
    let prefix = format!("{}:", name.to_ascii_lowercase());
    head.split('\n')
        .filter(|l| l.to_ascii_lowercase().starts_with(&prefix))
        .map(|l| l[prefix.len()..].trim())
        .collect()
}

/// `GET path` written byte for byte with the given `Cookie` headers (one per entry) and
/// `accept`.
fn raw_get(port: u16, path: &str, accept: &str, cookies: &[&str]) -> (u16, String) {
    let mut head = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: {accept}\r\n");
    for c in cookies {
        head.push_str(&format!("Cookie: {c}\r\n"));
    }
    head.push_str("Connection: close\r\n\r\n");
    raw_request(port, head.as_bytes())
}

// ------------------------------------------------------------------- 1. claims as header values

/// Claims of a user who put `bad` into every profile field that reaches a header.
fn claims_with(bad: &str) -> serde_json::Value {
    json!({
        "preferred_username": format!("mallory{bad}X-Auth-Request-User: admin"),
        "email": format!("mallory@example.com{bad}X-Auth-Request-User: admin"),
        "name": format!("Mallory{bad}X-Auth-Request-User: admin"),
        "groups": [format!("/users{bad}X-Auth-Request-Groups: /admins"), "/staff,/admins"],
    })
}

#[test]
fn claims_with_control_characters_reach_the_upstream_as_one_encoded_header_each() {
    let env = Env::start_with(EnvOptions::default().location_extra(
        "proxy_set_header X-User-Name $oidc_claim_name;\n\
         proxy_set_header X-User $oidc_user;\n\
         proxy_set_header X-User-Email $oidc_email;\n\
         proxy_set_header X-User-Groups $oidc_groups;",
    ));
    // CR LF (the field report), LF and CR alone, NUL, other C0 controls, DEL, and non-ASCII.
    for bad in [
        "\r\n", "\n", "\r", "\0", "\u{1}", "\t", "\u{b}", "\u{c}", "\u{1b}", "\u{1f}", "\u{7f}",
        "\u{85}", "\u{2028}", "é",
    ] {
        let claims = claims_with(bad);
        env.provider.set_claims("demo", &claims);
        let b = logged_in(&env, "/page", "demo");
        let seen = env.upstream.last().unwrap();
        let user = encoded(claims["preferred_username"].as_str().unwrap(), false);
        let email = encoded(claims["email"].as_str().unwrap(), false);
        let name = encoded(claims["name"].as_str().unwrap(), false);
        let groups = format!(
            "{},/staff%2C/admins",
            encoded(claims["groups"][0].as_str().unwrap(), true)
        );
        for (header, want) in [
            ("x-auth-request-user", &user),
            ("x-auth-request-preferred-username", &user),
            ("x-auth-request-email", &email),
            ("x-auth-request-groups", &groups),
            ("x-user-name", &name),
            ("x-user", &user),
            ("x-user-email", &email),
            ("x-user-groups", &groups),
        ] {
            assert_eq!(
                seen.all(header),
                [want.as_str()],
                "{bad:?}: the upstream's {header} lines: {:?}",
                seen.lines
            );
        }
        assert!(
            seen.lines
                .iter()
                .all(|(k, v)| { !k.contains(' ') && v.bytes().all(|b| (0x20..0x7f).contains(&b)) }),
            "{bad:?}: {:?}",
            seen.lines
        );

        // /oauth2/auth's 202 for auth_request setups: the same values, one line each.
        let cookie = b
            .jar
            .header_for(&url::Url::parse(&env.url("/")).unwrap())
            .unwrap();
        let (status, raw) = raw_get(env.port, "/oauth2/auth", "*/*", &[&cookie]);
        assert_eq!(status, 202, "{raw}");
        assert_eq!(
            raw_header_lines(&raw, "X-Auth-Request-User"),
            [user.as_str()],
            "{raw}"
        );
        assert_eq!(
            raw_header_lines(&raw, "X-Auth-Request-Email"),
            [email.as_str()],
            "{raw}"
        );
        assert_eq!(
            raw_header_lines(&raw, "X-Auth-Request-Groups"),
            [groups.as_str()],
            "{raw}"
        );

        // The JSON of /oauth2/userinfo escapes what a header cannot carry: the claims as sent.
        let (status, raw) = raw_get(env.port, "/oauth2/userinfo", "application/json", &[&cookie]);
        assert_eq!(status, 200, "{raw}");
        let body: serde_json::Value =
            serde_json::from_str(&raw[raw.find("\r\n\r\n").unwrap() + 4..]).unwrap();
        assert_eq!(body["email"], claims["email"], "{bad:?}");
        assert_eq!(body["groups"], claims["groups"], "{bad:?}");
    }
    env.assert_error_log_is_clean();
    let log = env.error_log();
    assert!(
        !log.lines()
            .any(|l| l.contains("X-Auth-Request-User: admin") && !l.contains("mallory%")),
        "a claim reached the log unencoded:\n{log}"
    );
}

// ------------------------------------------------------------------- 2. cookies chosen by name

/// The session cookie(s) of a logged-in browser, as `name=value` pairs.
fn session_pairs(b: &Browser) -> Vec<String> {
    let mut names = b.jar.names_where(is_session_cookie);
    names.sort();
    names
        .iter()
        .map(|n| format!("{n}={}", b.jar.get(n).unwrap()))
        .collect()
}

/// The answer deletes none of our cookies (no `Set-Cookie: _oidc...=; Max-Age=0`).
fn assert_no_deletion(raw: &str, what: &str) {
    let deleted: Vec<&str> = raw_header_lines(raw, "Set-Cookie")
        .into_iter()
        .filter(|l| l.starts_with("_oidc") && l.contains("Max-Age=0"))
        .collect();
    assert!(deleted.is_empty(), "{what}: deletes {deleted:?}\n{raw}");
}

#[test]
fn a_foreign_cookie_named_like_the_session_does_not_hide_it_in_either_order() {
    let env = Env::start();
    let b = logged_in(&env, "/page", "demo");
    let ours = session_pairs(&b).join("; ");
    let tampered = {
        let v = b.jar.get("_oidc").unwrap();
        let flip = if v.ends_with('A') { "B" } else { "A" };
        format!("_oidc={}{flip}", &v[..v.len() - 1])
    };
    for foreign in [
        "_oidc=something-else",
        "_oidc=v1.AAAA",
        tampered.as_str(),
        "_oidc=",
    ] {
        for cookies in [
            vec![format!("{foreign}; {ours}")],
            vec![format!("{ours}; a=1; {foreign}")],
            vec![foreign.to_string(), ours.clone()],
        ] {
            let refs: Vec<&str> = cookies.iter().map(String::as_str).collect();
            let (status, raw) = raw_get(env.port, PAGE, "text/html", &refs);
            assert_eq!(status, 200, "{cookies:?}: {raw}");
            assert_no_deletion(&raw, &format!("{cookies:?}"));
            let seen = env.upstream.last().unwrap();
            assert_eq!(seen.all("x-auth-request-user"), ["demo"]);
            // Our cookies, the foreign one included, never reach the upstream.
            assert!(!seen
                .headers
                .get("cookie")
                .is_some_and(|c| c.contains("_oidc")));
        }
    }
    env.assert_error_log_is_clean();
}

#[test]
fn foreign_chunk_cookies_do_not_hide_a_chunked_session() {
    // Room for a Cookie header of several chunks (nginx's default line buffer is 8 KB).
    let mut opts = EnvOptions::default();
    opts.http = format!("large_client_header_buffers 4 32k;\n{}", opts.http);
    let env = Env::start_with(opts);
    let b = logged_in(&env, PAGE, "chunky");
    let pairs = session_pairs(&b);
    assert!(
        pairs.len() >= 2,
        "chunky's session should span chunks: {pairs:?}"
    );
    let ours = pairs.join("; ");
    let full_foreign = format!("_oidc={}", "F".repeat(pairs[0].len() - 6));
    for cookies in [
        format!("_oidc_1=foreign; {ours}"),
        format!("{ours}; _oidc_1=foreign"),
        format!("_oidc=foreign; _oidc_1=foreign; {ours}"),
        format!("{full_foreign}; _oidc_1=foreign; {ours}"),
        format!("{ours}; _oidc_{}=stale", pairs.len()),
    ] {
        let (status, raw) = raw_get(env.port, PAGE, "text/html", &[&cookies]);
        assert_eq!(status, 200, "{}: {raw}", &cookies[..80]);
        assert_no_deletion(&raw, &cookies[..80]);
        assert_eq!(
            env.upstream.last().unwrap().all("x-auth-request-user"),
            ["chunky"]
        );
    }
    env.assert_error_log_is_clean();
}

#[test]
fn a_cookie_that_is_not_ours_is_never_deleted_and_the_log_says_why_there_is_no_session() {
    let env = Env::start();
    for (accept, want) in [("text/html", 302), ("application/json", 401)] {
        let (status, raw) = raw_get(env.port, PAGE, accept, &["_oidc=another-apps-session"]);
        assert_eq!(status, want, "{raw}");
        assert_no_deletion(&raw, accept);
    }
    let log = env.error_log();
    assert!(
        log.contains("1 cookie(s) named \"_oidc\" that do not open")
            && log.contains("set cookie_name"),
        "{log}"
    );
    // A session of ours that has ended (signed out) is still cleared.
    let mut b = logged_in(&env, "/page", "demo");
    let ours = session_pairs(&b).join("; ");
    b.get(&env.url("/oauth2/sign_out"), &[]);
    let (status, raw) = raw_get(
        env.port,
        PAGE,
        "text/html",
        &[&format!("_oidc=foreign; {ours}")],
    );
    assert_eq!(status, 302, "{raw}");
    assert_eq!(
        raw_header_lines(&raw, "Set-Cookie")
            .iter()
            .filter(|l| l.starts_with("_oidc=;") && l.contains("Max-Age=0"))
            .count(),
        1,
        "{raw}"
    );
    env.assert_error_log_is_clean();
}

#[test]
fn sign_out_deletes_only_the_cookies_it_proves_its_own() {
    let env = Env::start();
    let b = logged_in(&env, "/page", "demo");
    let ours = session_pairs(&b).join("; ");
    let (status, raw) = raw_get(
        env.port,
        "/oauth2/sign_out",
        "text/html",
        &[&format!(
            "_oidc_1=foreign; _oidc_st_abcdefghijkl=foreign; _oidc=foreign; {ours}"
        )],
    );
    assert_eq!(status, 302, "{raw}");
    let deleted: Vec<&str> = raw_header_lines(&raw, "Set-Cookie")
        .into_iter()
        .filter(|l| l.contains("Max-Age=0"))
        .map(|l| &l[..l.find('=').unwrap()])
        .collect();
    assert_eq!(deleted, ["_oidc"], "{raw}");
    env.assert_error_log_is_clean();
}

#[test]
fn a_refreshed_session_replaces_only_its_own_cookies() {
    // A one-chunk session next to another application's `_oidc_1` (Path=/app): the refresh
    // writes the new session and deletes no chunk it did not open.
    let mut opts = EnvOptions::default().token_ttls(2, 2, 600);
    opts.http = format!(
        "{}{PROTECTED_SERVER}",
        provider_block_with(&["refresh_leeway 1s;"])
    );
    let env = Env::start_with(opts);
    let mut b = env.browser();
    let app = url::Url::parse(&env.url("/app/")).unwrap();
    b.jar.store(&app, "_oidc_1=the-other-apps-value; Path=/app");
    let r = b.login(&env.url("/app/page"), "demo", "demo");
    assert_eq!(r.status, 200, "{}\n{}", r.summary(), b.transcript());
    let before = b.jar.get("_oidc").unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let refreshed = loop {
        let r = b.get(&env.url("/app/page"), &[]);
        assert_eq!(r.status, 200, "{}\n{}", r.summary(), b.transcript());
        assert_eq!(
            env.upstream.last().unwrap().all("x-auth-request-user"),
            ["demo"]
        );
        let set = r.set_cookies();
        assert!(set.iter().all(|c| !c.is_deletion()), "{}", b.transcript());
        if set.iter().any(|c| c.name == "_oidc") {
            break r;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no refresh within 15 s\n{}",
            b.transcript()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert_ne!(refreshed.set_cookie("_oidc").unwrap().value, before);
    let header = b
        .jar
        .header_for(&url::Url::parse(&env.url("/app/page")).unwrap());
    assert!(header.is_some_and(|h| h.starts_with("_oidc_1=the-other-apps-value; ")));
    env.assert_error_log_is_clean();
}

#[test]
fn a_login_state_cookie_sent_twice_still_completes_the_login() {
    let env = Env::start();
    let mut b = env.browser();
    let callback = b
        .authorize(&env.url(PAGE), "demo", "demo")
        .unwrap_or_else(|r| panic!("{}\n{}", r.summary(), b.transcript()));
    let state = b
        .jar
        .names_where(|n| n.starts_with("_oidc_st_"))
        .pop()
        .unwrap();
    let ours = format!("{state}={}", b.jar.get(&state).unwrap());
    let path = &callback[callback.find("/oauth2/").unwrap()..];
    let (status, raw) = raw_get(
        env.port,
        path,
        "text/html",
        &[&format!("{state}=v1.foreign; {ours}")],
    );
    assert_eq!(status, 302, "{raw}");
    assert_eq!(raw_header_lines(&raw, "Location"), [PAGE], "{raw}");
    assert!(
        raw_header_lines(&raw, "Set-Cookie")
            .iter()
            .any(|l| l.starts_with("_oidc=v1.")),
        "{raw}"
    );
    env.assert_error_log_is_clean();
}

#[test]
fn a_foreign_cookie_with_a_longer_path_does_not_make_login_start_over() {
    // The field report: another application on the site keeps `_oidc` at Path=/app, which the
    // browser sends before ours. Every page under /app logs in once and stays logged in.
    let env = Env::start();
    let mut b = env.browser();
    let app = url::Url::parse(&env.url("/app/")).unwrap();
    b.jar.store(&app, "_oidc=the-other-apps-value; Path=/app");
    let r = b.login(&env.url("/app/page"), "demo", "demo");
    assert_eq!(r.status, 200, "{}\n{}", r.summary(), b.transcript());
    assert_eq!(r.json()["path"], "/app/page");
    for _ in 0..4 {
        let r = b.get(&env.url("/app/page"), &[]);
        assert_eq!(r.status, 200, "{}\n{}", r.summary(), b.transcript());
        assert!(
            r.set_cookies().iter().all(|c| !c.is_deletion()),
            "{}",
            b.transcript()
        );
    }
    let header = b
        .jar
        .header_for(&url::Url::parse(&env.url("/app/page")).unwrap());
    assert!(
        header.is_some_and(|h| h.starts_with("_oidc=the-other-apps-value; ")),
        "the other application's cookie is left alone"
    );
    assert!(!env.error_log().contains("Login keeps starting over"));
    env.assert_error_log_is_clean();
}

// ------------------------------------------------------------------- 7. long return URLs

/// A Kibana-style deep link of about `len` bytes: a dashboard's state in rison.
fn kibana_link(len: usize) -> String {
    let mut rd = String::from(
        "/app/dashboards?_g=(filters:!(),refreshInterval:(pause:!t,value:0),\
         time:(from:now-7d,to:now))&_a=(panels:!(",
    );
    let mut i = 0;
    while rd.len() < len {
        rd.push_str(&format!(
            "(embeddableConfig:(vis:(legendOpen:!f)),gridData:(h:15,i:'{i}',w:24,x:0,y:{}),\
             panelIndex:'{i}',panelRefName:panel_{i},version:'8.11.0'),",
            i * 15
        ));
        i += 1;
    }
    rd.push_str("),query:(language:kuery,query:''))");
    rd
}

/// `path` as a browser sends it (WHATWG URL: `'` in a query becomes `%27`).
fn as_sent(path: &str, env: &Env) -> String {
    let u = url::Url::parse(&env.url(path)).unwrap();
    match u.query() {
        Some(q) => format!("{}?{q}", u.path()),
        None => u.path().to_string(),
    }
}

#[test]
fn a_deep_link_of_several_kilobytes_survives_the_login() {
    let env = Env::start();
    for len in [3000, 6000] {
        let link = as_sent(&kibana_link(len), &env);
        assert!(link.len() > len);
        let mut b = env.browser();
        let r = b.login(&env.url(&link), "demo", "demo");
        assert_eq!(r.status, 200, "{}\n{}", r.summary(), b.transcript());
        assert_eq!(r.json()["path"], link.as_str(), "{} bytes", link.len());
        let state = b
            .hops
            .iter()
            .find(|h| h.set_cookies.iter().any(|c| c.starts_with("_oidc_st_")));
        assert!(state.is_some(), "{}", b.transcript());
    }
    // A sign_in link with such a return URL lands there too.
    let link = kibana_link(3500);
    let rd = url::form_urlencoded::byte_serialize(link.as_bytes()).collect::<String>();
    let mut b = env.browser();
    let r = b.login(
        &env.url(&format!("/oauth2/sign_in?rd={rd}")),
        "demo",
        "demo",
    );
    assert_eq!(r.status, 200, "{}\n{}", r.summary(), b.transcript());
    assert_eq!(r.json()["path"], as_sent(&link, &env));
    assert!(
        !env.error_log().contains("return URL"),
        "{}",
        env.error_log()
    );
    env.assert_error_log_is_clean();
}

#[test]
fn a_return_url_too_big_for_the_state_cookie_is_logged_and_lands_on_its_path() {
    let env = Env::start();
    // Random text does not compress: 6000 bytes of it cannot fit a 4000-byte cookie.
    let noise = base64_url(&random_bytes(4500));
    let link = format!("/app/search?q={noise}");
    let mut b = env.browser();
    let r = b.login(&env.url(&link), "demo", "demo");
    assert_eq!(r.status, 200, "{}\n{}", r.summary(), b.transcript());
    assert_eq!(r.json()["path"], "/app/search");
    for sc in b.hops.iter().flat_map(|h| &h.set_cookies) {
        if let Some(bytes) = sc.strip_suffix("B)").and_then(|s| s.rsplit('(').next()) {
            assert!(bytes.parse::<usize>().unwrap() <= 4000, "{sc}");
        }
    }
    let log = env.error_log();
    let line = log
        .lines()
        .find(|l| l.contains("does not fit in the login-state cookie"))
        .unwrap_or_else(|| panic!("no log line says why:\n{log}"));
    assert!(
        line.contains("[warn]")
            && line.contains(&format!("the return URL ({} bytes)", link.len()))
            && line.contains("goes to /app/search instead"),
        "{line}"
    );
    // Without a query to drop, the site's root.
    let mut b = env.browser();
    let r = b.login(&env.url(&format!("/{noise}")), "demo", "demo");
    assert_eq!(r.status, 200, "{}\n{}", r.summary(), b.transcript());
    assert_eq!(r.json()["path"], "/");
    assert!(env.error_log().contains("goes to / instead"));
    env.assert_error_log_is_clean();
}

// ------------------------------------------------------------------- a Host that makes no URL

#[test]
fn a_host_that_makes_no_url_gets_a_bad_address_page_instead_of_a_login_redirect() {
    let env = Env::start();
    // nginx lets `<` through in Host; the redirect URI built from it would be no URL.
    let head = format!(
        "GET {PAGE} HTTP/1.1\r\nHost: app<x\r\nAccept: text/html\r\nConnection: close\r\n\r\n"
    );
    let (status, raw) = raw_request(env.port, head.as_bytes());
    assert_eq!(status, 400, "{raw}");
    assert!(raw.contains("Bad address"), "{raw}");
    assert!(!raw.to_ascii_lowercase().contains("\r\nlocation:"), "{raw}");
    // The usual address still starts a login.
    let (status, raw) = raw_get(env.port, PAGE, "text/html", &[]);
    assert_eq!(status, 302, "{raw}");
}
