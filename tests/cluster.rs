//! Several nginx nodes behave as one through Redis (`cluster_store`): two nginx masters with
//! one cookie key file, each with its own shared zone, and a real `redis-server` on 127.0.0.1.

mod common;

use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use common::cluster::{
    cluster_provider_block, redis_dir, time_until, Dns, Redis, RedisCerts, RedisOptions, RedisTls,
    TwoNodes,
};
use common::*;

const PAGE: &str = "/app/page";

fn json() -> (&'static str, &'static str) {
    ("Accept", "application/json")
}

/// The status `cookie` (a whole `Cookie` header) gets for [`PAGE`] at `url`.
fn status_with(url: &str, cookie: &str) -> u16 {
    Browser::new()
        .get(url, &[json(), ("Cookie", cookie)])
        .status
}

fn session_cookie(b: &Browser) -> String {
    format!("_oidc={}", b.jar.get("_oidc").expect("a session cookie"))
}

/// Two linked nodes and `demo` logged in on node A, the session working on both.
fn logged_in_on_a(nodes: &TwoNodes) -> (Browser, String) {
    nodes.wait_linked();
    let b = logged_in(&nodes.env, PAGE, "demo");
    let cookie = session_cookie(&b);
    assert_eq!(status_with(&nodes.a(PAGE), &cookie), 200);
    assert_eq!(
        status_with(&nodes.b(PAGE), &cookie),
        200,
        "node B opens a session sealed by node A (one key file)"
    );
    (b, cookie)
}

#[test]
fn a_sign_out_on_node_a_ends_a_copied_session_on_node_b_within_a_second() {
    let nodes = TwoNodes::start(&[], EnvOptions::default());
    let (mut b, stolen) = logged_in_on_a(&nodes);

    let out = b.get(&nodes.a("/oauth2/sign_out"), &[]);
    assert_eq!(out.status, 302, "{}", out.summary());
    let signed_out = Instant::now();
    assert_eq!(status_with(&nodes.a(PAGE), &stolen), 401);
    let took = time_until(
        "node B refuses the copied cookie",
        Duration::from_secs(1),
        || status_with(&nodes.b(PAGE), &stolen) == 401,
    );
    eprintln!(
        "propagation: sign-out on A refused on B after {:?} (polled every 5 ms; {:?} since the \
         sign-out answer)",
        took,
        signed_out.elapsed()
    );
    // The refusal is what a browser notices; the revocation itself is in Redis, digested.
    let keys = nodes
        .redis
        .cli(&["--scan", "--pattern", "ngx-oidc:keycloak:rev:*"]);
    assert_eq!(keys.lines().count(), 1, "{keys}");
    let ttl: i64 = nodes
        .redis
        .cli(&["TTL", keys.trim()])
        .trim()
        .parse()
        .unwrap();
    assert!(
        ttl > 0,
        "a revocation expires with the session it ends (TTL {ttl})"
    );
    nodes.assert_error_logs_are_clean();
}

#[test]
fn a_back_channel_logout_delivered_to_node_a_ends_the_session_on_node_b() {
    let mut opts = EnvOptions::default();
    opts.provider.env.push((
        "IDP_BACKCHANNEL_LOGOUT_URI".into(),
        "http://127.0.0.1:@PORT@/oauth2/backchannel_logout".into(),
    ));
    let nodes = TwoNodes::start(&[], opts);
    let (mut b, cookie) = logged_in_on_a(&nodes);

    // The user logs out at the provider itself (not through nginx): the provider tells node A
    // over the back channel, and only node A.
    let issuer = nodes.env.provider.issuer.trim_end_matches('/').to_string();
    let confirm = b.get(&format!("{issuer}/protocol/openid-connect/logout"), &[]);
    let xsrf = confirm
        .body
        .split("name=\"xsrf\" value=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap_or_else(|| panic!("no logout form: {}", confirm.summary()))
        .to_string();
    let done = b.post_form(
        &format!("{issuer}/protocol/openid-connect/logout/confirm"),
        &[("xsrf", &xsrf), ("logout", "yes")],
        &[],
    );
    assert!(done.status < 400, "{}", done.summary());
    let took = time_until(
        "node B refuses the session the provider ended",
        Duration::from_secs(2),
        || status_with(&nodes.b(PAGE), &cookie) == 401,
    );
    eprintln!("propagation: back-channel logout on A refused on B after {took:?}");
    assert!(
        nodes
            .env
            .error_log()
            .contains("back-channel logout: a session ended at the provider"),
        "the logout token went to node A"
    );
    assert!(
        !nodes.b.error_log().contains("back-channel logout"),
        "node B never heard from the provider"
    );
    nodes.assert_error_logs_are_clean();
}

#[test]
fn a_back_channel_logout_by_sub_alone_ends_the_users_sessions_on_both_nodes_not_the_next_login() {
    let nodes = TwoNodes::start(&[], EnvOptions::default());
    let (_b, cookie) = logged_in_on_a(&nodes);

    // A client without "Backchannel logout session required": the logout token names the user
    // (`sub`), not the session.
    let mint = nodes
        .env
        .provider
        .url("/_test/mint?kind=logout&user=demo&sid=none");
    let token = ureq::post(&mint).call().unwrap().into_string().unwrap();
    assert!(!jwt_claims(&token).as_object().unwrap().contains_key("sid"));
    let r = Browser::new().post_form(
        &nodes.a("/oauth2/backchannel_logout"),
        &[("logout_token", &token)],
        &[],
    );
    assert_eq!(r.status, 200, "{}: {}", r.summary(), r.body);
    let took = time_until(
        "node B refuses the session of the logged-out user",
        Duration::from_secs(1),
        || status_with(&nodes.b(PAGE), &cookie) == 401,
    );
    eprintln!("propagation: back-channel logout by sub on A refused on B after {took:?}");
    assert_eq!(status_with(&nodes.a(PAGE), &cookie), 401);

    // The logout covers logins up to its second; the user's next login is a new session.
    thread::sleep(Duration::from_millis(1100));
    let again = logged_in(&nodes.env, PAGE, "demo");
    let fresh = session_cookie(&again);
    assert_eq!(status_with(&nodes.a(PAGE), &fresh), 200);
    assert_eq!(status_with(&nodes.b(PAGE), &fresh), 200);
    nodes.assert_error_logs_are_clean();
}

#[test]
fn a_restarted_node_still_refuses_sessions_revoked_before() {
    let mut nodes = TwoNodes::start(&[], EnvOptions::default());
    let (mut b, stolen) = logged_in_on_a(&nodes);
    signed_out_on_a_is_refused_on_b(&nodes, &mut b, &stolen);

    nodes.restart_b();
    // The load balancer sends traffic once the readiness probe says so: from then on the
    // restarted node has loaded every revocation, so the very first request is refused.
    let took = time_until(
        "the restarted node B is ready",
        Duration::from_secs(10),
        || status_with(&nodes.b("/oauth2/ready"), "") == 200,
    );
    eprintln!("restart: node B was ready {took:?} after it listened");
    assert_eq!(
        status_with(&nodes.b(PAGE), &stolen),
        401,
        "the first request after the restarted node became ready"
    );
    assert!(
        nodes
            .b
            .error_log()
            .contains("[emerg]")
            .then_some(())
            .is_none(),
        "{}",
        nodes.b.error_log()
    );
    nodes.assert_error_logs_are_clean();
}

#[test]
fn a_sign_out_during_a_redis_outage_reaches_the_other_node_once_redis_is_back() {
    let mut nodes = TwoNodes::start(&[], EnvOptions::default());
    let (mut b, stolen) = logged_in_on_a(&nodes);

    nodes.redis.stop();
    // Logged-in users notice nothing; sign-out still works on the node that gets it.
    assert_eq!(status_with(&nodes.b(PAGE), &stolen), 200);
    let out = b.get(&nodes.a("/oauth2/sign_out"), &[]);
    assert_eq!(out.status, 302, "{}", out.summary());
    assert_eq!(status_with(&nodes.a(PAGE), &stolen), 401);
    for _ in 0..50 {
        assert_eq!(status_with(&nodes.a("/public/x"), ""), 200);
    }
    // Kubernetes takes a node out of service while its revocations may be stale.
    time_until(
        "node A's readiness probe answers 503 while Redis is down",
        Duration::from_secs(10),
        || status_with(&nodes.a("/oauth2/ready"), "") == 503,
    );
    assert_eq!(status_with(&nodes.a("/oauth2/ping"), ""), 200);

    nodes.redis.start_again();
    let back = Instant::now();
    time_until(
        "node B refuses the cookie signed out during the outage",
        Duration::from_secs(10),
        || status_with(&nodes.b(PAGE), &stolen) == 401,
    );
    eprintln!(
        "outage: the queued sign-out reached node B {:?} after Redis was back",
        back.elapsed()
    );
    for (node, log) in [("A", nodes.env.error_log()), ("B", nodes.b.error_log())] {
        let warnings = log.matches("cluster store 127.0.0.1").count();
        let lost = log.matches("unreachable").count();
        assert!(
            (1..=2).contains(&lost),
            "node {node}: one warning per worker and outage, not one per attempt or request:\n{log}"
        );
        assert!(warnings >= lost, "{log}");
    }
    time_until(
        "node A's readiness probe answers 200 once Redis is back",
        Duration::from_secs(10),
        || status_with(&nodes.a("/oauth2/ready"), "") == 200,
    );
    time_until(
        "both nodes log that Redis is back",
        Duration::from_secs(10),
        || {
            nodes.env.error_log().contains("reachable again")
                && nodes.b.error_log().contains("reachable again")
        },
    );
    nodes.assert_error_logs_are_clean();
}

#[test]
fn logged_in_requests_send_no_command_to_redis() {
    let nodes = TwoNodes::start(&[], EnvOptions::default());
    let (_b, cookie) = logged_in_on_a(&nodes);
    nodes.redis.reset_stats();
    let n = 400;
    for i in 0..n {
        let url = if i % 2 == 0 {
            nodes.a(PAGE)
        } else {
            nodes.b(PAGE)
        };
        assert_eq!(status_with(&url, &cookie), 200);
    }
    let commands = nodes.redis.commands();
    let on_requests: Vec<_> = commands.iter().filter(|(c, _)| *c != "ping").collect();
    eprintln!("Redis commands during {n} logged-in requests over both nodes: {commands:?}");
    assert!(
        on_requests.is_empty(),
        "only the links' background PINGs, no command per request: {commands:?}"
    );
    nodes.assert_error_logs_are_clean();
}

fn refresh_grants(nodes: &TwoNodes) -> u64 {
    nodes.env.provider.stats()["token_requests"]["refresh_token"]
        .as_u64()
        .unwrap_or(0)
}

#[test]
fn thirty_two_requests_split_over_two_nodes_after_expiry_make_one_refresh_grant() {
    // Access tokens live 8 s (the refreshed one outlives the checks below), the provider
    // rotates refresh tokens (a reused one revokes the grant, as Keycloak with "Revoke Refresh
    // Token").
    let opts = EnvOptions::default().token_ttls(8, 8, 600);
    let nodes = TwoNodes::start(&["refresh_leeway 1s;"], opts);
    nodes.wait_linked();
    let mut b = logged_in(&nodes.env, PAGE, "demo");
    let cookie = session_cookie(&b);
    // Past the access token's end: every request below needs a refresh.
    thread::sleep(Duration::from_millis(8500));
    assert_eq!(refresh_grants(&nodes), 0);
    nodes.redis.reset_stats();

    let (a_url, b_url) = (nodes.a(PAGE), nodes.b(PAGE));
    let on_a = {
        let cookie = cookie.clone();
        thread::spawn(move || concurrent_gets(&a_url, &cookie, 16))
    };
    let on_b = {
        let cookie = cookie.clone();
        thread::spawn(move || concurrent_gets(&b_url, &cookie, 16))
    };
    let mut results = on_a.join().unwrap();
    results.extend(on_b.join().unwrap());
    for (status, user) in &results {
        assert_eq!(*status, 200, "results: {results:?}");
        assert_eq!(user.as_deref(), Some("demo"));
    }
    let grants = refresh_grants(&nodes);
    eprintln!(
        "split race: 32 requests (16 per node) -> {grants} refresh grant(s) at the provider; \
         Redis commands meanwhile: {:?}",
        nodes.redis.commands()
    );
    assert_eq!(grants, 1, "one refresh for the whole cluster");

    // The pre-refresh cookie still works on both nodes (it gets the refreshed session), and
    // the refreshed session lives on both.
    for url in [nodes.a(PAGE), nodes.b(PAGE)] {
        let r = b.get(&url, &[json()]);
        assert_eq!(r.status, 200, "{}", r.summary());
    }
    let refreshed = session_cookie(&b);
    assert_ne!(refreshed, cookie, "the browser got the refreshed session");
    assert_eq!(status_with(&nodes.a(PAGE), &refreshed), 200);
    assert_eq!(status_with(&nodes.b(PAGE), &refreshed), 200);
    assert_eq!(refresh_grants(&nodes), 1);
    let log = nodes.env.error_log() + &nodes.b.error_log();
    assert!(!log.contains("refresh refused"), "no failed grant:\n{log}");
    let stored = nodes
        .redis
        .cli(&["--scan", "--pattern", "ngx-oidc:keycloak:refresh:*"]);
    let value = nodes.redis.cli(&["GET", stored.trim()]);
    assert!(
        value.starts_with("v1.") && !value.contains("eyJ"),
        "the refreshed session is in Redis sealed, no token in the clear: {value:.40}"
    );
    nodes.assert_error_logs_are_clean();
}

#[test]
fn a_malformed_cluster_store_fails_nginx_t_naming_the_directive() {
    let vars = offline_config_vars();
    for (value, says) in [
        ("127.0.0.1:6379", "redis://"),
        ("redis://127.0.0.1", "host:port"),
        ("redis://:hunter2@127.0.0.1:6379/x", "database"),
    ] {
        let body = format!(
            "{}{PROTECTED_SERVER}",
            provider_block_with(&[&format!("cluster_store {value};")])
        );
        let t = nginx_t(&body, &vars, &[("keys", &new_cookie_key())], true);
        assert!(!t.ok, "nginx -t accepted cluster_store {value}");
        assert!(
            t.stderr.contains("cluster_store") && t.stderr.contains(says),
            "{}",
            t.stderr
        );
        assert!(!t.stderr.contains("hunter2"), "{}", t.stderr);
    }
    let body = format!(
        "{}{PROTECTED_SERVER}",
        provider_block_with(&["cluster_store redis://127.0.0.1:6379;"])
    );
    let t = nginx_t(&body, &vars, &[("keys", &new_cookie_key())], true);
    assert!(t.ok, "{}", t.stderr);
}

/// The store's host name in the tests that look it up through nginx's `resolver`.
const STORE_HOST: &str = "redis.cluster.test";

/// A session logged in on node A, signed out there; returns how long node B took to refuse
/// the copied cookie.
fn sign_out_reaches_b(nodes: &TwoNodes) -> Duration {
    let (mut b, stolen) = logged_in_on_a(nodes);
    signed_out_on_a_is_refused_on_b(nodes, &mut b, &stolen)
}

/// `b`, logged in, signs out on node A; returns how long node B took to refuse `stolen`, a
/// copy of its cookie.
fn signed_out_on_a_is_refused_on_b(nodes: &TwoNodes, b: &mut Browser, stolen: &str) -> Duration {
    let out = b.get(&nodes.a("/oauth2/sign_out"), &[]);
    assert_eq!(out.status, 302, "{}", out.summary());
    time_until(
        "node B refuses the copied cookie",
        Duration::from_secs(1),
        || status_with(&nodes.b(PAGE), stolen) == 401,
    )
}

#[test]
fn a_redis_that_moves_to_another_address_is_followed_through_nginxs_resolver_without_a_reload() {
    let dir = TempDir::new("moving-redis");
    let port = free_port();
    let dns = Dns::start(&dir.path, &[(STORE_HOST, "127.0.0.1")]);
    let first = Redis::start_at(&dir.path, "127.0.0.1", port);
    let resolver = format!("resolver 127.0.0.1:{} valid=1s ipv6=off;", dns.port);
    let mut nodes = TwoNodes::start_with(
        first,
        &format!("redis://{STORE_HOST}:{port}"),
        &resolver,
        &[],
        EnvOptions::default(),
    );
    let took = sign_out_reaches_b(&nodes);
    eprintln!("through redis.cluster.test at 127.0.0.1: sign-out reached B after {took:?}");

    // The store moves (a failover, a rescheduled pod): DNS answers the new address, the old
    // server goes away, the new one has its data. Neither nginx is reloaded.
    dns.set(&[(STORE_HOST, "127.0.0.2")]);
    nodes.redis.stop();
    let moved = Instant::now();
    nodes.redis = Redis::start_at(&dir.path, "127.0.0.2", port);
    nodes.wait_linked_to(&nodes.redis, Duration::from_secs(30));
    eprintln!(
        "every worker of both nodes subscribed at 127.0.0.2 {:?} after the move",
        moved.elapsed()
    );
    let took = sign_out_reaches_b(&nodes);
    eprintln!("through redis.cluster.test at 127.0.0.2: sign-out reached B after {took:?}");
    for (node, log) in [("A", nodes.env.error_log()), ("B", nodes.b.error_log())] {
        assert!(
            log.contains(&format!("cluster store 127.0.0.2:{port} reachable again")),
            "node {node} says where the store is now:\n{log}"
        );
    }
    nodes.assert_error_logs_are_clean();
}

#[test]
fn a_cluster_store_host_name_is_looked_up_at_start_without_a_resolver_and_at_connect_with_one() {
    let vars = offline_config_vars();
    let body = |http_extra: &str, host: &str| {
        format!(
            "{http_extra}\n{}{PROTECTED_SERVER}",
            provider_block_with(&[&format!("cluster_store redis://{host}:6379;")])
        )
    };
    let files = [("keys", new_cookie_key())];
    let files: Vec<(&str, &str)> = files.iter().map(|(n, v)| (*n, v.as_str())).collect();

    let t = nginx_t(&body("", "localhost"), &vars, &files, true);
    assert!(t.ok, "a host the system resolves: {}", t.stderr);

    let t = nginx_t(&body("", "no-such-host.invalid"), &vars, &files, true);
    assert!(
        !t.ok,
        "nginx -t accepted a cluster_store host that does not resolve"
    );
    for says in ["cluster_store", "no-such-host.invalid", "resolver"] {
        assert!(t.stderr.contains(says), "names {says}: {}", t.stderr);
    }

    // With a resolver the name is looked up when connecting: a Redis whose DNS record does
    // not exist yet (its service is created after nginx) does not stop nginx.
    let t = nginx_t(
        &body("resolver 127.0.0.1:53;", "no-such-host.invalid"),
        &vars,
        &files,
        true,
    );
    assert!(t.ok, "{}", t.stderr);
}

// ------------------------------------------------------------------------ rediss:// (TLS)

/// The `cluster_store` of a TLS Redis at `host` (a name or 127.0.0.1), trusting `ca`, with a
/// client certificate when `client` is given: the URL and the other directives.
fn rediss(
    host: &str,
    redis: &Redis,
    ca: &Path,
    client: Option<&RedisCerts>,
) -> (String, Vec<String>) {
    let url = format!("rediss://{host}:{}", redis.port);
    let mut directives = vec![format!(
        "cluster_store_trusted_certificate {};",
        ca.display()
    )];
    if let Some(c) = client {
        directives.push(format!(
            "cluster_store_certificate {};",
            c.client_cert.display()
        ));
        directives.push(format!(
            "cluster_store_certificate_key {};",
            c.client_key.display()
        ));
    }
    (url, directives)
}

/// [`rediss`] as a provider block.
fn rediss_block(host: &str, redis: &Redis, ca: &Path, client: Option<&RedisCerts>) -> String {
    let (url, directives) = rediss(host, redis, ca, client);
    let directives: Vec<&str> = directives.iter().map(String::as_str).collect();
    cluster_provider_block(&url, &directives)
}

/// Both nodes on a TLS `redis`, reached as [`rediss`] says.
fn two_nodes_over_tls(
    redis: Redis,
    host: &str,
    ca: &Path,
    client: Option<&RedisCerts>,
) -> TwoNodes {
    let (url, directives) = rediss(host, &redis, ca, client);
    let directives: Vec<&str> = directives.iter().map(String::as_str).collect();
    TwoNodes::start_with(redis, &url, "", &directives, EnvOptions::default())
}

/// One node (with `provider_block`) on a Redis it cannot use, and `demo` logged in: the node
/// is not ready, the user does not notice, and the error log has one warning per worker
/// saying why, whatever the number of attempts. Returns the warning.
fn refused_link_is_invisible_and_logged_once(
    provider_block: &str,
    redis: &Redis,
    says: &str,
) -> String {
    let before = redis.accepted();
    let env = one_node(provider_block);
    let b = logged_in(&env, PAGE, "demo");
    let cookie = session_cookie(&b);
    // The link retries every 100 ms at first, then less often: several attempts from each
    // worker within a few seconds, counted in Redis's log.
    time_until(
        "a few attempts from each worker",
        Duration::from_secs(15),
        || redis.accepted() >= before + 8,
    );
    assert_eq!(
        status_with(&env.url(PAGE), &cookie),
        200,
        "Redis down is invisible"
    );
    assert_eq!(status_with(&env.url("/oauth2/ready"), ""), 503);
    let log = env.error_log();
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("[warn]") && l.contains("cluster store"))
        .collect();
    assert!(
        (1..=2).contains(&warnings.len()) && warnings.iter().all(|w| w.contains(says)),
        "one warning per worker naming \"{says}\", not one per attempt:\n{log}"
    );
    env.assert_error_log_is_clean();
    warnings[0].to_string()
}

/// One node with `provider_block` (no second node: what it logs is what is tested).
fn one_node(provider_block: &str) -> Env {
    Env::start_with(EnvOptions {
        http: format!("{provider_block}{PROTECTED_SERVER}"),
        ..Default::default()
    })
}

fn tls_redis(certs: &RedisCerts, auth_clients: bool) -> Redis {
    Redis::start_tls(&redis_dir(), certs.redis_tls(auth_clients))
}

#[test]
fn over_rediss_a_sign_out_on_node_a_ends_a_copied_session_on_node_b() {
    let certs = RedisCerts::create();
    let redis = tls_redis(&certs, false);
    // By name: the certificate's DNS name is checked and sent as SNI.
    let nodes = two_nodes_over_tls(redis, "localhost", &certs.tls.ca, None);
    let (mut b, stolen) = logged_in_on_a(&nodes);
    assert_eq!(status_with(&nodes.a("/oauth2/ready"), ""), 200);
    assert_eq!(status_with(&nodes.b("/oauth2/ready"), ""), 200);
    let took = signed_out_on_a_is_refused_on_b(&nodes, &mut b, &stolen);
    eprintln!("propagation over TLS: sign-out on A refused on B after {took:?}");
    nodes.assert_error_logs_are_clean();
}

#[test]
fn a_redis_whose_certificate_comes_from_another_ca_is_refused_and_users_do_not_notice() {
    let ours = RedisCerts::create();
    let theirs = RedisCerts::create();
    let redis = tls_redis(&theirs, false);
    let warning = refused_link_is_invisible_and_logged_once(
        &rediss_block("127.0.0.1", &redis, &ours.tls.ca, None),
        &redis,
        // OpenSSL's words: Redis sends its CA along, which nginx does not trust.
        "certificate verify failed: self-signed certificate in certificate chain",
    );
    eprintln!("the operator reads: {warning}");
}

#[test]
fn a_redis_certificate_for_another_host_is_refused_by_address_and_by_name() {
    let certs = RedisCerts::create();
    let (cert, key) = certs.server_cert_for("DNS:redis.invalid");
    let redis = Redis::start_tls(
        &redis_dir(),
        RedisTls {
            cert,
            key,
            ..certs.redis_tls(false)
        },
    );
    for host in ["127.0.0.1", "localhost"] {
        let warning = refused_link_is_invisible_and_logged_once(
            &rediss_block(host, &redis, &certs.tls.ca, None),
            &redis,
            &format!("certificate verify failed: the certificate is not for \"{host}\""),
        );
        eprintln!("the operator reads: {warning}");
    }
}

#[test]
fn mutual_tls_links_with_the_client_certificate() {
    let certs = RedisCerts::create();
    let redis = tls_redis(&certs, true);
    // By IP address: the certificate's iPAddress name is checked.
    let nodes = two_nodes_over_tls(redis, "127.0.0.1", &certs.tls.ca, Some(&certs));
    let (mut b, stolen) = logged_in_on_a(&nodes);
    assert_eq!(status_with(&nodes.b("/oauth2/ready"), ""), 200);
    signed_out_on_a_is_refused_on_b(&nodes, &mut b, &stolen);

    // A reload brings a new TLS context (the old one goes with the old configuration) and
    // new links, which work as the old ones did.
    nodes.b.reload();
    time_until(
        "node B is ready after the reload",
        Duration::from_secs(10),
        || status_with(&nodes.b("/oauth2/ready"), "") == 200,
    );
    sign_out_reaches_b(&nodes);
    nodes.assert_error_logs_are_clean();
}

#[test]
fn without_a_client_certificate_a_redis_that_asks_for_one_refuses_and_the_warning_says_so() {
    let certs = RedisCerts::create();
    let redis = tls_redis(&certs, true);
    let warning = refused_link_is_invisible_and_logged_once(
        &rediss_block("127.0.0.1", &redis, &certs.tls.ca, None),
        &redis,
        "set cluster_store_certificate and cluster_store_certificate_key",
    );
    eprintln!("the operator reads: {warning}");
}

#[test]
fn tls_settings_mistakes_fail_nginx_t_naming_the_directive_and_the_fix() {
    let certs = RedisCerts::create();
    let other = RedisCerts::create();
    let read = |p: &Path| std::fs::read_to_string(p).unwrap();
    let files = [
        ("keys", new_cookie_key()),
        ("ca.pem", read(&certs.tls.ca)),
        ("client.pem", read(&certs.client_cert)),
        ("client.key", read(&certs.client_key)),
        ("other.key", read(&other.client_key)),
        ("hello.txt", "hello\n".to_string()),
        (
            "broken.pem",
            "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n".to_string(),
        ),
    ];
    let files: Vec<(&str, &str)> = files.iter().map(|(n, c)| (*n, c.as_str())).collect();
    let vars = offline_config_vars();
    let check = |directives: &[&str]| {
        let body = format!("{}{PROTECTED_SERVER}", provider_block_with(directives));
        nginx_t(&body, &vars, &files, true)
    };
    let rediss = "cluster_store rediss://127.0.0.1:6380;";
    let trusted = |f: &str| format!("cluster_store_trusted_certificate @DIR@/{f};");
    let cert = "cluster_store_certificate @DIR@/client.pem;";
    let key = |f: &str| format!("cluster_store_certificate_key @DIR@/{f};");
    for (directives, names, says) in [
        (
            vec!["cluster_store redis://127.0.0.1:6379;", &trusted("ca.pem")],
            "cluster_store_trusted_certificate",
            "rediss://",
        ),
        (
            vec![cert, &key("client.key")],
            "cluster_store_certificate",
            "rediss://",
        ),
        (
            vec![rediss, &trusted("missing.pem")],
            "cluster_store_trusted_certificate",
            "missing.pem",
        ),
        (
            vec![rediss, &trusted("hello.txt")],
            "cluster_store_trusted_certificate",
            "no PEM",
        ),
        (
            vec![rediss, &trusted("broken.pem")],
            "cluster_store_trusted_certificate",
            "PEM file of the CA",
        ),
        (
            vec![rediss, cert],
            "cluster_store_certificate",
            "cluster_store_certificate_key FILE",
        ),
        (
            vec![rediss, &key("client.key")],
            "cluster_store_certificate_key",
            "cluster_store_certificate FILE",
        ),
        (
            vec![rediss, cert, &key("ca.pem")],
            "cluster_store_certificate_key",
            "no PEM private key",
        ),
        (
            vec![rediss, cert, &key("other.key")],
            "cluster_store_certificate",
            "its own",
        ),
    ] {
        let t = check(&directives);
        assert!(!t.ok, "nginx -t accepted {directives:?}");
        assert!(
            t.stderr.contains(&format!("\"{names}\"")) && t.stderr.contains(says),
            "{directives:?}: {}",
            t.stderr
        );
    }
    let t = check(&[rediss, &trusted("ca.pem"), cert, &key("client.key")]);
    assert!(t.ok, "{}", t.stderr);
    let t = check(&[rediss]);
    assert!(t.ok, "OpenSSL's default trust store: {}", t.stderr);
}

// ------------------------------------------------------- Redis password, ACL user, database

/// A password for Redis that no other text of the test contains.
fn redis_password() -> String {
    format!("redis-pw-{}", random_hex(12))
}

fn assert_no_node_logs(nodes: &TwoNodes, secret: &str) {
    for (node, log) in [("A", nodes.env.error_log()), ("B", nodes.b.error_log())] {
        assert!(
            !log.contains(secret),
            "node {node}'s error.log shows the Redis password"
        );
    }
}

/// Redis with `requirepass` set to `password`, its data under `dir`.
fn redis_with_password(dir: &TempDir, password: &str) -> Redis {
    Redis::start_with(
        &dir.path,
        RedisOptions {
            password: Some(password.to_string()),
            ..RedisOptions::default()
        },
    )
}

#[test]
fn a_cluster_behind_a_redis_password_keeps_to_its_database_and_never_logs_the_password() {
    let password = redis_password();
    let dir = TempDir::new("redis-password");
    let file = dir.write("redis-password", &format!("{password}\n"));
    let redis = redis_with_password(&dir, &password);
    let url = format!("redis://127.0.0.1:{}/3", redis.port);
    let password_file = format!("cluster_store_password_file {};", file.display());
    let nodes = TwoNodes::start_with(redis, &url, "", &[&password_file], EnvOptions::default());
    sign_out_reaches_b(&nodes);

    let in_db3 = nodes.redis.cli(&["-n", "3", "--scan"]);
    assert!(
        in_db3
            .lines()
            .any(|k| k.starts_with("ngx-oidc:keycloak:rev:")),
        "the revocation is in database 3: {in_db3:?}"
    );
    let in_db0 = nodes.redis.cli(&["-n", "0", "--scan"]);
    assert_eq!(in_db0.trim(), "", "nothing in database 0");
    assert_no_node_logs(&nodes, &password);
    nodes.assert_error_logs_are_clean();
}

#[test]
fn an_acl_user_confined_to_the_clusters_keys_is_all_the_nodes_need() {
    let password = redis_password();
    let dir = TempDir::new("redis-acl");
    // The default user has another password: the nodes work only if they log in as `ngx`.
    let redis = Redis::start_with(
        &dir.path,
        RedisOptions {
            password: Some(redis_password()),
            users: vec![format!(
                "ngx on >{password} ~ngx-oidc:* &ngx-oidc:* +@all -@dangerous"
            )],
            ..RedisOptions::default()
        },
    );
    let url = format!("redis://ngx:{password}@127.0.0.1:{}/3", redis.port);
    let nodes = TwoNodes::start_with(redis, &url, "", &[], EnvOptions::default());
    sign_out_reaches_b(&nodes);

    let in_db3 = nodes.redis.cli(&["-n", "3", "--scan"]);
    assert!(
        in_db3
            .lines()
            .any(|k| k.starts_with("ngx-oidc:keycloak:rev:")),
        "{in_db3:?}"
    );
    wait_for(
        "every worker of both nodes to link as ngx (two connections each)",
        Duration::from_secs(10),
        || {
            let clients = nodes.redis.cli(&["CLIENT", "LIST"]);
            let as_ngx = clients.lines().filter(|c| c.contains(" user=ngx ")).count();
            (as_ngx == 2 * 2 * 2).then_some(())
        },
    );
    assert_no_node_logs(&nodes, &password);
    nodes.assert_error_logs_are_clean();
}

/// How often Redis refused a password since it started.
fn wrong_passwords(nodes: &TwoNodes) -> u64 {
    nodes
        .redis
        .cli(&["INFO", "errorstats"])
        .lines()
        .find_map(|l| l.strip_prefix("errorstat_WRONGPASS:count="))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_wrong_redis_password_is_named_once_per_worker_and_a_reload_with_the_right_one_links_up() {
    let password = redis_password();
    let wrong = redis_password();
    let dir = TempDir::new("redis-wrong-password");
    let file = dir.write("redis-password", &format!("{wrong}\n"));
    let redis = redis_with_password(&dir, &password);
    let url = format!("redis://127.0.0.1:{}", redis.port);
    let password_file = format!("cluster_store_password_file {};", file.display());
    let nodes = TwoNodes::start_with(redis, &url, "", &[&password_file], EnvOptions::default());
    // Logins and logged-in requests never wait for Redis.
    let mut b = logged_in(&nodes.env, PAGE, "demo");
    let cookie = session_cookie(&b);
    assert_eq!(status_with(&nodes.a(PAGE), &cookie), 200);
    assert_eq!(status_with(&nodes.b(PAGE), &cookie), 200);
    // Every worker of both nodes tries, and tries again as it backs off.
    wait_for(
        "each of the 4 workers to be refused three times",
        Duration::from_secs(10),
        || (wrong_passwords(&nodes) >= 4 * 3).then_some(()),
    );
    for url in [nodes.a("/oauth2/ready"), nodes.b("/oauth2/ready")] {
        assert_eq!(status_with(&url, ""), 503, "{url}: not ready without Redis");
    }
    for (node, log) in [("A", nodes.env.error_log()), ("B", nodes.b.error_log())] {
        let warnings: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("[warn]") && l.contains("cluster store"))
            .collect();
        assert_eq!(
            warnings.len(),
            2,
            "node {node}: one warning per worker, not one per attempt:\n{log}"
        );
        for w in &warnings {
            assert!(
                w.contains("refused this node") && w.contains("WRONGPASS"),
                "says Redis refused the password, not that it is unreachable: {w}"
            );
        }
        eprintln!("node {node}, each worker: {}", warnings[0]);
    }
    assert_no_node_logs(&nodes, &wrong);
    assert_no_node_logs(&nodes, &password);

    // The operator fixes the file and reloads both nodes.
    dir.write("redis-password", &format!("{password}\n"));
    nodes.env.nginx.reload();
    nodes.b.reload();
    for url in [nodes.a("/oauth2/ready"), nodes.b("/oauth2/ready")] {
        let took = time_until(
            "the reloaded node is ready",
            Duration::from_secs(10),
            || status_with(&url, "") == 200,
        );
        eprintln!("reload with the right password: {url} ready after {took:?}");
    }
    nodes.wait_linked();
    // The session from before the fix still works, and its sign-out now reaches node B.
    assert_eq!(status_with(&nodes.b(PAGE), &cookie), 200);
    signed_out_on_a_is_refused_on_b(&nodes, &mut b, &cookie);
    assert_no_node_logs(&nodes, &wrong);
    assert_no_node_logs(&nodes, &password);
    nodes.assert_error_logs_are_clean();
}
