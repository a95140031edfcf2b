//! Migrating from the setup ngx-oidc replaces: nginx `auth_request` → the real oauth2-proxy →
//! the provider, configured as the seed article does (tests/migration/oauth2-proxy.conf and the
//! article's oauth2-proxy flags). The same file, pointed at the module instead
//! (tests/migration/ngx-oidc.conf), works without oauth2-proxy and the application behind it
//! sees the same `X-User` and `X-Email` for the same user — with the stand-in provider and
//! with a real Keycloak.

mod common;

use common::keycloak::{client_secret, keycloak, REALM};
use common::*;

const OAUTH2_PROXY_CONF: &str = include_str!("migration/oauth2-proxy.conf");
const NGX_OIDC_CONF: &str = include_str!("migration/ngx-oidc.conf");

/// The application: `proxy_pass http://backend/;` in both files.
const BACKEND: &str = "
    upstream backend { server 127.0.0.1:@UPSTREAM@; }
";

/// What the seed's setup needs from the http block besides the file itself: oauth2-proxy's
/// session cookie for a real Keycloak user (tokens, roles, groups; split into
/// `_oauth2_proxy_0`, `_1`) makes its callback's response headers larger than nginx's default
/// 4 KB `proxy_buffer_size`, and the login ends in 502 "upstream sent too big header". The
/// module's cookie needs nothing of the kind.
const SEED_HTTP: &str = "
    proxy_buffer_size 16k;
    proxy_buffers     8 16k;
";

/// In place of oauth2-proxy's flags. oauth2-proxy sends the ID token's `sub` as
/// `X-Auth-Request-User`; `user_claim sub` keeps that value for the application.
fn provider() -> String {
    provider_block_with(&["user_claim sub;"])
}

const PAGE: &str = "/some/page?x=1";

/// Where the users log in: client `test` of the stand-in provider or of the real Keycloak.
struct Idp {
    issuer: String,
    client_secret: String,
    _stand_in: Option<Provider>,
}

impl Idp {
    /// The stand-in provider, accepting the callbacks of nginx on `ports`.
    fn stand_in(ports: &[u16]) -> Idp {
        let provider = Provider::start(
            ProviderOptions {
                redirect_uris: ports
                    .iter()
                    .map(|p| format!("http://127.0.0.1:{p}/oauth2/callback"))
                    .collect(),
                client_secret: Some(format!("cs-{}", random_hex(12))),
                ..Default::default()
            },
            None,
        );
        Idp {
            issuer: provider.issuer.clone(),
            client_secret: provider.client_secret.clone(),
            _stand_in: Some(provider),
        }
    }

    /// The realm of README.md in the real Keycloak (it accepts any callback on 127.0.0.1).
    fn keycloak() -> Idp {
        Idp {
            issuer: keycloak().issuer(REALM),
            client_secret: client_secret("test").into(),
            _stand_in: None,
        }
    }
}

/// nginx with one of the two files, the application behind it, and oauth2-proxy for the seed's.
struct Site {
    // Drop order = field order: nginx first, the dir last.
    nginx: Nginx,
    _oauth2_proxy: Option<OAuth2Proxy>,
    upstream: EchoUpstream,
    port: u16,
    issuer: String,
    _dir: TempDir,
}

impl Site {
    /// The seed's setup on `port`: oauth2-proxy.conf and the real oauth2-proxy next to it.
    fn seed(idp: &Idp, port: u16) -> Site {
        let oauth2_proxy_port = free_port();
        let http = format!("{BACKEND}{SEED_HTTP}{OAUTH2_PROXY_CONF}")
            .replace("@OAUTH2_PROXY_PORT@", &oauth2_proxy_port.to_string());
        let mut site = Site::start(idp, port, false, &http);
        site._oauth2_proxy = Some(OAuth2Proxy::start(
            oauth2_proxy_port,
            (&idp.issuer, "test", &idp.client_secret),
            &site.url("/oauth2/callback"),
            &site._dir.path,
        ));
        site
    }

    /// The same file pointed at the module: no oauth2-proxy.
    fn migrated(idp: &Idp, port: u16) -> Site {
        Site::start(
            idp,
            port,
            true,
            &format!("{BACKEND}{}{NGX_OIDC_CONF}", provider()),
        )
    }

    fn start(idp: &Idp, port: u16, with_module: bool, http: &str) -> Site {
        let dir = TempDir::new("migration");
        let upstream = EchoUpstream::start();
        let keys = dir.write("cookie-keys", &format!("{}\n", new_cookie_key()));
        let vars = Vars::site(port, upstream.port, &idp.issuer, &idp.client_secret, &keys);
        let nginx = Nginx::start(
            &dir.path,
            port,
            with_module,
            WORKER_CONNECTIONS,
            &vars.render(http),
        );
        Site {
            nginx,
            _oauth2_proxy: None,
            upstream,
            port,
            issuer: idp.issuer.clone(),
            _dir: dir,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// A browser that, like Chromium, keeps `Secure` cookies on http://127.0.0.1 (Keycloak
    /// sets its login cookies `Secure` over http).
    fn browser(&self) -> Browser {
        let mut b = Browser::new();
        b.jar.loopback_is_secure = true;
        b
    }

    /// What the application received for `user`'s first page after logging in, checking that
    /// the browser landed on the page it asked for and that a second page needs no new login.
    fn login_as(&self, user: &str) -> EchoRequest {
        let mut b = self.browser();
        b.login_ok(&self.url(PAGE), user);
        let got = self
            .upstream
            .last()
            .expect("the application got no request");
        assert_eq!(
            got.path,
            PAGE,
            "{user} did not land on the page\n{}",
            b.transcript()
        );
        let again = b.get(&self.url("/another/page"), &[]);
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

    /// nginx logged no alert, crash or token.
    fn assert_error_log_is_clean(&self) {
        let log = self.nginx.error_log();
        for bad in ["[alert]", "exited on signal", "eyJ"] {
            assert!(!log.contains(bad), "nginx's error.log shows {bad}:\n{log}");
        }
    }
}

/// Logs `users` in through the seed's setup, then through the migrated one, and checks that
/// the application received the same X-User and X-Email for each.
fn same_headers_before_and_after(idp: &Idp, ports: [u16; 2], users: &[&str]) {
    let seed = Site::seed(idp, ports[0]);
    let before: Vec<EchoRequest> = users.iter().map(|u| seed.login_as(u)).collect();
    drop(seed);
    let migrated = Site::migrated(idp, ports[1]);
    for (user, before) in users.iter().zip(&before) {
        let after = migrated.login_as(user);
        eprintln!(
            "{user}: with oauth2-proxy X-User {:?} X-Email {:?}; with the module X-User {:?} X-Email {:?}",
            before.headers.get("x-user"),
            before.headers.get("x-email"),
            after.headers.get("x-user"),
            after.headers.get("x-email"),
        );
        for h in ["x-user", "x-email"] {
            let v = before.headers.get(h);
            assert!(
                v.is_some_and(|v| !v.is_empty()),
                "oauth2-proxy passed no {h} for {user}: {:?}",
                before.headers
            );
            assert_eq!(
                after.headers.get(h),
                v,
                "{h} of {user} differs after the migration"
            );
        }
    }
    assert_eq!(
        before[0].headers["x-email"],
        format!("{}@example.com", users[0])
    );
    migrated.assert_error_log_is_clean();
}

#[test]
fn the_seed_config_works_with_oauth2_proxy_and_migrated_with_the_module_with_the_same_headers() {
    let ports = [free_port(), free_port()];
    same_headers_before_and_after(&Idp::stand_in(&ports), ports, &["demo", "alice"]);
}

#[test]
fn against_a_real_keycloak_the_seed_config_and_the_migrated_one_give_the_same_headers() {
    same_headers_before_and_after(
        &Idp::keycloak(),
        [free_port(), free_port()],
        &["demo", "alice"],
    );
}

#[test]
fn without_a_session_both_setups_send_the_browser_to_the_provider_and_nothing_to_the_application() {
    let ports = [free_port(), free_port()];
    let idp = Idp::stand_in(&ports);
    let seed = Site::seed(&idp, ports[0]);
    let migrated = Site::migrated(&idp, ports[1]);
    for (name, site) in [("oauth2-proxy", &seed), ("ngx-oidc", &migrated)] {
        let mut b = site.browser();
        let r = b.get(&site.url(PAGE), &[]);
        let auth = format!("{}/protocol/openid-connect/auth?", site.issuer);
        assert!(
            r.status == 302 && r.location().is_some_and(|l| l.starts_with(&auth)),
            "{name}: expected a redirect to {auth}..., got {}",
            r.summary()
        );
        assert_eq!(site.upstream.count(), 0, "{name} let a request through");
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
