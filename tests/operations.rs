//! What an operator runs next to the site: the Prometheus endpoint (`oidc_metrics`), the
//! Kubernetes probes (`/oauth2/ping`, `/oauth2/ready`) and an access log with `$oidc_user`.
//! The metrics text is read by the Prometheus project's own parser (prometheus_client, from
//! tests/python/requirements.txt; scripts/test.sh installs it into target/py).

mod common;

use std::collections::HashSet;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const PAGE: &str = "/app/page";

/// The contract config plus `location = /metrics { oidc_metrics; }` and an access log that
/// names the user and the worker (`$pid`) of every request.
fn metrics_http() -> String {
    let server = PROTECTED_SERVER.replace(
        "        location /public/",
        "        location = /metrics { oidc_metrics; }\n        location /public/",
    );
    format!(
        "log_format oidc '$pid $oidc_user \"$request\" $status';\n\
         access_log @DIR@/oidc-access.log oidc;\n{PROVIDER_BLOCK}{server}"
    )
}

fn env_with_metrics() -> Env {
    Env::start_with(EnvOptions {
        http: metrics_http(),
        ..Default::default()
    })
}

fn python() -> PathBuf {
    let p = std::env::var_os("NGX_OIDC_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(ROOT).join("target/py/bin/python"));
    assert!(
        p.is_file(),
        "{} not found: run `bash -c '. scripts/lib.sh; ensure_python_deps'` (scripts/test.sh does)",
        p.display()
    );
    p
}

/// The metric families of `text` as prometheus_client's parser reads them; panics with the
/// parser's message when it does not accept the text.
fn parse_metrics(text: &str) -> Vec<Value> {
    let mut child = Command::new(python())
        .arg(PathBuf::from(ROOT).join("tests/python/parse_metrics.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the metrics parser");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "prometheus_client does not accept the metrics text: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<Value>(&out.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

/// One scrape of `/metrics`, checked for status and content type, parsed.
fn scrape(env: &Env) -> Vec<Value> {
    let r = Browser::new().get(&env.url("/metrics"), &[("Accept", "text/plain")]);
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.header("content-type")
            .is_some_and(|t| t.starts_with("text/plain; version=0.0.4")),
        "content type {:?}",
        r.header("content-type")
    );
    parse_metrics(&r.body)
}

/// The value of the sample `name` with exactly `labels` (besides `provider="keycloak"`).
fn sample(families: &[Value], name: &str, labels: Value) -> f64 {
    let mut want = labels.as_object().unwrap().clone();
    want.insert("provider".into(), json!("keycloak"));
    families
        .iter()
        .flat_map(|f| f["samples"].as_array().unwrap())
        .find(|s| s["name"] == name && s["labels"].as_object() == Some(&want))
        .and_then(|s| s["value"].as_f64())
        .unwrap_or_else(|| panic!("no sample {name} {want:?}"))
}

/// `(pid, user, request, status)` of each line of the test's access log.
fn access_log(env: &Env) -> Vec<(String, String, String, u16)> {
    std::fs::read_to_string(env.dir.join("oidc-access.log"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (pid, rest) = l.split_once(' ')?;
            let (user, rest) = rest.split_once(' ')?;
            let (request, status) = rest.rsplit_once(' ')?;
            Some((
                pid.into(),
                user.into(),
                request.trim_matches('"').into(),
                status.parse().ok()?,
            ))
        })
        .collect()
}

#[test]
fn metrics_count_what_users_did_across_workers_and_survive_a_reload() {
    let env = env_with_metrics();
    let m = scrape(&env);
    // Every family is there before anything happened, typed as Prometheus expects.
    let kind = |name: &str| {
        m.iter()
            .find(|f| f["name"] == name)
            .map(|f| f["type"].as_str().unwrap().to_string())
    };
    assert_eq!(kind("ngx_oidc_logins").as_deref(), Some("counter"));
    assert_eq!(
        kind("ngx_oidc_provider_request_duration_seconds").as_deref(),
        Some("histogram")
    );
    assert_eq!(sample(&m, "ngx_oidc_logins_started_total", json!({})), 0.0);

    // An API call without a session, then a login, then the user's requests on fresh
    // connections until both workers have served one (each worker counts into the same zone).
    let anon = Browser::new().get(&env.url(PAGE), &[("Accept", "application/json")]);
    assert_eq!(anon.status, 401);
    let mut b = env.browser();
    b.login_ok(&env.url(PAGE), "demo");
    wait_for(
        "both workers to serve demo",
        Duration::from_secs(20),
        || {
            let mut fresh = Browser::new();
            fresh.jar = b.jar.clone();
            assert_eq!(fresh.get(&env.url("/app/more"), &[]).status, 200);
            let pids: HashSet<String> = access_log(&env)
                .into_iter()
                .filter(|(_, user, req, status)| {
                    user == "demo" && req.contains("/app/more") && *status == 200
                })
                .map(|(pid, ..)| pid)
                .collect();
            (pids.len() == 2).then_some(())
        },
    );
    let log = access_log(&env);
    let served = |user: &str, status: u16| {
        log.iter()
            .filter(|(_, u, r, s)| u == user && *s == status && r.starts_with("GET /app/"))
            .count() as f64
    };
    // The log_format recipe: the user on the session's requests, "-" without one.
    assert_eq!(served("-", 401), 1.0, "{log:?}");

    let m = scrape(&env);
    assert_eq!(sample(&m, "ngx_oidc_logins_started_total", json!({})), 1.0);
    assert_eq!(
        sample(&m, "ngx_oidc_logins_total", json!({"outcome": "completed"})),
        1.0
    );
    assert_eq!(
        sample(
            &m,
            "ngx_oidc_logins_total",
            json!({"outcome": "state_unknown"})
        ),
        0.0
    );
    // Every request with a session, whichever worker served it, is in the one count.
    assert_eq!(
        sample(&m, "ngx_oidc_sessions_total", json!({"status": "valid"})),
        served("demo", 200)
    );
    assert!(sample(&m, "ngx_oidc_sessions_total", json!({"status": "none"})) >= 2.0);
    // The login's provider calls: discovery, JWKS and the code exchange, each timed.
    let calls = |endpoint: &str| {
        sample(
            &m,
            "ngx_oidc_provider_request_duration_seconds_count",
            json!({"endpoint": endpoint}),
        )
    };
    assert!(calls("discovery") >= 1.0);
    assert!(calls("jwks") >= 1.0);
    assert_eq!(calls("token"), 1.0);
    assert_eq!(
        sample(
            &m,
            "ngx_oidc_provider_request_duration_seconds_bucket",
            json!({"endpoint": "token", "le": "+Inf"})
        ),
        1.0
    );
    assert_eq!(
        sample(
            &m,
            "ngx_oidc_provider_request_errors_total",
            json!({"endpoint": "token"})
        ),
        0.0
    );

    // A reload keeps the counts.
    let before = scrape(&env);
    env.nginx.reload();
    let after = scrape(&env);
    for (name, labels) in [
        ("ngx_oidc_logins_started_total", json!({})),
        ("ngx_oidc_logins_total", json!({"outcome": "completed"})),
        ("ngx_oidc_sessions_total", json!({"status": "valid"})),
        (
            "ngx_oidc_provider_request_duration_seconds_count",
            json!({"endpoint": "token"}),
        ),
    ] {
        assert_eq!(
            sample(&after, name, labels.clone()),
            sample(&before, name, labels.clone()),
            "{name} {labels} after the reload"
        );
    }
    assert_eq!(
        sample(&after, "ngx_oidc_logins_started_total", json!({})),
        1.0
    );

    // Only GET and HEAD.
    let r = Browser::new().post_form(&env.url("/metrics"), &[("a", "b")], &[]);
    assert_eq!(r.status, 405);
    env.assert_error_log_is_clean();
}

#[test]
fn refused_callbacks_bearer_tokens_and_sign_outs_are_counted_by_cause() {
    let env = Env::start_with(EnvOptions {
        http: metrics_http().replace("oidc_auth keycloak;", "oidc_auth keycloak; oidc_bearer on;"),
        ..Default::default()
    });
    // A callback whose state no browser started.
    let r = Browser::new().get(&env.url("/oauth2/callback?code=x&state=nosuch"), &[]);
    assert!(r.status >= 400, "{}", r.summary());
    // A garbage bearer token, and an ID token presented as one.
    let garbage = Browser::new().get(
        &env.url(PAGE),
        &[
            ("Authorization", "Bearer not.a.jwt"),
            ("Accept", "application/json"),
        ],
    );
    assert_eq!(garbage.status, 401);
    let mut b = env.browser();
    b.login_ok(&env.url(PAGE), "demo");
    let out = b.get(&env.url("/oauth2/sign_out?rd=/public/"), &[]);
    assert!(out.is_redirect(), "{}", out.summary());
    let id_token = out
        .location_url()
        .and_then(|u| {
            u.query_pairs()
                .find(|(k, _)| k == "id_token_hint")
                .map(|(_, v)| v.into_owned())
        })
        .expect("the sign-out carries the ID token as id_token_hint");
    let bearer = format!("Bearer {id_token}");
    let r = Browser::new().get(
        &env.url(PAGE),
        &[("Authorization", &bearer), ("Accept", "application/json")],
    );
    assert_eq!(r.status, 401);

    let m = scrape(&env);
    assert_eq!(
        sample(
            &m,
            "ngx_oidc_logins_total",
            json!({"outcome": "state_unknown"})
        ),
        1.0
    );
    assert_eq!(
        sample(
            &m,
            "ngx_oidc_bearer_tokens_total",
            json!({"outcome": "malformed"})
        ),
        1.0
    );
    assert_eq!(
        sample(
            &m,
            "ngx_oidc_bearer_tokens_total",
            json!({"outcome": "not_an_access_token"})
        ),
        1.0
    );
    assert_eq!(
        sample(
            &m,
            "ngx_oidc_revocations_total",
            json!({"source": "sign_out"})
        ),
        1.0
    );
}

/// A probe as the kubelet sends it: a GET on a fresh connection that gives up after 5 s.
fn probe(env: &Env, path: &str) -> Resp {
    let mut b = Browser::patient(Duration::from_secs(5), None);
    b.get(&env.url(path), &[("Accept", "*/*")])
}

#[test]
fn ready_is_503_while_the_provider_is_down_before_the_first_login_and_ping_is_200() {
    let mut env = Env::start();
    env.provider.kill();
    for _ in 0..4 {
        assert_eq!(probe(&env, "/oauth2/ping").status, 200);
        let r = probe(&env, "/oauth2/ready");
        assert_eq!(r.status, 503, "{}", r.body);
    }
}

#[test]
fn ready_turns_200_once_discovery_and_jwks_are_cached_and_stays_200_when_the_provider_stops() {
    let env = env_with_metrics();
    env.provider.fault("discovery", "500");
    assert_eq!(probe(&env, "/oauth2/ready").status, 503);
    env.provider.clear_faults();
    // The probe itself fetches the documents: no login is needed for a pod to become ready.
    let r = probe(&env, "/oauth2/ready");
    assert_eq!(r.status, 200, "{}", r.body);

    // The provider freezes: every worker answers both probes at once, without calling it
    // (the probe client gives up after 5 s).
    env.provider.pause();
    wait_for(
        "both workers to answer ready",
        Duration::from_secs(20),
        || {
            for path in ["/oauth2/ready", "/oauth2/ping"] {
                let r = probe(&env, path);
                assert_eq!(
                    r.status, 200,
                    "{path} while the provider is frozen: {}",
                    r.body
                );
            }
            let pids: HashSet<String> = access_log(&env)
                .into_iter()
                .filter(|(_, _, req, status)| req.contains("/oauth2/ready") && *status == 200)
                .map(|(pid, ..)| pid)
                .collect();
            (pids.len() == 2).then_some(())
        },
    );
    env.provider.resume();
}

#[test]
fn oidc_metrics_mistakes_fail_nginx_t_naming_the_directive() {
    let key = format!("{}\n", new_cookie_key());
    let test = |config: &str| nginx_t(config, &offline_config_vars(), &[("keys", &key)], true);
    let good = test(&metrics_http());
    assert!(good.ok, "{}\n{}", good.stderr, good.config);
    let with = |from: &str, to: &str| {
        let c = metrics_http();
        assert!(c.contains(from));
        c.replace(from, to)
    };
    let cases = [
        (
            with("oidc_metrics;", "oidc_metrics on;"),
            "invalid number of arguments in \"oidc_metrics\"",
        ),
        (
            with("oidc_metrics;", "oidc_metrics; oidc_metrics;"),
            "oidc_metrics is duplicate",
        ),
        (
            with(
                "oidc_endpoints keycloak;",
                "oidc_endpoints keycloak; oidc_metrics;",
            ),
            "oidc_metrics and oidc_endpoints cannot share a location",
        ),
        (
            with(
                "location = /metrics { oidc_metrics; }",
                "location = /metrics { oidc_metrics; oidc_endpoints keycloak; }",
            ),
            "oidc_metrics and oidc_endpoints cannot share a location",
        ),
        (
            format!("oidc_metrics;\n{}", metrics_http()),
            "\"oidc_metrics\" directive is not allowed here",
        ),
    ];
    let mut failures = Vec::new();
    for (config, says) in &cases {
        let t = test(config);
        if t.ok {
            failures.push(format!("{says}: nginx -t passed"));
        } else if !t.stderr.contains(says) {
            failures.push(format!("{says}: {}", t.stderr.trim()));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn one_refresh_shared_by_concurrent_requests_counts_done_once_and_waited_for_the_others() {
    let env = Env::start_with(EnvOptions {
        http: metrics_http().replace(
            "cookie_secure      off;",
            "cookie_secure      off;\n        refresh_leeway     1s;",
        ),
        // 5 s: the login's own last request cannot find it due (see tests/lifecycle.rs).
        ..EnvOptions::default().token_ttls(5, 5, 600)
    });
    let mut b = env.browser();
    b.login_ok(&env.url(PAGE), "demo");
    let cookie = b
        .jar
        .header_for(&url::Url::parse(&env.url(PAGE)).unwrap())
        .unwrap();
    // The access token expires (at most 4 s after the login): every request now needs the
    // refreshed one.
    std::thread::sleep(Duration::from_millis(4500));
    let results = concurrent_gets(&env.url(PAGE), &cookie, 8);
    assert!(results.iter().all(|(s, _)| *s == 200), "{results:?}");
    let m = scrape(&env);
    let refreshes =
        |outcome: &str| sample(&m, "ngx_oidc_refreshes_total", json!({"outcome": outcome}));
    assert_eq!(refreshes("done"), 1.0);
    assert_eq!(refreshes("waited"), 7.0);
    assert_eq!(refreshes("failed"), 0.0);
    assert_eq!(
        sample(
            &m,
            "ngx_oidc_provider_request_duration_seconds_count",
            json!({"endpoint": "refresh"})
        ),
        1.0
    );

    // The provider ends the login: the next refresh says so, and the session is over.
    env.provider.revoke_grants();
    std::thread::sleep(Duration::from_millis(4500));
    let r = b.get(&env.url(PAGE), &[("Accept", "application/json")]);
    assert_eq!(r.status, 401, "{}", r.summary());
    let m = scrape(&env);
    assert_eq!(
        sample(&m, "ngx_oidc_refreshes_total", json!({"outcome": "ended"})),
        1.0
    );
}
