//! A real Keycloak for the end-to-end tests: `scripts/keycloak.sh start`, once per test binary
//! (or once per test run: `scripts/test.sh` starts one and passes its `keycloak.env` in
//! `NGX_OIDC_KEYCLOAK_ENV`), with the realms of `tests/keycloak/*.json`; plus the admin REST
//! API calls the tests make as an administrator would, and nginx in front of it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::*;

/// The realm that follows README.md (client `test`, default client scopes, Group Membership
/// mapper, `aud: account` access tokens, RS256).
pub const REALM: &str = "test";
/// The realm with "Revoke Refresh Token" on (max reuse 0) and 5-second access tokens.
pub const ROTATE_REALM: &str = "rotate";

/// One running Keycloak, as `scripts/keycloak.sh` describes it in `keycloak.env`.
#[derive(Debug)]
pub struct Keycloak {
    /// `http://127.0.0.1:PORT`
    pub url: String,
    /// `https://127.0.0.1:PORT`, certificate signed by `ca`.
    pub https_url: String,
    /// The test CA (PEM).
    pub ca: PathBuf,
    pub version: String,
    /// Seconds from launch until every realm answered.
    pub start_seconds: String,
    pub log: PathBuf,
    admin_user: String,
    admin_password: String,
}

fn read_env_file(path: &Path) -> HashMap<String, String> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The Keycloak of this test binary, started on first use (a minute or two on 2 cores) and
/// stopped by a watchdog of `scripts/keycloak.sh` when the binary exits.
pub fn keycloak() -> &'static Keycloak {
    static KC: OnceLock<Keycloak> = OnceLock::new();
    KC.get_or_init(|| {
        let env_file = match std::env::var_os("NGX_OIDC_KEYCLOAK_ENV") {
            Some(f) => PathBuf::from(f),
            None => start_own(),
        };
        let e = read_env_file(&env_file);
        let get = |k: &str| {
            e.get(k)
                .cloned()
                .unwrap_or_else(|| panic!("{} has no {k}", env_file.display()))
        };
        let kc = Keycloak {
            url: get("KC_URL"),
            https_url: get("KC_HTTPS_URL"),
            ca: PathBuf::from(get("KC_CA")),
            version: get("KC_VERSION"),
            start_seconds: get("KC_START_SECONDS"),
            log: PathBuf::from(get("KC_LOG")),
            admin_user: get("KC_ADMIN_USER"),
            admin_password: get("KC_ADMIN_PASSWORD"),
        };
        eprintln!(
            "Keycloak {} at {} and {} (started in {} s)",
            kc.version, kc.url, kc.https_url, kc.start_seconds
        );
        kc
    })
}

fn start_own() -> PathBuf {
    // Not a TempDir: Keycloak outlives every test of the binary (statics are never dropped).
    let dir = std::env::temp_dir().join(format!("ngx-oidc-keycloak-{}", std::process::id()));
    let script = Path::new(ROOT).join("scripts/keycloak.sh");
    let log = std::env::temp_dir().join(format!("ngx-oidc-keycloak-{}.out", std::process::id()));
    let out = std::fs::File::create(&log).expect("create the keycloak.sh log");
    let started = Instant::now();
    let status = Command::new(&script)
        .arg("start")
        .arg(&dir)
        .env(
            "NGX_OIDC_KEYCLOAK_OWNER_PID",
            std::process::id().to_string(),
        )
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .status()
        .expect("run scripts/keycloak.sh");
    assert!(
        status.success(),
        "scripts/keycloak.sh start failed ({status}) after {:?}:\n{}",
        started.elapsed(),
        tail(&log, 40)
    );
    dir.join("keycloak.env")
}

impl Keycloak {
    /// The issuer of `realm` over http.
    pub fn issuer(&self, realm: &str) -> String {
        format!("{}/realms/{realm}", self.url)
    }

    /// The issuer of `realm` over https (Keycloak in dev mode names the issuer after the URL
    /// it was reached at).
    pub fn https_issuer(&self, realm: &str) -> String {
        format!("{}/realms/{realm}", self.https_url)
    }

    fn agent() -> ureq::Agent {
        ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(30))
            .build()
    }

    /// A token for the admin REST API (master realm, `admin-cli`); they live 60 s, so every
    /// call takes a fresh one.
    fn admin_token(&self) -> String {
        let r: Value = Self::agent()
            .post(&format!(
                "{}/realms/master/protocol/openid-connect/token",
                self.url
            ))
            .send_form(&[
                ("grant_type", "password"),
                ("client_id", "admin-cli"),
                ("username", &self.admin_user),
                ("password", &self.admin_password),
            ])
            .expect("admin token")
            .into_json()
            .expect("admin token JSON");
        r["access_token"]
            .as_str()
            .expect("access_token")
            .to_string()
    }

    /// `METHOD /admin/realms/<path>` with an optional JSON body; returns the JSON answer
    /// (`Null` for an empty one).
    pub fn admin(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/admin/realms/{path}", self.url);
        let req = Self::agent()
            .request(method, &url)
            .set("Authorization", &format!("Bearer {}", self.admin_token()));
        let r = match body {
            Some(b) => req.send_json(b),
            None => req.call(),
        };
        let r = r.unwrap_or_else(|e| panic!("admin API {method} {url}: {e}"));
        let text = r.into_string().unwrap_or_default();
        if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{url}: not JSON ({e}): {text}"))
        }
    }

    /// The id of `username` in `realm`.
    pub fn user_id(&self, realm: &str, username: &str) -> String {
        let users = self.admin(
            "GET",
            &format!("{realm}/users?exact=true&username={username}"),
            None,
        );
        users[0]["id"]
            .as_str()
            .unwrap_or_else(|| panic!("no user {username} in realm {realm}: {users}"))
            .to_string()
    }

    /// The client representation of `client_id` in `realm`.
    pub fn client(&self, realm: &str, client_id: &str) -> Value {
        let clients = self.admin(
            "GET",
            &format!("{realm}/clients?clientId={client_id}"),
            None,
        );
        let c = clients[0].clone();
        assert!(c.is_object(), "no client {client_id} in realm {realm}");
        c
    }

    /// Sets one attribute of a client, as an administrator does in the admin console.
    pub fn set_client_attribute(&self, realm: &str, client_id: &str, name: &str, value: &str) {
        let mut c = self.client(realm, client_id);
        c["attributes"][name] = json!(value);
        let id = c["id"].as_str().unwrap().to_string();
        self.admin("PUT", &format!("{realm}/clients/{id}"), Some(c));
    }

    /// "Sign out" of a user in the admin console: ends all the user's sessions and sends
    /// back-channel logout tokens to the clients that have a back-channel logout URL.
    pub fn sign_out_user(&self, realm: &str, username: &str) {
        let id = self.user_id(realm, username);
        self.admin("POST", &format!("{realm}/users/{id}/logout"), None);
    }

    /// The user events (admin events API) of `username` in `realm` of type `kind`
    /// (`REFRESH_TOKEN`, `REFRESH_TOKEN_ERROR`, `LOGIN`, ...).
    pub fn events(&self, realm: &str, username: &str, kind: &str) -> Vec<Value> {
        let id = self.user_id(realm, username);
        let events = self.admin(
            "GET",
            &format!("{realm}/events?user={id}&type={kind}&max=1000"),
            None,
        );
        events.as_array().cloned().unwrap_or_default()
    }

    /// A token response for `user` (password = user name) from the resource-owner password
    /// grant, as a script calling an API would get one.
    pub fn password_grant(&self, realm: &str, client_id: &str, secret: &str, user: &str) -> Value {
        Self::agent()
            .post(&format!(
                "{}/protocol/openid-connect/token",
                self.issuer(realm)
            ))
            .send_form(&[
                ("grant_type", "password"),
                ("client_id", client_id),
                ("client_secret", secret),
                ("username", user),
                ("password", user),
                ("scope", "openid"),
            ])
            .unwrap_or_else(|e| panic!("password grant for {user} at {client_id}: {e}"))
            .into_json()
            .expect("token response JSON")
    }
}

/// The client secrets of `tests/keycloak/realm-*.json`.
pub fn client_secret(client_id: &str) -> &'static str {
    match client_id {
        "test" => "test-client-secret",
        "test-aud" => "test-aud-client-secret",
        "backchannel" => "backchannel-client-secret",
        other => panic!("no client {other} in the test realms"),
    }
}

/// Settings of one nginx in front of the shared Keycloak.
#[derive(Clone, Debug)]
pub struct KcOptions {
    pub realm: &'static str,
    pub client_id: &'static str,
    /// Over https, verified against the test CA.
    pub https: bool,
    /// Directives added to the `oidc_provider` block.
    pub provider_extra: String,
}

impl Default for KcOptions {
    fn default() -> Self {
        KcOptions {
            realm: REALM,
            client_id: "test",
            https: false,
            provider_extra: String::new(),
        }
    }
}

/// The config of the tests against Keycloak: the README's provider block, and locations
/// with the rules the tests exercise.
pub fn kc_http() -> String {
    let locations = [
        protected_location("/realm-admins/", "oidc_require_roles app-admin;"),
        protected_location("/test-editors/", "oidc_require_roles test:editor;"),
        protected_location("/api/", "oidc_bearer on;"),
        protected_location("/tokens/", "oidc_pass_access_token on;"),
    ]
    .concat();
    format!(
        r#"
    oidc_provider keycloak {{
        issuer             @ISSUER@;
        client_id          @CLIENT_ID@;
        client_secret      @CLIENT_SECRET@;
        cookie_secret_file @KEYS@;
        cookie_secure      off;
        @PROVIDER_EXTRA@
    }}
    server {{
        listen 127.0.0.1:@PORT@;
        location /_oidc {{
            internal;
            proxy_pass $oidc_fetch_url;
            proxy_ssl_verify on;
            proxy_ssl_trusted_certificate @CA@;
            proxy_ssl_server_name on;
        }}
        location /oauth2/ {{ oidc_endpoints keycloak; }}
        location / {{ oidc_auth keycloak; proxy_pass http://127.0.0.1:@UPSTREAM@; }}
{locations}    }}
"#
    )
}

/// nginx with the module in front of the shared Keycloak, plus an echo upstream.
pub struct KcEnv {
    // Drop order = field order: nginx first, the dir last.
    pub nginx: Nginx,
    pub upstream: EchoUpstream,
    pub port: u16,
    pub kc: &'static Keycloak,
    pub opts: KcOptions,
    pub issuer: String,
    pub dir: TempDir,
}

impl KcEnv {
    pub fn start(opts: KcOptions) -> KcEnv {
        let kc = keycloak();
        let dir = TempDir::new("kc");
        let port = free_port();
        let upstream = EchoUpstream::start();
        let keys = dir.write("cookie-keys", &format!("{}\n", new_cookie_key()));
        let issuer = if opts.https {
            kc.https_issuer(opts.realm)
        } else {
            kc.issuer(opts.realm)
        };
        let mut vars = Vars::site(
            port,
            upstream.port,
            &issuer,
            client_secret(opts.client_id),
            &keys,
        );
        vars.set("CLIENT_ID", opts.client_id)
            .set("CA", kc.ca.display().to_string())
            .set("PROVIDER_EXTRA", opts.provider_extra.clone());
        let nginx = Nginx::start(
            &dir.path,
            port,
            true,
            WORKER_CONNECTIONS,
            &vars.render(&kc_http()),
        );
        KcEnv {
            nginx,
            upstream,
            port,
            kc,
            opts,
            issuer,
            dir,
        }
    }

    /// `http://127.0.0.1:<nginx port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// A fresh browser that, like Chromium, keeps `Secure` cookies on http://127.0.0.1 (where
    /// Keycloak sets its login cookies `Secure` over http), trusts the test CA, and waits up
    /// to a minute for an answer (nginx's own provider timeout).
    pub fn browser(&self) -> Browser {
        let mut b = Browser::patient(Duration::from_secs(60), Some(&self.kc.ca));
        b.jar.loopback_is_secure = true;
        b
    }

    /// Logs `user` in (password = user name) through Keycloak's login form from `page`;
    /// asserts that the upstream served `page`.
    pub fn logged_in(&self, page: &str, user: &str) -> Browser {
        let mut b = self.browser();
        let r = b.login_ok(&self.url(page), user);
        assert_eq!(r.json()["path"], page, "{}", b.transcript());
        b
    }

    pub fn error_log(&self) -> String {
        self.nginx.error_log()
    }

    /// nginx's error log holds no client secret, JWT, authorization code or state, no
    /// `[alert]`, and no worker crashed.
    pub fn assert_error_log_is_clean(&self) {
        let log = self.error_log();
        let problems: Vec<&str> = [
            (
                log.contains(client_secret(self.opts.client_id)),
                "the client secret",
            ),
            (log.contains("eyJ"), "a JWT (eyJ...)"),
            (shows_one_time_value(&log), "an authorization code or state"),
            (log.contains("[alert]"), "an [alert]"),
            (log.contains("exited on signal"), "a crashed worker"),
        ]
        .into_iter()
        .filter_map(|(found, what)| found.then_some(what))
        .collect();
        assert!(
            problems.is_empty(),
            "nginx's error.log ({}) contains {}",
            self.nginx.error_log.display(),
            problems.join(", ")
        );
    }
}
