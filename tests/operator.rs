//! What operators reach for (issue 16): cookie scope across subdomains, providers and URLs
//! from nginx variables, a TLS-terminating load balancer, the token variables, extra
//! parameters on the authorization request, and CORS preflights. A real nginx with the module,
//! the stand-in provider (tests/idp) and an echo upstream, on 127.0.0.1; several host names
//! reach it through a browser that resolves `*.example.test` to 127.0.0.1.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::*;

const PAGE: &str = "/page";

/// nginx with the module, one or more stand-in providers and an echo upstream, for configs
/// that name host names (the provider must know their redirect URIs before nginx starts).
struct Site {
    nginx: Nginx,
    providers: Vec<Provider>,
    port: u16,
    // Kept alive as long as the site; dropped after nginx.
    _upstream: EchoUpstream,
    _dir: TempDir,
}

impl Site {
    /// Starts `providers.len()` providers, then nginx on `port` with the `http` template.
    /// Placeholders: those of [`Vars::site`] for the first provider, `@ISSUER2@` and
    /// `@CLIENT_SECRET2@` for the second, `@DIR@`.
    fn start(port: u16, providers: Vec<ProviderOptions>, http: &str) -> Site {
        let dir = TempDir::new("operator");
        let providers: Vec<Provider> = providers
            .into_iter()
            .enumerate()
            .map(|(i, mut o)| {
                o.client_secret = Some(format!("cs{i}-{}", random_hex(8)));
                Provider::start(o, None)
            })
            .collect();
        let upstream = EchoUpstream::start();
        let keys: PathBuf = dir.write("cookie-keys", &format!("{}\n", new_cookie_key()));
        let first = &providers[0];
        let mut vars = Vars::site(
            port,
            upstream.port,
            &first.issuer,
            &first.client_secret,
            &keys,
        );
        vars.set("DIR", dir.path.display().to_string())
            .set("LOCATION_EXTRA", "");
        if let Some(second) = providers.get(1) {
            vars.set("ISSUER2", second.issuer.clone())
                .set("CLIENT_SECRET2", second.client_secret.clone());
        }
        let nginx = Nginx::start(
            &dir.path,
            port,
            true,
            WORKER_CONNECTIONS,
            &vars.render(http),
        );
        Site {
            nginx,
            providers,
            port,
            _upstream: upstream,
            _dir: dir,
        }
    }

    fn url(&self, host: &str, path: &str) -> String {
        format!("http://{host}:{}{path}", self.port)
    }

    /// No token, client secret, crashed worker or `[alert]` in the error log.
    fn assert_error_log_is_clean(&self) {
        let log = self.nginx.error_log();
        assert!(!log.contains("eyJ"), "a JWT in the error log");
        assert!(!log.contains("[alert]") && !log.contains("exited on signal"));
        for p in &self.providers {
            assert!(
                !log.contains(&p.client_secret),
                "a client secret in the log"
            );
        }
    }
}

/// Provider settings for a relying party reached as `http://HOST:PORT` for each of `hosts`.
fn provider_for_hosts(port: u16, hosts: &[&str]) -> ProviderOptions {
    ProviderOptions {
        redirect_uris: hosts
            .iter()
            .map(|h| format!("http://{h}:{port}/oauth2/callback"))
            .collect(),
        post_logout_redirect_uris: hosts
            .iter()
            .map(|h| format!("http://{h}:{port}/"))
            .collect(),
        ..Default::default()
    }
}

fn is_state_cookie(name: &str) -> bool {
    name.starts_with("_oidc_st_")
}

// ---------------------------------------------------------------------------- nginx -t

#[test]
fn operator_mistakes_fail_nginx_t_naming_the_directive_and_the_fix() {
    let key = new_cookie_key();
    let site =
        |directives: &[&str]| format!("{}{PROTECTED_SERVER}", provider_block_with(directives));
    let cases = [
        (
            site(&["cookie_samesite none;"]),
            vec!["cookie_samesite", "cookie_secure off", "Secure"],
        ),
        (
            site(&["cookie_samesite loose;"]),
            vec!["cookie_samesite", "lax, strict or none"],
        ),
        (
            site(&["cookie_domain .example.test;"]),
            vec!["cookie_domain", "leading dot"],
        ),
        (
            site(&["cookie_domain test;"]),
            vec!["cookie_domain", "single-label"],
        ),
        (
            site(&["cookie_path /app;"]),
            vec!["cookie_path", "/oauth2/callback"],
        ),
        (
            site(&["extra_auth_args \"prompt=login&state=abc\";"]),
            vec!["extra_auth_args", "\"state\"", "reserved"],
        ),
        (
            site(&["extra_auth_args \"redirect_uri=$arg_x\";"]),
            vec!["extra_auth_args", "\"redirect_uri\""],
        ),
        (
            site(&["trusted_proxies lb.internal;"]),
            vec!["trusted_proxies", "10.0.0.0/8"],
        ),
        (site(&["redirect_uri callback;"]), vec!["redirect_uri"]),
        (
            format!("{PROVIDER_BLOCK}{PROTECTED_SERVER}")
                .replace("oidc_auth keycloak;", "oidc_auth nosuch;"),
            vec!["oidc_auth", "unknown provider \"nosuch\""],
        ),
        (
            format!(
                "{PROVIDER_BLOCK}{}",
                protected_server_with(&[("/api/", "oidc_skip_preflight yes;")])
            ),
            vec!["oidc_skip_preflight", "\"on\" or \"off\""],
        ),
    ];
    let mut failures = Vec::new();
    for (config, wanted) in &cases {
        let t = nginx_t(config, &offline_config_vars(), &[("keys", &key)], true);
        if t.ok {
            failures.push(format!("{}: nginx -t passed", wanted[0]));
        } else if let Some(missing) = wanted.iter().find(|w| !t.stderr.contains(*w)) {
            failures.push(format!(
                "{}: no {missing:?} in: {}",
                wanted[0],
                t.stderr.trim()
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));

    // The recipes of the README pass.
    let good = format!(
        "map $host $tenant {{ default keycloak; }}\n{}{}",
        provider_block_with(&[
            "cookie_domain example.test;",
            "cookie_samesite strict;",
            "redirect_uri $scheme://$host/oauth2/callback;",
            "post_logout_redirect_uri $scheme://$host/;",
            "extra_auth_args \"prompt=login&kc_idp_hint=$arg_idp\";",
            "trusted_proxies 10.0.0.0/8 127.0.0.1;",
        ]),
        protected_server_with(&[("/api/", "oidc_skip_preflight on;")])
            .replace("oidc_auth keycloak;", "oidc_auth $tenant;")
            .replace("oidc_endpoints keycloak;", "oidc_endpoints $tenant;")
    );
    let t = nginx_t(&good, &offline_config_vars(), &[("keys", &key)], true);
    assert!(t.ok, "{}\n{}", t.stderr, t.config);
}

// ---------------------------------------------------------------------------- cookies

#[test]
fn one_login_serves_every_host_under_cookie_domain_and_sign_out_clears_the_domain_cookies() {
    let port = free_port();
    let hosts = ["a.example.test", "b.example.test"];
    let http = format!(
        "large_client_header_buffers 4 32k;\n{}{PROTECTED_SERVER}",
        provider_block_with(&["cookie_domain example.test;"])
    );
    let site = Site::start(port, vec![provider_for_hosts(port, &hosts)], &http);
    let mut b = Browser::resolving("example.test");

    // "chunky" is in 200 groups: the session spans several cookies.
    let cb = b.login_callback(&site.url("a.example.test", PAGE), "chunky", "chunky");
    let set = session_cookies_set(&cb);
    assert!(
        set.len() >= 2,
        "a chunked session: {set:?}\n{}",
        b.transcript()
    );
    for c in &set {
        assert_eq!(c.attr("domain"), Some("example.test"), "{}", c.name);
        assert_eq!(c.attr("path"), Some("/"), "{}", c.name);
    }
    let r = b.follow(cb);
    assert_eq!(r.status, 200, "{}", b.transcript());

    // The other host: same session, no second login.
    let r = b.get(&site.url("b.example.test", "/other"), &[]);
    assert_eq!(r.status, 200, "{}", b.transcript());
    assert_eq!(
        r.upstream_header("x-auth-request-user").as_deref(),
        Some("chunky")
    );
    let codes = &site.providers[0].stats()["token_requests"]["authorization_code"];
    assert_eq!(codes.as_u64(), Some(1), "one login for both hosts");

    // A login started and abandoned on b (its state cookie is a domain cookie too), and a
    // cookie of another application named like a login state: never ours to delete.
    let pending = b.get(&site.url("b.example.test", "/oauth2/sign_in"), &[]);
    let state = pending
        .set_cookies()
        .into_iter()
        .find(|c| is_state_cookie(&c.name))
        .expect("sign_in sets a login-state cookie");
    assert_eq!(state.attr("domain"), Some("example.test"));
    let foreign_url = url::Url::parse(&site.url("a.example.test", "/")).unwrap();
    b.jar
        .store(&foreign_url, "_oidc_st_foreign=not-ours; Path=/");

    let out = b.get(&site.url("a.example.test", "/oauth2/sign_out"), &[]);
    assert_eq!(out.status, 302, "{}", b.transcript());
    let deleted: Vec<SetCookie> = out
        .set_cookies()
        .into_iter()
        .filter(|c| c.is_deletion())
        .collect();
    for name in set
        .iter()
        .map(|c| c.name.as_str())
        .chain([state.name.as_str()])
    {
        let d = deleted
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("sign-out did not delete {name}: {deleted:?}"));
        assert_eq!(d.attr("domain"), Some("example.test"), "{name}");
    }
    assert!(
        !deleted.iter().any(|c| c.name == "_oidc_st_foreign"),
        "a cookie not proven ours was deleted"
    );
    assert!(
        b.jar.names_where(is_session_cookie).is_empty(),
        "{:?}",
        b.jar.names()
    );
    assert_eq!(b.jar.names_where(is_state_cookie), ["_oidc_st_foreign"]);

    // Signed out on both hosts.
    let r = b.get(&site.url("b.example.test", "/other"), &[]);
    assert!(r.is_redirect(), "{}", r.summary());
    assert!(
        r.location().unwrap().starts_with(&site.providers[0].issuer),
        "{}",
        r.summary()
    );

    // A host outside the cookie domain: the browser would refuse the cookies; the log says so.
    let r = Browser::new().get(&format!("http://127.0.0.1:{port}{PAGE}"), &[]);
    assert!(r.is_redirect(), "{}", r.summary());
    let log = site.nginx.error_log();
    assert!(
        log.contains("a login starts on host \"127.0.0.1:")
            && log.contains("which is not inside cookie_domain \"example.test\""),
        "{log}"
    );
    site.assert_error_log_is_clean();
}

// ---------------------------------------------------------------------------- variables

#[test]
fn a_map_on_host_chooses_the_provider_and_each_host_logs_in_at_its_own() {
    let port = free_port();
    let http = r#"
    map $host $tenant {
        a.example.test  one;
        b.example.test  two;
        default         nobody;
    }
    oidc_provider one {
        issuer             @ISSUER@;
        client_id          test;
        client_secret      @CLIENT_SECRET@;
        cookie_secret_file @KEYS@;
        cookie_secure      off;
        redirect_uri       $scheme://$http_host/oauth2/callback;
    }
    oidc_provider two {
        issuer             @ISSUER2@;
        client_id          test;
        client_secret      @CLIENT_SECRET2@;
        cookie_secret_file @KEYS@;
        cookie_secure      off;
        post_logout_redirect_uri $scheme://$http_host/;
    }
    server {
        listen 127.0.0.1:@PORT@;
        location /_oidc { internal; proxy_pass $oidc_fetch_url; }
        location /oauth2/ { oidc_endpoints $tenant; }
        location / { oidc_auth $tenant; proxy_pass http://127.0.0.1:@UPSTREAM@; }
    }
"#;
    let site = Site::start(
        port,
        vec![
            provider_for_hosts(port, &["a.example.test"]),
            provider_for_hosts(port, &["b.example.test"]),
        ],
        http,
    );
    let mut b = Browser::resolving("example.test");
    for (host, idp) in [("a.example.test", 0), ("b.example.test", 1)] {
        let first = b.get(&site.url(host, PAGE), &[]);
        let to = first.location().unwrap_or_default().to_string();
        assert!(
            to.starts_with(&site.providers[idp].issuer),
            "{host} goes to provider {idp}: {}",
            first.summary()
        );
        assert_eq!(
            query_param(&to, "redirect_uri"),
            Some(format!("http://{host}:{port}/oauth2/callback")),
            "the redirect_uri built from variables (one) or the request (two)"
        );
        let r = b.login_ok(&site.url(host, PAGE), "demo");
        assert_eq!(
            r.upstream_header("x-auth-request-user").as_deref(),
            Some("demo")
        );
        let codes = &site.providers[idp].stats()["token_requests"]["authorization_code"];
        assert_eq!(
            codes.as_u64(),
            Some(1),
            "{host} logged in at provider {idp}"
        );
    }

    // post_logout_redirect_uri from variables: back to the host that signed out.
    let out = b.get(&site.url("b.example.test", "/oauth2/sign_out"), &[]);
    let back = query_param(
        out.location().unwrap_or_default(),
        "post_logout_redirect_uri",
    );
    assert_eq!(
        back,
        Some(format!("http://b.example.test:{port}/")),
        "{}",
        out.summary()
    );

    // A host the map sends to no provider: a clear 500, and the log names the value.
    let r = b.get(&site.url("c.example.test", PAGE), &[]);
    assert_eq!(r.status, 500, "{}", r.summary());
    let log = site.nginx.error_log();
    assert!(
        log.contains("oidc_auth \"$tenant\" gives provider \"nobody\", but no oidc_provider has that name (defined: one, two)"),
        "{log}"
    );
    site.assert_error_log_is_clean();
}

// ---------------------------------------------------------------------------- load balancer

const PUBLIC: &str = "app.example.test";

/// What a TLS-terminating load balancer in front of nginx adds to each request.
fn from_balancer() -> [(&'static str, &'static str); 2] {
    [("Host", PUBLIC), ("X-Forwarded-Proto", "https")]
}

/// A provider that knows the site only by its public https address.
fn provider_behind_balancer() -> ProviderOptions {
    ProviderOptions {
        redirect_uris: vec![format!("https://{PUBLIC}/oauth2/callback")],
        post_logout_redirect_uris: vec![format!("https://{PUBLIC}/")],
        ..Default::default()
    }
}

fn balancer_site(directives: &[&str]) -> Site {
    let http = format!("{}{PROTECTED_SERVER}", provider_block_with(directives))
        .replace("cookie_secure      off;", "");
    Site::start(free_port(), vec![provider_behind_balancer()], &http)
}

#[test]
fn by_default_forwarded_headers_are_ignored_and_the_provider_refuses_the_http_callback() {
    // The field report, replayed: nginx behind a TLS-terminating balancer built
    // redirect_uri=http://..., which the provider does not know.
    let site = balancer_site(&[]);
    let mut b = Browser::new();
    let r = b.get(
        &format!("http://127.0.0.1:{}{PAGE}", site.port),
        &from_balancer(),
    );
    let sent = query_param(r.location().unwrap_or_default(), "redirect_uri");
    assert_eq!(
        sent,
        Some(format!("http://{PUBLIC}/oauth2/callback")),
        "{}",
        r.summary()
    );
    let r = b.follow(r);
    assert_eq!(r.status, 400, "the provider refuses it: {}", r.summary());
    assert!(
        r.body.contains("redirect_uri"),
        "{}",
        &r.body[..r.body.len().min(400)]
    );
}

#[test]
fn with_trusted_proxies_the_login_behind_a_balancer_completes_over_https() {
    let site = balancer_site(&["trusted_proxies 127.0.0.1;"]);
    let nginx = format!("http://127.0.0.1:{}", site.port);
    let mut b = Browser::new();
    // The balancer speaks https to the browser: nginx's Secure cookies come back.
    b.jar.loopback_is_secure = true;
    let r = b.get(&format!("{nginx}{PAGE}"), &from_balancer());
    let login = r.location().unwrap_or_default().to_string();
    assert_eq!(
        query_param(&login, "redirect_uri"),
        Some(format!("https://{PUBLIC}/oauth2/callback")),
        "{}",
        r.summary()
    );
    let callback = b
        .authorize_for(&format!("https://{PUBLIC}:443"), &login, "demo", "demo")
        .unwrap_or_else(|r| panic!("the provider refused: {}\n{}", r.summary(), b.transcript()));
    // The balancer hands the callback to nginx.
    let query = callback.split_once('?').map(|(_, q)| q).unwrap_or_default();
    let r = b.get(
        &format!("{nginx}/oauth2/callback?{query}"),
        &from_balancer(),
    );
    assert_eq!(r.location(), Some(PAGE), "{}", b.transcript());
    let codes = &site.providers[0].stats()["token_requests"]["authorization_code"];
    assert_eq!(
        codes.as_u64(),
        Some(1),
        "the code exchange used the https redirect_uri"
    );
    let r = b.get(&format!("{nginx}{PAGE}"), &from_balancer());
    assert_eq!(r.status, 200, "{}", b.transcript());
    assert_eq!(
        r.upstream_header("x-auth-request-user").as_deref(),
        Some("demo")
    );

    let out = b.get(&format!("{nginx}/oauth2/sign_out"), &from_balancer());
    assert_eq!(
        query_param(
            out.location().unwrap_or_default(),
            "post_logout_redirect_uri"
        ),
        Some(format!("https://{PUBLIC}/")),
        "{}",
        out.summary()
    );
    site.assert_error_log_is_clean();
}

// ---------------------------------------------------------------------------- token variables

#[test]
fn the_token_variables_reach_the_upstream_and_the_access_log_and_follow_a_refresh() {
    let mut opts = EnvOptions::default().token_ttls(4, 4, 600);
    opts.http = format!(
        "log_format tokens '$oidc_user $oidc_access_token';\n{}{}",
        provider_block_with(&["refresh_leeway 1s;"]),
        r#"
    server {
        listen 127.0.0.1:@PORT@;
        location /_oidc { internal; proxy_pass $oidc_fetch_url; }
        location /oauth2/ { oidc_endpoints keycloak; }
        location / {
            oidc_auth keycloak;
            access_log @DIR@/tokens.log tokens;
            proxy_set_header X-Access-Token $oidc_access_token;
            proxy_set_header X-Id-Token $oidc_id_token;
            proxy_pass http://127.0.0.1:@UPSTREAM@;
        }
        location /via-auth-request/ {
            auth_request /oauth2/auth;
            auth_request_set $token $oidc_access_token;
            proxy_set_header X-Access-Token $token;
            proxy_pass http://127.0.0.1:@UPSTREAM@;
        }
    }
"#
    );
    let env = Env::start_with(opts);
    let mut b = logged_in(&env, PAGE, "demo");
    let seen = env.upstream.last().unwrap();
    let at = seen
        .headers
        .get("x-access-token")
        .cloned()
        .unwrap_or_default();
    let idt = seen.headers.get("x-id-token").cloned().unwrap_or_default();
    assert_eq!(
        jwt_claims(&at)["iss"],
        env.provider.issuer.as_str(),
        "access token: {at:?}"
    );
    assert_eq!(jwt_claims(&idt)["aud"], "test", "ID token: {idt:?}");
    assert_eq!(jwt_claims(&idt)["preferred_username"], "demo");

    let r = b.get(&env.url("/via-auth-request/x"), &[]);
    assert_eq!(r.status, 200, "{}", b.transcript());
    assert_eq!(
        r.upstream_header("x-access-token").as_deref(),
        Some(at.as_str())
    );

    // The access token lives 4 s and is renewed 1 s before: poll until a request carries a
    // new one.
    let (new_at, new_idt) = wait_for(
        "a refreshed access token upstream",
        Duration::from_secs(20),
        || {
            let r = b.get(&env.url(PAGE), &[]);
            assert_eq!(r.status, 200, "{}", b.transcript());
            let now = r.upstream_header("x-access-token").unwrap_or_default();
            (now != at).then(|| (now, r.upstream_header("x-id-token").unwrap_or_default()))
        },
    );
    let refreshes = &env.provider.stats()["token_requests"]["refresh_token"];
    assert!(refreshes.as_u64() >= Some(1), "{refreshes}");
    assert!(
        jwt_claims(&new_at)["exp"].as_u64() > jwt_claims(&at)["exp"].as_u64(),
        "the new access token lives longer"
    );
    assert_eq!(jwt_claims(&new_idt)["preferred_username"], "demo");
    assert!(jwt_claims(&new_idt)["iat"].as_u64() >= jwt_claims(&idt)["iat"].as_u64());
    let r = b.get(&env.url("/via-auth-request/y"), &[]);
    let via = r.upstream_header("x-access-token").unwrap_or_default();
    assert!(
        via == new_at || jwt_claims(&via)["exp"].as_u64() >= jwt_claims(&new_at)["exp"].as_u64()
    );

    let log = std::fs::read_to_string(env.dir.join("tokens.log")).unwrap();
    assert!(
        log.contains(&format!("demo {at}")),
        "log_format renders the token: {log}"
    );
    env.assert_error_log_is_clean();
}

// ---------------------------------------------------------------------------- extra_auth_args

#[test]
fn extra_auth_args_reach_the_provider_with_their_variables_evaluated() {
    let env = Env::start_with(EnvOptions {
        http: format!(
            "{}{PROTECTED_SERVER}",
            provider_block_with(&[
                "extra_auth_args \"prompt=login&kc_idp_hint=$arg_idp&login_hint=ann%40example.test\";"
            ])
        ),
        ..Default::default()
    });
    let mut b = env.browser();
    let r = b.get(&env.url("/page?idp=github"), &[]);
    assert_sent_to_login(&env, &r, &b.transcript());
    let to = r.location().unwrap().to_string();
    assert!(
        to.contains("&prompt=login&kc_idp_hint=github&login_hint=ann%40example.test"),
        "{to}"
    );
    let r = b.follow(r);
    assert_eq!(
        r.status,
        200,
        "the provider shows its login form: {}",
        r.summary()
    );
    let got = env.provider.stats()["last_authorization_request"].clone();
    assert_eq!(got["kc_idp_hint"], "github", "{got}");
    assert_eq!(got["login_hint"], "ann@example.test", "{got}");
    assert_eq!(got["prompt"], "login", "{got}");
    assert_eq!(
        got["client_id"], "test",
        "the module's own parameters are intact: {got}"
    );

    // A variable that comes out empty adds nothing; the login completes.
    let mut b = env.browser();
    let r = b.get(&env.url(PAGE), &[]);
    let to = r.location().unwrap_or_default();
    assert!(
        !to.contains("kc_idp_hint") && to.contains("prompt=login"),
        "{to}"
    );
    b.login_ok(&env.url(PAGE), "demo");
    env.assert_error_log_is_clean();
}

// ---------------------------------------------------------------------------- preflight

fn preflight(b: &mut Browser, url: &str, with_method: bool) -> Resp {
    let mut headers = vec![("Origin", "https://spa.example.test"), ("Accept", "*/*")];
    if with_method {
        headers.push(("Access-Control-Request-Method", "PUT"));
    }
    b.request("OPTIONS", url, &headers, None)
}

#[test]
fn cors_preflights_get_401_unless_the_location_lets_them_through() {
    let env = Env::start_with(EnvOptions {
        http: format!(
            "{PROVIDER_BLOCK}{}",
            protected_server_with(&[("/api/", "oidc_skip_preflight on;")])
        ),
        ..Default::default()
    });
    let mut b = env.browser();

    let r = preflight(&mut b, &env.url("/page"), true);
    assert_eq!(r.status, 401, "off by default: {}", r.summary());

    let before = env.upstream.count();
    let r = preflight(&mut b, &env.url("/api/items"), true);
    assert_eq!(r.status, 200, "{}", r.summary());
    let seen = env.upstream.last().unwrap();
    assert_eq!(
        (seen.method.as_str(), seen.path.as_str()),
        ("OPTIONS", "/api/items")
    );
    assert_eq!(env.upstream.count(), before + 1);
    assert!(!seen.headers.contains_key("x-auth-request-user"));

    // Only a whole preflight passes: an OPTIONS without Access-Control-Request-Method, or a
    // cross-origin GET, still needs a session.
    let r = preflight(&mut b, &env.url("/api/items"), false);
    assert_eq!(r.status, 401, "{}", r.summary());
    let r = b.get(
        &env.url("/api/items"),
        &[
            ("Origin", "https://spa.example.test"),
            ("Accept", "application/json"),
        ],
    );
    assert_eq!(r.status, 401, "{}", r.summary());
    env.assert_error_log_is_clean();
}
