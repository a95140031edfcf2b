//! End-to-end test harness: a real nginx (the vendored binary) with the module loaded, the test
//! OpenID Provider (`node tests/idp/server.js`), an echo upstream, and a browser-like client.
//!
//! Every test gets its own ports and temp dir, so tests run in parallel. When a test panics, the
//! harness prints the browser's transcript, the tail of nginx's error.log and of the provider's
//! log, and keeps the temp dir for a look.
#![allow(dead_code)] // each test binary uses a different part of the harness

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use url::Url;

pub mod cluster;
pub mod keycloak;

pub const ROOT: &str = env!("CARGO_MANIFEST_DIR");

// ------------------------------------------------------------------------------------ paths

fn built(var: &str, under_target: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(ROOT).join("target"));
    let p = std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| target.join(under_target));
    if !p.is_file() {
        panic!(
            "{} not found ({var} unset or wrong): run scripts/build.sh first",
            p.display()
        );
    }
    p
}

/// The nginx binary: `$NGX_OIDC_NGINX` or `target/ngx-oidc/sbin/nginx` (scripts/build.sh).
pub fn nginx_binary() -> PathBuf {
    built("NGX_OIDC_NGINX", "ngx-oidc/sbin/nginx")
}

/// The module: `$NGX_OIDC_MODULE` or `target/ngx-oidc/modules/ngx_http_oidc_module.so`.
pub fn module_path() -> PathBuf {
    built(
        "NGX_OIDC_MODULE",
        "ngx-oidc/modules/ngx_http_oidc_module.so",
    )
}

// ------------------------------------------------------------------------------------ misc

/// A free TCP port on 127.0.0.1, never the same twice in one test binary.
pub fn free_port() -> u16 {
    static TAKEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    let mut taken = TAKEN.lock().unwrap();
    let taken = taken.get_or_insert_with(HashSet::new);
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("bind 127.0.0.1:0")
            .port();
        if taken.insert(port) {
            return port;
        }
    }
}

pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .expect("read /dev/urandom");
    buf
}

pub fn random_hex(n: usize) -> String {
    random_bytes(n).iter().map(|b| format!("{b:02x}")).collect()
}

/// Standard base64 with padding (the cookie key file format).
pub fn base64_std(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

pub fn base64_url(data: &[u8]) -> String {
    base64_std(data)
        .trim_end_matches('=')
        .replace('+', "-")
        .replace('/', "_")
}

/// A fresh 32-byte cookie key, base64 (standard) encoded.
pub fn new_cookie_key() -> String {
    base64_std(&random_bytes(32))
}

pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| format!("<{e}>"));
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// A temp dir, removed on drop unless the test failed (then kept and its path printed).
pub struct TempDir {
    pub path: PathBuf,
}

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "ngx-oidc-{tag}-{}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst),
            random_hex(3)
        ));
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir { path }
    }

    pub fn join(&self, p: &str) -> PathBuf {
        self.path.join(p)
    }

    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let p = self.join(name);
        std::fs::write(&p, contents).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!("(kept {} for inspection)", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

pub fn kill(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .args([format!("-{signal}"), pid.to_string()])
        .stderr(Stdio::null())
        .status();
}

/// Is process `pid` stopped by a signal (state `T` in `/proc/PID/stat`)?
fn process_stopped(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|st| {
            // The state follows the command name, which is in parentheses and may hold spaces.
            let after = &st[st.rfind(')')? + 1..];
            after.split_whitespace().next().map(|state| state == "T")
        })
        .unwrap_or(false)
}

/// ESTABLISHED IPv4 TCP sockets whose local port is `port` (the server side of connections to
/// a listener on 127.0.0.1:`port`), from `/proc/net/tcp`.
pub fn established_to_port(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("read /proc/net/tcp");
    let local = format!(":{port:04X}");
    table
        .lines()
        .skip(1)
        .filter(|l| {
            let mut f = l.split_whitespace();
            let (local_addr, state) = (f.nth(1), f.nth(1));
            local_addr.is_some_and(|a| a.ends_with(&local)) && state == Some("01")
        })
        .count()
}

/// Stops a peer process started by the harness: SIGTERM, SIGKILL after 3 s. When a test is
/// failing, the last lines of the peer's log (`what` names it) go to stderr first.
fn stop_peer(child: &mut Child, what: &str, log: &Path) {
    if thread::panicking() {
        eprintln!(
            "---- {what} log ({}), last lines:\n{}",
            log.display(),
            tail(log, 30)
        );
    }
    kill(child.id(), "TERM");
    if !wait_exit(child, Duration::from_secs(3)) {
        let _ = child.kill();
        let _ = child.wait();
    }
}

fn wait_exit(child: &mut Child, timeout: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if let Ok(Some(_)) = child.try_wait() {
            return true;
        }
        thread::sleep(Duration::from_millis(20));
    }
    false
}

// ------------------------------------------------------------------------------------ provider

/// Settings for the test OpenID Provider.
#[derive(Clone, Debug, Default)]
pub struct ProviderOptions {
    pub port: Option<u16>,
    pub client_secret: Option<String>,
    pub redirect_uris: Vec<String>,
    pub post_logout_redirect_uris: Vec<String>,
    pub access_token_ttl: Option<u32>,
    pub id_token_ttl: Option<u32>,
    pub refresh_token_ttl: Option<u32>,
    /// Any other IDP_* variables.
    pub env: Vec<(String, String)>,
}

/// `node tests/idp/server.js` on its own port; killed on drop.
pub struct Provider {
    pub port: u16,
    pub issuer: String,
    pub client_id: String,
    pub client_secret: String,
    pub log: PathBuf,
    child: Child,
    _dir: Option<TempDir>,
}

impl Provider {
    /// Starts the provider, logging into `log_dir` (or a temp dir of its own).
    pub fn start(opts: ProviderOptions, log_dir: Option<&Path>) -> Provider {
        let server = Path::new(ROOT).join("tests/idp/server.js");
        assert!(server.is_file(), "{} is missing", server.display());
        assert!(
            Path::new(ROOT).join("tests/idp/node_modules").is_dir(),
            "tests/idp/node_modules is missing: run `npm ci --prefix tests/idp` (scripts/test.sh does)"
        );
        let (own_dir, dir) = match log_dir {
            Some(d) => (None, d.to_path_buf()),
            None => {
                let d = TempDir::new("idp");
                let p = d.path.clone();
                (Some(d), p)
            }
        };
        let port = opts.port.unwrap_or_else(free_port);
        let client_secret = opts
            .client_secret
            .clone()
            .unwrap_or_else(|| "secret".into());
        let log = dir.join("idp.log");
        let out = std::fs::File::create(&log).expect("create idp.log");
        let mut cmd = Command::new("node");
        cmd.arg(&server)
            .current_dir(ROOT)
            .env("IDP_PORT", port.to_string())
            .env("IDP_REALM", "test")
            .env("IDP_CLIENT_ID", "test")
            .env("IDP_CLIENT_SECRET", &client_secret)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out);
        if !opts.redirect_uris.is_empty() {
            cmd.env("IDP_REDIRECT_URIS", opts.redirect_uris.join(","));
        }
        if !opts.post_logout_redirect_uris.is_empty() {
            cmd.env(
                "IDP_POST_LOGOUT_REDIRECT_URIS",
                opts.post_logout_redirect_uris.join(","),
            );
        }
        for (k, v) in [
            ("IDP_ACCESS_TOKEN_TTL", opts.access_token_ttl),
            ("IDP_ID_TOKEN_TTL", opts.id_token_ttl),
            ("IDP_REFRESH_TOKEN_TTL", opts.refresh_token_ttl),
        ] {
            if let Some(v) = v {
                cmd.env(k, v.to_string());
            }
        }
        for (k, v) in &opts.env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn node (is Node.js installed?)");
        let mut p = Provider {
            port,
            issuer: format!(
                "http://127.0.0.1:{port}/realms/test{}",
                if opts
                    .env
                    .iter()
                    .any(|(k, v)| k == "IDP_ISSUER_TRAILING_SLASH" && v == "1")
                {
                    "/"
                } else {
                    ""
                }
            ),
            client_id: "test".into(),
            client_secret,
            log,
            child,
            _dir: own_dir,
        };
        let agent = plain_agent();
        let health = format!("http://127.0.0.1:{port}/_test/health");
        wait_for(
            "the test provider's /_test/health",
            Duration::from_secs(30),
            || {
                if let Ok(Some(status)) = p.child.try_wait() {
                    panic!(
                        "the test provider exited ({status}) during startup:\n{}",
                        tail(&p.log, 40)
                    );
                }
                match agent.get(&health).call() {
                    Ok(r) if r.status() == 200 => Some(()),
                    _ => None,
                }
            },
        );
        p
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// `GET /_test/stats`.
    pub fn stats(&self) -> Value {
        plain_agent()
            .get(&self.url("/_test/stats"))
            .call()
            .expect("GET /_test/stats")
            .into_json()
            .expect("stats JSON")
    }

    /// All back-channel calls the provider has seen (token, discovery, JWKS, userinfo).
    pub fn calls(&self) -> u64 {
        let s = self.stats();
        let n = |v: &Value| v.as_u64().unwrap_or(0);
        n(&s["token_requests"]["authorization_code"])
            + n(&s["token_requests"]["refresh_token"])
            + n(&s["discovery_requests"])
            + n(&s["jwks_requests"])
            + n(&s["userinfo_requests"])
    }

    pub fn reset(&self) {
        plain_agent()
            .post(&self.url("/_test/reset"))
            .call()
            .expect("POST /_test/reset");
    }

    /// Ends every login at the provider (like Keycloak's "sign out all sessions"): refresh
    /// tokens then get `invalid_grant`.
    pub fn revoke_grants(&self) {
        plain_agent()
            .post(&self.url("/_test/revoke-grants"))
            .call()
            .expect("POST /_test/revoke-grants");
    }

    /// Access and ID tokens issued from now on (refreshed ones too) live `access` and `id`
    /// seconds: a test lets the first tokens expire fast, then keeps the refreshed ones valid
    /// for the rest of the test however slow the machine is.
    pub fn set_token_ttls(&self, access: u32, id: u32) {
        plain_agent()
            .post(&self.url(&format!("/_test/set-token-ttls?access={access}&id={id}")))
            .call()
            .expect("POST /_test/set-token-ttls");
    }

    /// Changes `user`'s groups at the provider, as an admin would; later tokens carry them.
    pub fn set_groups(&self, user: &str, groups: &[&str]) {
        plain_agent()
            .post(&self.url(&format!(
                "/_test/set-groups?user={user}&groups={}",
                groups.join(",")
            )))
            .call()
            .expect("POST /_test/set-groups");
    }

    /// Gives `user` these claims at the provider (any JSON value, control characters
    /// included); later tokens carry them instead of the user's own.
    pub fn set_claims(&self, user: &str, claims: &Value) {
        plain_agent()
            .post(&self.url(&format!("/_test/set-claims?user={user}")))
            .send_json(claims.clone())
            .expect("POST /_test/set-claims");
    }

    /// `POST /_test/fault?what=..&kind=..`: every answer of `what` (`token`, `discovery`,
    /// `jwks`) becomes `kind` (`500`, `badjson`, `huge`/`hugechunked` = a 10 MB body with and
    /// without Content-Length) until `clear_faults`.
    pub fn fault(&self, what: &str, kind: &str) {
        plain_agent()
            .post(&self.url(&format!("/_test/fault?what={what}&kind={kind}")))
            .call()
            .expect("POST /_test/fault");
    }

    /// `POST /_test/fault?what=..&kind=hold&n=N`: the next `n` answers of `what` wait until
    /// all `n` requests have arrived, so `n` provider calls are in flight at once.
    pub fn hold(&self, what: &str, n: usize) {
        plain_agent()
            .post(&self.url(&format!("/_test/fault?what={what}&kind=hold&n={n}")))
            .call()
            .expect("POST /_test/fault?kind=hold");
    }

    /// `POST /_test/fault?clear=1`.
    pub fn clear_faults(&self) {
        plain_agent()
            .post(&self.url("/_test/fault?clear=1"))
            .call()
            .expect("POST /_test/fault?clear=1");
    }

    /// Freezes the provider (SIGSTOP): connections are accepted by the kernel but never
    /// answered, like a provider stuck under load. Returns once the process is stopped.
    pub fn pause(&self) {
        kill(self.child.id(), "STOP");
        wait_for("the provider to stop", Duration::from_secs(5), || {
            process_stopped(self.child.id()).then_some(())
        });
    }

    /// Undoes `pause` (SIGCONT); returns once the process runs again.
    pub fn resume(&self) {
        kill(self.child.id(), "CONT");
        wait_for("the provider to continue", Duration::from_secs(5), || {
            (!process_stopped(self.child.id())).then_some(())
        });
    }

    /// Connections to the provider's port that the kernel has accepted, whether or not the
    /// (possibly frozen) provider has taken them from its accept queue yet.
    pub fn open_connections(&self) -> usize {
        established_to_port(self.port)
    }

    /// Stops the provider for good: connections to its port are refused from now on.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        stop_peer(&mut self.child, "test provider", &self.log);
    }
}

fn plain_agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .redirects(0)
        .timeout(Duration::from_secs(10))
        .build()
}

// ------------------------------------------------------------------------------------ oauth2-proxy

/// The real oauth2-proxy: `$NGX_OIDC_OAUTH2_PROXY`, or where scripts/build-oauth2-proxy.sh
/// caches it (`~/.cache/ngx-oidc/bin/oauth2-proxy`).
pub fn oauth2_proxy_binary() -> PathBuf {
    let p = std::env::var_os("NGX_OIDC_OAUTH2_PROXY")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let cache = std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache")
                });
            cache.join("ngx-oidc/bin/oauth2-proxy")
        });
    assert!(
        p.is_file(),
        "{} not found: run scripts/build-oauth2-proxy.sh (scripts/test.sh does)",
        p.display()
    );
    p
}

/// oauth2-proxy on 127.0.0.1:`port`, run with the flags of the setup ngx-oidc replaces (the
/// seed article's Deployment); killed on drop.
pub struct OAuth2Proxy {
    pub port: u16,
    pub log: PathBuf,
    child: Child,
}

impl OAuth2Proxy {
    /// Starts it for the client `client_id`/`client_secret` of the provider at `issuer`,
    /// sending browsers back to `redirect_url`; logs to `log_dir/oauth2-proxy.log`. Returns
    /// once `/ping` answers (it has read the provider's discovery document by then).
    pub fn start(
        port: u16,
        (issuer, client_id, client_secret): (&str, &str, &str),
        redirect_url: &str,
        log_dir: &Path,
    ) -> OAuth2Proxy {
        let log = log_dir.join("oauth2-proxy.log");
        let out = std::fs::File::create(&log).expect("create oauth2-proxy.log");
        let cookie_secret = base64_url(&random_bytes(32));
        let child = Command::new(oauth2_proxy_binary())
            .args([
                // The seed's flags, as its Deployment passes them.
                "--skip-provider-button=true",
                "--ssl-insecure-skip-verify",
                "--provider=keycloak-oidc",
                "--upstream=file:///dev/null",
                &format!("--oidc-issuer-url={issuer}"),
                &format!("--redirect-url={redirect_url}"),
                &format!("--http-address=127.0.0.1:{port}"),
                "--email-domain=*",
                "--cookie-secure=false",
                "--insecure-oidc-allow-unverified-email=true",
                // The seed's nginx.conf reads X-Auth-Request-User/-Email: "requires running with
                // --set-xauthrequest flag".
                "--set-xauthrequest",
                // Keycloak's access tokens say `aud: account` unless an Audience mapper is added
                // (the seed's step 1-4); keycloak-oidc verifies the access token's audience,
                // so this stands in for that mapper without changing the realm.
                "--oidc-extra-audience=account",
                // The test realm requires PKCE (README's client setup), as the module uses it.
                "--code-challenge-method=S256",
            ])
            .env("OAUTH2_PROXY_CLIENT_ID", client_id)
            .env("OAUTH2_PROXY_CLIENT_SECRET", client_secret)
            .env("OAUTH2_PROXY_COOKIE_SECRET", &cookie_secret)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("spawn oauth2-proxy");
        let mut o = OAuth2Proxy { port, log, child };
        let agent = plain_agent();
        let ping = format!("http://127.0.0.1:{port}/ping");
        wait_for("oauth2-proxy's /ping", Duration::from_secs(30), || {
            if let Ok(Some(status)) = o.child.try_wait() {
                panic!(
                    "oauth2-proxy exited ({status}) during startup:\n{}",
                    tail(&o.log, 40)
                );
            }
            match agent.get(&ping).call() {
                Ok(r) if r.status() == 200 => Some(()),
                _ => None,
            }
        });
        o
    }
}

impl Drop for OAuth2Proxy {
    fn drop(&mut self) {
        stop_peer(&mut self.child, "oauth2-proxy", &self.log);
    }
}

// ------------------------------------------------------------------------------------ upstream

/// One request as the echo upstream received it.
#[derive(Clone, Debug)]
pub struct EchoRequest {
    pub method: String,
    pub path: String,
    /// Lowercase names; repeated headers are joined with ", ".
    pub headers: HashMap<String, String>,
    /// Every header line as received, in order: lowercase name and value.
    pub lines: Vec<(String, String)>,
}

impl EchoRequest {
    /// The values of every header line named `name` (lowercase).
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.lines
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// A std::net HTTP server answering every request with JSON
/// `{"method", "path", "headers": {lowercase name: value}}`.
pub struct EchoUpstream {
    pub port: u16,
    pub requests: Arc<Mutex<Vec<EchoRequest>>>,
    stop: Arc<AtomicBool>,
}

impl EchoUpstream {
    pub fn start() -> EchoUpstream {
        // Its port comes from free_port too: a port the kernel hands out for 127.0.0.1:0 may
        // be one that free_port just gave a test's nginx, which has not bound it yet.
        let listener = loop {
            if let Ok(l) = TcpListener::bind(("127.0.0.1", free_port())) {
                break l;
            }
        };
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (reqs, stopped) = (requests.clone(), stop.clone());
        thread::spawn(move || {
            for stream in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(stream) = stream {
                    let reqs = reqs.clone();
                    thread::spawn(move || {
                        let _ = echo_connection(stream, &reqs);
                    });
                }
            }
        });
        EchoUpstream {
            port,
            requests,
            stop,
        }
    }

    pub fn count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }

    pub fn last(&self) -> Option<EchoRequest> {
        self.requests.lock().unwrap().last().cloned()
    }
}

impl Drop for EchoUpstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn echo_connection(stream: TcpStream, reqs: &Mutex<Vec<EchoRequest>>) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut out = stream;
    loop {
        // Bytes, not `read_line`: a request may carry non-UTF-8 header values (tests send them).
        let mut raw = Vec::new();
        if reader.read_until(b'\n', &mut raw)? == 0 {
            return Ok(());
        }
        let line = String::from_utf8_lossy(&raw).into_owned();
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or("").to_string();
        let path = parts.next().unwrap_or("").to_string();
        let version = parts.next().unwrap_or("HTTP/1.0").to_string();
        let mut headers: HashMap<String, String> = HashMap::new();
        let mut lines = Vec::new();
        loop {
            let mut raw = Vec::new();
            if reader.read_until(b'\n', &mut raw)? == 0 {
                return Ok(());
            }
            let h = String::from_utf8_lossy(&raw);
            let h = h.trim_end_matches(['\r', '\n']);
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_string());
                lines.push((k.clone(), v.clone()));
                headers
                    .entry(k)
                    .and_modify(|old| {
                        old.push_str(", ");
                        old.push_str(&v)
                    })
                    .or_insert(v);
            }
        }
        let len: usize = headers
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0u8; len];
        reader.read_exact(&mut body)?;
        let keep_alive = version == "HTTP/1.1"
            && !headers
                .get("connection")
                .is_some_and(|c| c.eq_ignore_ascii_case("close"));
        let json = serde_json::json!({ "method": method, "path": path, "headers": headers });
        reqs.lock().unwrap().push(EchoRequest {
            method,
            path,
            headers,
            lines,
        });
        let body = json.to_string();
        write!(
            out,
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
             Cache-Control: no-store\r\nConnection: {}\r\n\r\n{body}",
            body.len(),
            if keep_alive { "keep-alive" } else { "close" }
        )?;
        out.flush()?;
        if !keep_alive {
            return Ok(());
        }
    }
}

// ------------------------------------------------------------------------------------ nginx

/// Values substituted into config templates (`@NAME@`).
#[derive(Clone, Debug, Default)]
pub struct Vars(pub Vec<(String, String)>);

impl Vars {
    /// The placeholders of every site config: `@PORT@` (nginx's port), `@UPSTREAM@` (the echo
    /// upstream's port), `@ISSUER@`, `@CLIENT_SECRET@` and `@KEYS@` (the cookie key file).
    pub fn site(port: u16, upstream: u16, issuer: &str, client_secret: &str, keys: &Path) -> Vars {
        let mut vars = Vars::default();
        vars.set("PORT", port.to_string())
            .set("UPSTREAM", upstream.to_string())
            .set("ISSUER", issuer)
            .set("CLIENT_SECRET", client_secret)
            .set("KEYS", keys.display().to_string());
        vars
    }

    pub fn set(&mut self, k: &str, v: impl Into<String>) -> &mut Self {
        self.0.retain(|(n, _)| n != k);
        self.0.push((k.to_string(), v.into()));
        self
    }

    pub fn render(&self, template: &str) -> String {
        let mut s = template.to_string();
        // Two passes: a value may itself use another placeholder (e.g. `@DIR@/keys`).
        for _ in 0..2 {
            for (k, v) in &self.0 {
                s = s.replace(&format!("@{k}@"), v);
            }
        }
        if let Some(i) = s.find('@') {
            let rest = &s[i + 1..];
            if let Some(j) = rest.find('@') {
                let name = &rest[..j];
                if !name.is_empty() && name.bytes().all(|b| b.is_ascii_uppercase() || b == b'_') {
                    panic!("config template uses @{name}@, which has no value");
                }
            }
        }
        s
    }
}

/// Connections per worker in test configs unless a test says otherwise: room for what a test
/// does one request at a time (a test that holds many connections open sizes its own).
pub const WORKER_CONNECTIONS: usize = 512;

/// The whole nginx.conf around an `http {}` body: foreground master with 2 workers of
/// `worker_connections` each, every path inside `dir`, error_log at info.
pub fn full_config(
    dir: &Path,
    load_module: Option<&Path>,
    worker_connections: usize,
    http_body: &str,
) -> String {
    let d = dir.display();
    let mut c = String::new();
    if let Some(m) = load_module {
        writeln!(c, "load_module {};", m.display()).unwrap();
    }
    writeln!(c, "daemon off;\nmaster_process on;\nworker_processes 2;").unwrap();
    writeln!(c, "pid {d}/nginx.pid;\nerror_log {d}/error.log info;").unwrap();
    if is_root() {
        // Workers would switch to `nobody` and fail to read the temp dir / key files.
        writeln!(c, "user root;").unwrap();
    }
    writeln!(c, "events {{ worker_connections {worker_connections}; }}").unwrap();
    writeln!(
        c,
        "http {{\n    access_log {d}/access.log;\n    client_body_temp_path {d}/tmp/client_body;\n    \
         proxy_temp_path {d}/tmp/proxy;\n    fastcgi_temp_path {d}/tmp/fastcgi;\n    \
         uwsgi_temp_path {d}/tmp/uwsgi;\n    scgi_temp_path {d}/tmp/scgi;\n"
    )
    .unwrap();
    c.push_str(http_body);
    c.push_str("\n}\n");
    c
}

/// The result of `nginx -t`.
#[derive(Debug)]
pub struct ConfigTest {
    pub ok: bool,
    pub stderr: String,
    pub config: String,
}

/// Runs `nginx -t` on `http_body` (rendered with `vars`, plus `@DIR@` = a fresh temp dir that
/// also holds `files`), with the module loaded when `with_module`.
pub fn nginx_t(
    http_body: &str,
    vars: &Vars,
    files: &[(&str, &str)],
    with_module: bool,
) -> ConfigTest {
    let dir = TempDir::new("nginx-t");
    std::fs::create_dir_all(dir.join("tmp")).unwrap();
    for (name, contents) in files {
        dir.write(name, contents);
    }
    let mut vars = vars.clone();
    vars.set("DIR", dir.path.display().to_string());
    let body = vars.render(http_body);
    let module = with_module.then(module_path);
    let config = full_config(&dir.path, module.as_deref(), WORKER_CONNECTIONS, &body);
    let conf = dir.write("nginx.conf", &config);
    let out = Command::new(nginx_binary())
        .arg("-t")
        .arg("-p")
        .arg(format!("{}/", dir.path.display()))
        .arg("-e")
        .arg(dir.join("error.log"))
        .arg("-c")
        .arg(&conf)
        .stdin(Stdio::null())
        .output()
        .expect("run nginx -t");
    ConfigTest {
        ok: out.status.success(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        config,
    }
}

/// nginx in the foreground (`daemon off; master_process on;`) as a child; stopped on drop.
pub struct Nginx {
    pub port: u16,
    pub config: String,
    pub error_log: PathBuf,
    stderr: PathBuf,
    child: Option<Child>,
}

impl Nginx {
    /// Writes `dir/nginx.conf` = `full_config(http_body)` and starts nginx with `-p dir`;
    /// waits until `port` accepts connections.
    pub fn start(
        dir: &Path,
        port: u16,
        with_module: bool,
        worker_connections: usize,
        http_body: &str,
    ) -> Nginx {
        std::fs::create_dir_all(dir.join("tmp")).unwrap();
        let module = with_module.then(module_path);
        let config = full_config(dir, module.as_deref(), worker_connections, http_body);
        let conf = dir.join("nginx.conf");
        std::fs::write(&conf, &config).unwrap();
        let error_log = dir.join("error.log");
        let stderr = dir.join("nginx.stderr");
        let child = Command::new(nginx_binary())
            .arg("-p")
            .arg(format!("{}/", dir.display()))
            .arg("-e")
            .arg(&error_log)
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("spawn nginx");
        let mut n = Nginx {
            port,
            config,
            error_log,
            stderr,
            child: Some(child),
        };
        wait_for("nginx to listen", Duration::from_secs(15), || {
            if let Ok(Some(status)) = n.child.as_mut().unwrap().try_wait() {
                n.child = None;
                panic!(
                    "nginx exited ({status}) during startup.\nstderr:\n{}\nerror.log:\n{}\nconfig:\n{}",
                    tail(&n.stderr, 20),
                    tail(&n.error_log, 20),
                    n.config
                );
            }
            TcpStream::connect(("127.0.0.1", port)).ok().map(|_| ())
        });
        n
    }

    pub fn error_log(&self) -> String {
        std::fs::read_to_string(&self.error_log).unwrap_or_default()
    }

    /// The master's pid.
    pub fn master_pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// `nginx -s reload` (SIGHUP to the master); returns once the new workers have started
    /// and the old ones stopped accepting (each logs `start worker process`, resp. `gracefully
    /// shutting down` once it has closed its listening sockets).
    pub fn reload(&self) {
        let count = |log: &str, line: &str| log.matches(line).count();
        let log = self.error_log();
        let started = count(&log, "start worker process");
        let stopping = count(&log, "gracefully shutting down");
        kill(self.master_pid().expect("nginx is running"), "HUP");
        wait_for("nginx to reload", Duration::from_secs(10), || {
            let log = self.error_log();
            (count(&log, "start worker process") >= started + 2
                && count(&log, "gracefully shutting down") >= stopping + 2)
                .then_some(())
        });
    }

    /// [`Nginx::reload`], then waits until both old workers have exited: every request from
    /// now on is served by a new worker (whose per-worker caches start empty).
    pub fn reload_and_drain(&self) {
        let exited = |log: &str| log.matches("exited with code 0").count();
        let before = exited(&self.error_log());
        self.reload();
        wait_for("the old workers to exit", Duration::from_secs(10), || {
            (exited(&self.error_log()) >= before + 2).then_some(())
        });
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill(child.id(), "QUIT");
            if !wait_exit(&mut child, Duration::from_secs(5)) {
                kill(child.id(), "TERM");
                if !wait_exit(&mut child, Duration::from_secs(3)) {
                    let _ = child.kill();
                    let _ = child.wait();
                }
            }
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!(
                "---- nginx error.log ({}), last lines:\n{}",
                self.error_log.display(),
                tail(&self.error_log, 40)
            );
        }
        self.stop();
    }
}

// ------------------------------------------------------------------------------------ env

/// The provider block of the config contract.
pub const PROVIDER_BLOCK: &str = r#"
    oidc_provider keycloak {
        issuer             @ISSUER@;
        client_id          test;
        client_secret      @CLIENT_SECRET@;
        cookie_secret_file @KEYS@;
        cookie_secure      off;
    }
"#;

/// [`PROVIDER_BLOCK`] with more `directives` (each a whole directive, `;` included, or empty)
/// at the end of the `oidc_provider` block.
pub fn provider_block_with(directives: &[&str]) -> String {
    let mut extra = String::new();
    for d in directives.iter().filter(|d| !d.is_empty()) {
        write!(extra, "\n        {d}").unwrap();
    }
    PROVIDER_BLOCK.replace(
        "cookie_secure      off;",
        &format!("cookie_secure      off;{extra}"),
    )
}

/// The server of the config contract. `@LOCATION_EXTRA@` goes into `location /`.
pub const PROTECTED_SERVER: &str = r#"
    server {
        listen 127.0.0.1:@PORT@;
        location /_oidc { internal; proxy_pass $oidc_fetch_url; }
        location /oauth2/ { oidc_endpoints keycloak; }
        location / {
            oidc_auth keycloak;
            proxy_pass http://127.0.0.1:@UPSTREAM@;
            @LOCATION_EXTRA@
        }
        location /public/ { oidc_auth off; proxy_pass http://127.0.0.1:@UPSTREAM@; }
    }
"#;

/// A `location` at `path` that needs a login with provider `keycloak` and passes to the echo
/// upstream, with `directives` (whole directives, `;` included; rules, further locations)
/// inside it.
pub fn protected_location(path: &str, directives: &str) -> String {
    format!(
        "        location {path} {{\n            oidc_auth keycloak;\n            {directives}\n            \
         proxy_pass http://127.0.0.1:@UPSTREAM@;\n        }}\n"
    )
}

/// [`PROTECTED_SERVER`] with one more [`protected_location`] for each (path, directives) of
/// `locations`.
pub fn protected_server_with(locations: &[(&str, &str)]) -> String {
    let end = PROTECTED_SERVER.rfind('}').expect("the server block's end");
    let mut server = PROTECTED_SERVER[..end].trim_end_matches(' ').to_string();
    for (path, directives) in locations {
        server.push_str(&protected_location(path, directives));
    }
    server.push_str(&PROTECTED_SERVER[end..]);
    server
}

/// A plain reverse proxy, no module: checks the harness itself.
pub const PLAIN_PROXY: &str = r#"
    server {
        listen 127.0.0.1:@PORT@;
        location / { proxy_pass http://127.0.0.1:@UPSTREAM@; }
    }
"#;

#[derive(Clone, Debug)]
pub struct EnvOptions {
    /// The `http {}` body template. Placeholders: `@PORT@` (nginx), `@UPSTREAM@`, `@IDP_PORT@`,
    /// `@ISSUER@`, `@CLIENT_SECRET@`, `@KEYS@` (cookie key file), `@DIR@`, `@LOCATION_EXTRA@`.
    pub http: String,
    pub location_extra: String,
    pub with_module: bool,
    /// `worker_connections` of each of the 2 workers (`WORKER_CONNECTIONS` unless set).
    pub worker_connections: usize,
    pub provider: ProviderOptions,
    /// The scheme nginx's `listen` speaks ("http", or "https" for a listener with `ssl`): the
    /// site's URLs and the callback URLs registered at the provider use it.
    pub scheme: &'static str,
}

impl Default for EnvOptions {
    fn default() -> Self {
        EnvOptions {
            http: format!("{PROVIDER_BLOCK}{PROTECTED_SERVER}"),
            location_extra: String::new(),
            with_module: true,
            worker_connections: WORKER_CONNECTIONS,
            provider: ProviderOptions::default(),
            scheme: "http",
        }
    }
}

impl EnvOptions {
    pub fn plain_proxy() -> Self {
        EnvOptions {
            http: PLAIN_PROXY.to_string(),
            with_module: false,
            ..Default::default()
        }
    }

    /// Extra directives inside `location /` (e.g. `add_header X-Test-User $oidc_user always;`).
    pub fn location_extra(mut self, directives: &str) -> Self {
        self.location_extra = directives.to_string();
        self
    }

    pub fn token_ttls(mut self, access: u32, id: u32, refresh: u32) -> Self {
        self.provider.access_token_ttl = Some(access);
        self.provider.id_token_ttl = Some(id);
        self.provider.refresh_token_ttl = Some(refresh);
        self
    }
}

/// One test's world: provider + echo upstream + nginx, on fresh ports in a fresh temp dir.
pub struct Env {
    // Drop order = field order: nginx first, then the rest, the dir last.
    pub nginx: Nginx,
    pub provider: Provider,
    pub upstream: EchoUpstream,
    pub port: u16,
    pub cookie_keys: Vec<String>,
    pub keys_file: PathBuf,
    pub vars: Vars,
    pub opts: EnvOptions,
    pub dir: TempDir,
}

impl Env {
    /// The config contract with the module loaded.
    pub fn start() -> Env {
        Env::start_with(EnvOptions::default())
    }

    pub fn start_with(mut opts: EnvOptions) -> Env {
        let dir = TempDir::new("e2e");
        let port = free_port();
        let site = format!("{}://127.0.0.1:{port}", opts.scheme);
        if opts.provider.redirect_uris.is_empty() {
            opts.provider.redirect_uris = vec![
                format!("{site}/oauth2/callback"),
                format!("{}://localhost:{port}/oauth2/callback", opts.scheme),
            ];
        }
        if opts.provider.post_logout_redirect_uris.is_empty() {
            opts.provider.post_logout_redirect_uris = vec![
                format!("{site}/"),
                format!("{}://localhost:{port}/", opts.scheme),
            ];
        }
        // Provider settings may name nginx's port before nginx exists (back-channel logout).
        for (_, v) in opts.provider.env.iter_mut() {
            *v = v.replace("@PORT@", &port.to_string());
        }
        if opts.provider.client_secret.is_none() {
            // Distinctive, so that the error-log check can look for it.
            opts.provider.client_secret = Some(format!("cs-{}", random_hex(12)));
        }
        let provider = Provider::start(opts.provider.clone(), Some(&dir.path));
        let upstream = EchoUpstream::start();
        let cookie_keys = vec![new_cookie_key()];
        let keys_file = dir.write("cookie-keys", &format!("{}\n", cookie_keys.join("\n")));
        let mut vars = Vars::site(
            port,
            upstream.port,
            &provider.issuer,
            &provider.client_secret,
            &keys_file,
        );
        vars.set("IDP_PORT", provider.port.to_string())
            .set("DIR", dir.path.display().to_string())
            .set("LOCATION_EXTRA", opts.location_extra.clone());
        let nginx = Nginx::start(
            &dir.path,
            port,
            opts.with_module,
            opts.worker_connections,
            &vars.render(&opts.http),
        );
        Env {
            nginx,
            provider,
            upstream,
            port,
            cookie_keys,
            keys_file,
            vars,
            opts,
            dir,
        }
    }

    /// `http://127.0.0.1:<nginx port><path>` (`https://` with [`EnvOptions::scheme`] https).
    pub fn url(&self, path: &str) -> String {
        format!("{}://127.0.0.1:{}{path}", self.opts.scheme, self.port)
    }

    pub fn browser(&self) -> Browser {
        Browser::new()
    }

    /// Stops nginx and starts it again on the same port with the same config (a restart, not a
    /// reload: the module's per-worker caches start empty).
    pub fn restart_nginx(&mut self) {
        self.nginx.stop();
        let body = self.vars.render(&self.opts.http);
        // The old master may need a moment to release the port.
        let port = self.port;
        wait_for("nginx's port to be free", Duration::from_secs(5), || {
            TcpListener::bind(("127.0.0.1", port)).ok().map(|_| ())
        });
        self.nginx = Nginx::start(
            &self.dir.path,
            self.port,
            self.opts.with_module,
            self.opts.worker_connections,
            &body,
        );
    }

    /// Rewrites the cookie key file (first key encrypts) and restarts nginx.
    pub fn set_cookie_keys(&mut self, keys: &[String]) {
        self.cookie_keys.extend(keys.iter().cloned());
        std::fs::write(&self.keys_file, format!("{}\n", keys.join("\n"))).unwrap();
        self.restart_nginx();
    }

    pub fn error_log(&self) -> String {
        self.nginx.error_log()
    }

    /// The error log never holds the client secret, a cookie key, an authorization code, a JWT
    /// or an `[alert]`, and no worker crashed.
    pub fn assert_error_log_is_clean(&self) {
        let log = self.error_log();
        let mut problems = Vec::new();
        if log.contains(&self.provider.client_secret) {
            problems.push("the client secret".to_string());
        }
        for key in &self.cookie_keys {
            let raw = base64_decode(key);
            let url = base64_url(&raw);
            if log.contains(key.trim_end_matches('=')) || log.contains(&url) {
                problems.push(format!("the cookie key {key}"));
            }
        }
        if shows_one_time_value(&log) {
            problems.push("an authorization code or state (code=...)".into());
        }
        if log.contains("eyJ") {
            problems.push("a JWT (eyJ...)".into());
        }
        if log.contains("exited on signal") {
            problems.push("a crashed worker (exited on signal)".into());
        }
        if log.contains("[alert]") {
            problems.push("an [alert]".into());
        }
        if !problems.is_empty() {
            let lines: Vec<&str> = log
                .lines()
                .filter(|l| {
                    l.contains("code=")
                        || l.contains("eyJ")
                        || l.contains("signal")
                        || l.contains("[alert]")
                        || l.contains(&self.provider.client_secret)
                })
                .take(10)
                .collect();
            panic!(
                "nginx's error.log ({}) contains {}:\n{}",
                self.nginx.error_log.display(),
                problems.join(", "),
                lines.join("\n")
            );
        }
    }
}

pub fn base64_decode(s: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => continue,
        };
        acc = acc << 6 | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

/// The payload of a JWT (unverified: the tests only read what the provider issued).
pub fn jwt_claims(jwt: &str) -> Value {
    let payload = jwt.split('.').nth(1).expect("a JWT has three parts");
    serde_json::from_slice(&base64_decode(payload)).expect("JWT payload JSON")
}

/// Sends `n` page requests at once with the same `cookie` header, each on its own connection
/// and thread; returns each answer's (status, X-Auth-Request-User the echo upstream saw).
pub fn concurrent_gets(url: &str, cookie: &str, n: usize) -> Vec<(u16, Option<String>)> {
    let handles: Vec<_> = (0..n)
        .map(|_| {
            let (url, cookie) = (url.to_string(), cookie.to_string());
            thread::spawn(move || {
                let agent = ureq::AgentBuilder::new()
                    .redirects(0)
                    .timeout(Duration::from_secs(30))
                    .build();
                match agent
                    .get(&url)
                    .set("Cookie", &cookie)
                    .set("Accept", "text/html")
                    .call()
                {
                    Ok(r) | Err(ureq::Error::Status(_, r)) => {
                        let status = r.status();
                        let body: Value = r.into_json().unwrap_or(Value::Null);
                        let user = body["headers"]["x-auth-request-user"]
                            .as_str()
                            .map(str::to_string);
                        (status, user)
                    }
                    Err(e) => panic!("request failed: {e}"),
                }
            })
        })
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().expect("request thread"))
        .collect()
}

// ------------------------------------------------------------------------------------ cookies

/// A parsed `Set-Cookie` header.
#[derive(Clone, Debug)]
pub struct SetCookie {
    pub name: String,
    pub value: String,
    /// Lowercase attribute names with their values.
    pub attrs: Vec<(String, Option<String>)>,
    pub raw: String,
}

impl SetCookie {
    pub fn parse(raw: &str) -> Option<SetCookie> {
        let mut parts = raw.split(';');
        let (name, value) = parts.next()?.split_once('=')?;
        let name = name.trim();
        if name.is_empty() {
            return None;
        }
        let attrs = parts
            .map(|a| match a.split_once('=') {
                Some((k, v)) => (k.trim().to_ascii_lowercase(), Some(v.trim().to_string())),
                None => (a.trim().to_ascii_lowercase(), None),
            })
            .filter(|(k, _)| !k.is_empty())
            .collect();
        Some(SetCookie {
            name: name.to_string(),
            value: value.trim().trim_matches('"').to_string(),
            attrs,
            raw: raw.to_string(),
        })
    }

    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.as_deref())
    }

    pub fn has(&self, name: &str) -> bool {
        self.attrs.iter().any(|(k, _)| k == name)
    }

    /// Unix time at which it expires, if it says (Max-Age wins over Expires).
    pub fn expires_at(&self, now: i64) -> Option<i64> {
        if let Some(ma) = self.attr("max-age").and_then(|v| v.parse::<i64>().ok()) {
            return Some(if ma <= 0 { i64::MIN } else { now + ma });
        }
        self.attr("expires").and_then(parse_http_date)
    }

    /// A header that removes the cookie (Max-Age<=0 or Expires in the past).
    pub fn is_deletion(&self) -> bool {
        let now = unix_now();
        self.expires_at(now).is_some_and(|t| t <= now)
    }
}

pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Parses `Thu, 01 Jan 1970 00:00:01 GMT` and the `01-Jan-70` variants.
pub fn parse_http_date(s: &str) -> Option<i64> {
    const MONTHS: [&str; 12] = [
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ];
    let (mut day, mut month, mut year, mut time) = (None, None, None, None);
    for tok in s.split([' ', ',', '-']).filter(|t| !t.is_empty()) {
        let lower = tok.to_ascii_lowercase();
        if tok.contains(':') {
            let hms: Vec<i64> = tok.split(':').filter_map(|x| x.parse().ok()).collect();
            if hms.len() == 3 {
                time = Some(hms[0] * 3600 + hms[1] * 60 + hms[2]);
            }
        } else if let Some(m) = MONTHS.iter().position(|m| lower.starts_with(m)) {
            month = Some(m as i64 + 1);
        } else if let Ok(n) = tok.parse::<i64>() {
            if day.is_none() && tok.len() <= 2 {
                day = Some(n);
            } else {
                year = Some(match n {
                    0..=69 => 2000 + n,
                    70..=99 => 1900 + n,
                    _ => n,
                });
            }
        }
    }
    let (d, m, y, t) = (day?, month?, year?, time?);
    // days_from_civil (Howard Hinnant)
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = if y2 >= 0 { y2 } else { y2 - 399 } / 400;
    let yoe = y2 - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some((era * 146097 + doe - 719468) * 86400 + t)
}

#[derive(Clone, Debug)]
struct StoredCookie {
    name: String,
    value: String,
    /// The host that set it, or the `Domain` it names (then `domain` is true).
    host: String,
    /// Set with a `Domain` attribute: sent to that domain and its subdomains (RFC 6265 §5.3).
    domain: bool,
    path: String,
    secure: bool,
    expires: Option<i64>,
}

/// A browser's cookie jar. Cookies are per host, not per port (as in browsers); a `Domain`
/// attribute that covers the host makes a domain cookie, sent to the subdomains too (RFC 6265
/// §5.3); with path matching and expiry.
/// `Secure` cookies are neither stored from nor sent over http (unless `loopback_is_secure`).
#[derive(Clone, Debug, Default)]
pub struct CookieJar {
    cookies: Vec<StoredCookie>,
    /// Treat http://127.0.0.1 and http://localhost as secure, as Chromium does (potentially
    /// trustworthy origins): Keycloak sets its login cookies `Secure` even over http there.
    pub loopback_is_secure: bool,
}

impl CookieJar {
    /// Whether `Secure` cookies may be stored from and sent to `url`.
    fn secure_context(&self, url: &Url) -> bool {
        url.scheme() == "https"
            || (self.loopback_is_secure
                && matches!(url.host_str(), Some("127.0.0.1" | "localhost" | "[::1]")))
    }

    pub fn store(&mut self, url: &Url, header: &str) {
        let Some(sc) = SetCookie::parse(header) else {
            return;
        };
        let mut host = url.host_str().unwrap_or("").to_ascii_lowercase();
        let mut domain_cookie = false;
        if let Some(domain) = sc.attr("domain") {
            let domain = domain.trim_start_matches('.').to_ascii_lowercase();
            if !(host == domain || host.ends_with(&format!(".{domain}"))) {
                return;
            }
            host = domain;
            domain_cookie = true;
        }
        let secure = sc.has("secure");
        if secure && !self.secure_context(url) {
            return;
        }
        let path = match sc.attr("path") {
            Some(p) if p.starts_with('/') => p.to_string(),
            _ => {
                let p = url.path();
                match p.rfind('/') {
                    Some(0) | None => "/".to_string(),
                    Some(i) => p[..i].to_string(),
                }
            }
        };
        let now = unix_now();
        let expires = sc.expires_at(now);
        self.cookies.retain(|c| {
            !(c.name == sc.name && c.host == host && c.path == path && c.domain == domain_cookie)
        });
        if expires.is_some_and(|t| t <= now) {
            return;
        }
        self.cookies.push(StoredCookie {
            name: sc.name,
            value: sc.value,
            host,
            domain: domain_cookie,
            path,
            secure,
            expires,
        });
    }

    /// The `Cookie` header a browser would send to `url`.
    pub fn header_for(&self, url: &Url) -> Option<String> {
        let host = url.host_str().unwrap_or("").to_ascii_lowercase();
        let now = unix_now();
        let mut matching: Vec<&StoredCookie> = self
            .cookies
            .iter()
            .filter(|c| c.host == host || (c.domain && host.ends_with(&format!(".{}", c.host))))
            .filter(|c| !c.secure || self.secure_context(url))
            .filter(|c| c.expires.is_none_or(|t| t > now))
            .filter(|c| path_matches(url.path(), &c.path))
            .collect();
        matching.sort_by_key(|c| std::cmp::Reverse(c.path.len()));
        let parts: Vec<String> = matching
            .iter()
            .map(|c| format!("{}={}", c.name, c.value))
            .collect();
        (!parts.is_empty()).then(|| parts.join("; "))
    }

    /// Value of the cookie `name` for host 127.0.0.1 (any path).
    pub fn get(&self, name: &str) -> Option<String> {
        self.cookies
            .iter()
            .find(|c| c.name == name)
            .map(|c| c.value.clone())
    }

    /// Sets or replaces a cookie for 127.0.0.1, path `/` (to tamper with it).
    pub fn set(&mut self, name: &str, value: &str) {
        self.cookies.retain(|c| c.name != name);
        self.cookies.push(StoredCookie {
            name: name.into(),
            value: value.into(),
            host: "127.0.0.1".into(),
            domain: false,
            path: "/".into(),
            secure: false,
            expires: None,
        });
    }

    pub fn remove(&mut self, name: &str) {
        self.cookies.retain(|c| c.name != name);
    }

    pub fn names(&self) -> Vec<String> {
        self.cookies.iter().map(|c| c.name.clone()).collect()
    }

    /// Names of the cookies matching `pred`.
    pub fn names_where(&self, pred: impl Fn(&str) -> bool) -> Vec<String> {
        self.cookies
            .iter()
            .filter(|c| pred(&c.name))
            .map(|c| c.name.clone())
            .collect()
    }
}

fn path_matches(req: &str, cookie: &str) -> bool {
    req == cookie
        || (req.starts_with(cookie)
            && (cookie.ends_with('/') || req[cookie.len()..].starts_with('/')))
}

// ------------------------------------------------------------------------------------ browser

/// One HTTP response as the browser saw it.
#[derive(Clone, Debug)]
pub struct Resp {
    pub method: String,
    pub url: String,
    pub status: u16,
    /// Lowercase names.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn all(&self, name: &str) -> Vec<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .filter(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn is_redirect(&self) -> bool {
        (300..400).contains(&self.status) && self.header("location").is_some()
    }

    pub fn location(&self) -> Option<&str> {
        self.header("location")
    }

    /// The Location resolved against the request URL.
    pub fn location_url(&self) -> Option<Url> {
        let base = Url::parse(&self.url).ok()?;
        base.join(self.location()?).ok()
    }

    pub fn set_cookies(&self) -> Vec<SetCookie> {
        self.all("set-cookie")
            .into_iter()
            .filter_map(SetCookie::parse)
            .collect()
    }

    pub fn set_cookie(&self, name: &str) -> Option<SetCookie> {
        self.set_cookies()
            .into_iter()
            .rev()
            .find(|c| c.name == name)
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| {
            panic!(
                "{} {} -> {}: body is not JSON ({e}): {}",
                self.method,
                self.url,
                self.status,
                &self.body[..self.body.len().min(500)]
            )
        })
    }

    /// A header as the echo upstream received it (the response must come from the upstream).
    pub fn upstream_header(&self, name: &str) -> Option<String> {
        self.json()["headers"][name.to_ascii_lowercase()]
            .as_str()
            .map(str::to_string)
    }

    pub fn summary(&self) -> String {
        format!(
            "{} {} -> {} {}",
            self.method,
            self.url,
            self.status,
            self.location()
                .map(|l| format!("Location: {l}"))
                .unwrap_or_default()
        )
    }
}

/// One hop of the transcript.
#[derive(Clone, Debug)]
pub struct Hop {
    pub method: String,
    pub url: String,
    pub status: u16,
    pub location: Option<String>,
    pub set_cookies: Vec<String>,
}

/// A browser-like client: no automatic redirects, a cookie jar shared by all ports of a host,
/// `Accept: text/html` navigations, and a transcript of every hop (printed if the test fails).
pub struct Browser {
    agent: ureq::Agent,
    pub jar: CookieJar,
    pub hops: Vec<Hop>,
}

const NAV_ACCEPT: &str = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";

impl Default for Browser {
    fn default() -> Self {
        Browser::new()
    }
}

impl Browser {
    pub fn new() -> Browser {
        Browser {
            agent: plain_agent(),
            jar: CookieJar::default(),
            hops: Vec::new(),
        }
    }

    /// A browser for which every name under `domain` (e.g. `a.example.test`) resolves to
    /// 127.0.0.1, like an /etc/hosts entry: sites on several host names of one nginx.
    pub fn resolving(domain: &str) -> Browser {
        let suffix = format!(".{domain}");
        let agent = ureq::AgentBuilder::new()
            .redirects(0)
            .timeout(Duration::from_secs(10))
            .resolver(
                move |netloc: &str| -> std::io::Result<Vec<std::net::SocketAddr>> {
                    let (host, port) = netloc.rsplit_once(':').unwrap_or((netloc, "80"));
                    let port: u16 = port.parse().unwrap_or(80);
                    if host.ends_with(&suffix) {
                        return Ok(vec![([127, 0, 0, 1], port).into()]);
                    }
                    std::net::ToSocketAddrs::to_socket_addrs(netloc).map(Iterator::collect)
                },
            )
            .build();
        Browser {
            agent,
            jar: CookieJar::default(),
            hops: Vec::new(),
        }
    }

    /// A browser that waits up to `timeout` for each answer (a Java provider that has just
    /// started answers its first logins slowly on 2 busy cores), speaks https and trusts the
    /// CA in the PEM file `ca` besides the system's, like a machine with a company CA installed.
    pub fn patient(timeout: Duration, ca: Option<&Path>) -> Browser {
        let mut tls = native_tls::TlsConnector::builder();
        if let Some(ca) = ca {
            let pem = std::fs::read(ca).unwrap_or_else(|e| panic!("read {}: {e}", ca.display()));
            tls.add_root_certificate(
                native_tls::Certificate::from_pem(&pem).expect("the CA file is PEM"),
            );
        }
        Browser {
            agent: ureq::AgentBuilder::new()
                .redirects(0)
                .timeout(timeout)
                .tls_connector(Arc::new(tls.build().expect("TLS connector")))
                .build(),
            jar: CookieJar::default(),
            hops: Vec::new(),
        }
    }

    /// A navigation GET (Accept: text/html) unless `headers` override. A `Cookie` header in
    /// `headers` replaces the jar's.
    pub fn get(&mut self, url: &str, headers: &[(&str, &str)]) -> Resp {
        self.request("GET", url, headers, None)
    }

    pub fn post_form(
        &mut self,
        url: &str,
        form: &[(&str, &str)],
        headers: &[(&str, &str)],
    ) -> Resp {
        self.request("POST", url, headers, Some(form))
    }

    pub fn request(
        &mut self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        form: Option<&[(&str, &str)]>,
    ) -> Resp {
        let parsed = Url::parse(url).unwrap_or_else(|e| panic!("bad URL {url}: {e}"));
        let mut req = self.agent.request(method, url);
        let has = |n: &str| headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(n));
        if !has("accept") {
            req = req.set("Accept", NAV_ACCEPT);
        }
        if !has("user-agent") {
            req = req.set("User-Agent", "ngx-oidc-e2e-browser");
        }
        if !has("cookie") {
            if let Some(c) = self.jar.header_for(&parsed) {
                req = req.set("Cookie", &c);
            }
        }
        for (k, v) in headers {
            req = req.set(k, v);
        }
        let result = match form {
            Some(f) => req.send_form(f),
            None => req.call(),
        };
        let r = match result {
            Ok(r) | Err(ureq::Error::Status(_, r)) => r,
            Err(e) => {
                let msg = format!("{method} {url}: transport error: {e}");
                self.hops.push(Hop {
                    method: method.into(),
                    url: url.into(),
                    status: 0,
                    location: None,
                    set_cookies: vec![msg.clone()],
                });
                panic!("{msg}");
            }
        };
        let status = r.status();
        let mut hdrs = Vec::new();
        let mut names = r.headers_names();
        names.iter_mut().for_each(|n| n.make_ascii_lowercase());
        names.dedup(); // headers_names() repeats a name once per header line
        let mut seen = HashSet::new();
        for name in names.into_iter().filter(|n| seen.insert(n.clone())) {
            for v in r.all(&name) {
                hdrs.push((name.to_ascii_lowercase(), v.to_string()));
            }
        }
        let body = r.into_string().unwrap_or_default();
        let resp = Resp {
            method: method.into(),
            url: url.into(),
            status,
            headers: hdrs,
            body,
        };
        for sc in resp.all("set-cookie") {
            self.jar.store(&parsed, sc);
        }
        self.hops.push(Hop {
            method: method.into(),
            url: url.into(),
            status,
            location: resp.location().map(str::to_string),
            set_cookies: resp
                .set_cookies()
                .iter()
                .map(|c| {
                    if c.is_deletion() {
                        format!("{}(deleted)", c.name)
                    } else {
                        format!("{}({}B)", c.name, c.name.len() + 1 + c.value.len())
                    }
                })
                .collect(),
        });
        resp
    }

    /// Follows redirects (as GETs) until a non-redirect response; at most 20 hops.
    pub fn follow(&mut self, resp: Resp) -> Resp {
        self.follow_while(resp, |_| true)
    }

    /// Follows redirects while `go(next_url)` says so; returns the last response (a redirect
    /// whose target `go` refused, or a non-redirect).
    pub fn follow_while(&mut self, mut resp: Resp, go: impl Fn(&Url) -> bool) -> Resp {
        for _ in 0..20 {
            let Some(next) = resp.location_url().filter(|_| resp.is_redirect()) else {
                return resp;
            };
            if !go(&next) {
                return resp;
            }
            resp = self.get(next.as_str(), &[]);
        }
        panic!("more than 20 redirects:\n{}", self.transcript());
    }

    /// Walks the login from `start_url` (a protected page or /oauth2/sign_in) through the
    /// provider's form up to the provider's redirect back to the site, and returns that
    /// redirect's target (the callback URL) without requesting it. `Err` carries the response
    /// where the walk stopped (e.g. the form again after a wrong password).
    pub fn authorize(&mut self, start_url: &str, user: &str, pass: &str) -> Result<String, Resp> {
        let site = origin(&Url::parse(start_url).unwrap());
        self.authorize_for(&site, start_url, user, pass)
    }

    /// `authorize` for the relying party at `site` (`http://127.0.0.1:PORT`), starting at any
    /// URL (e.g. the provider's authorization endpoint).
    pub fn authorize_for(
        &mut self,
        site: &str,
        start_url: &str,
        user: &str,
        pass: &str,
    ) -> Result<String, Resp> {
        let off_site = |u: &Url| origin(u) != site;
        let first = self.get(start_url, &[]);
        let starts_on_site = !off_site(&Url::parse(start_url).unwrap());
        if starts_on_site
            && (!first.is_redirect() || first.location_url().is_none_or(|u| !off_site(&u)))
        {
            return Err(first);
        }
        let mut resp = self.follow_while(first, off_site);
        let mut posted = false;
        loop {
            if resp.is_redirect() {
                let next = resp.location_url().unwrap();
                if !off_site(&next) {
                    return Ok(next.to_string());
                }
            }
            if resp.status != 200 || posted {
                return Err(resp);
            }
            let Some(action) = login_form_action(&resp.body) else {
                return Err(resp);
            };
            let action = Url::parse(&resp.url).unwrap().join(&action).unwrap();
            let r = self.post_form(
                action.as_str(),
                &[("username", user), ("password", pass)],
                &[],
            );
            posted = true;
            resp = self.follow_while(r, off_site);
        }
    }

    /// `authorize`, then requests the callback URL; returns the callback's response unfollowed.
    pub fn login_callback(&mut self, start_url: &str, user: &str, pass: &str) -> Resp {
        let callback = self.authorize(start_url, user, pass).unwrap_or_else(|r| {
            panic!(
                "login as {user} from {start_url} stopped at {}\n{}\nbody: {}",
                r.summary(),
                self.transcript(),
                &r.body[..r.body.len().min(800)]
            )
        });
        self.get(&callback, &[])
    }

    /// The whole login from `start_url`; returns the final (non-redirect) response.
    pub fn login(&mut self, start_url: &str, user: &str, pass: &str) -> Resp {
        let cb = self.login_callback(start_url, user, pass);
        self.follow(cb)
    }

    /// Logs `user` in (password = user name) starting at `start_url` and asserts that the
    /// final answer is a 200 (the page behind the login); returns that answer.
    pub fn login_ok(&mut self, start_url: &str, user: &str) -> Resp {
        let r = self.login(start_url, user, user);
        assert_eq!(
            r.status,
            200,
            "after logging in as {user}: {}\n{}",
            r.summary(),
            self.transcript()
        );
        r
    }

    pub fn transcript(&self) -> String {
        let mut s = String::from("browser transcript:\n");
        for (i, h) in self.hops.iter().enumerate() {
            write!(s, "  {i:>2}. {} {} -> {}", h.method, h.url, h.status).unwrap();
            if let Some(l) = &h.location {
                write!(s, "  Location: {l}").unwrap();
            }
            if !h.set_cookies.is_empty() {
                write!(s, "  Set-Cookie: {}", h.set_cookies.join(", ")).unwrap();
            }
            s.push('\n');
        }
        s
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if thread::panicking() && !self.hops.is_empty() {
            eprintln!("---- {}", self.transcript());
        }
    }
}

pub fn origin(u: &Url) -> String {
    format!(
        "{}://{}:{}",
        u.scheme(),
        u.host_str().unwrap_or(""),
        u.port_or_known_default().unwrap_or(0)
    )
}

/// The `action` of `<form id="kc-form-login" ...>`, HTML-unescaped.
pub fn login_form_action(html: &str) -> Option<String> {
    let start = html.find("kc-form-login")?;
    let form_start = html[..start].rfind("<form")?;
    let tag_end = form_start + html[form_start..].find('>')?;
    let tag = &html[form_start..tag_end];
    let i = tag.find("action=")? + "action=".len();
    let rest = &tag[i..];
    let quote = rest.chars().next()?;
    let value = if quote == '"' || quote == '\'' {
        let rest = &rest[1..];
        &rest[..rest.find(quote)?]
    } else {
        rest.split_whitespace().next()?
    };
    Some(
        value
            .replace("&amp;", "&")
            .replace("&#x2F;", "/")
            .replace("&#47;", "/")
            .replace("&quot;", "\"")
            .replace("&#39;", "'"),
    )
}

/// Query parameter `name` of `url`.
pub fn query_param(url: &str, name: &str) -> Option<String> {
    Url::parse(url)
        .ok()?
        .query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// `url` with query parameter `name` set to `value` (added if missing).
pub fn with_query_param(url: &str, name: &str, value: &str) -> String {
    let mut u = Url::parse(url).unwrap();
    let pairs: Vec<(String, String)> = u
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .filter(|(k, _)| k != name)
        .collect();
    {
        let mut q = u.query_pairs_mut();
        q.clear();
        for (k, v) in &pairs {
            q.append_pair(k, v);
        }
        q.append_pair(name, value);
    }
    u.to_string()
}

/// Is `name` the session cookie or one of its chunks (`_oidc`, `_oidc_1`, ...)?
pub fn is_session_cookie(name: &str) -> bool {
    name == "_oidc"
        || name
            .strip_prefix("_oidc_")
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Session cookies that `resp` sets (not deletions).
pub fn session_cookies_set(resp: &Resp) -> Vec<SetCookie> {
    resp.set_cookies()
        .into_iter()
        .filter(|c| is_session_cookie(&c.name) && !c.is_deletion() && !c.value.is_empty())
        .collect()
}

/// Whether `log` shows a callback's `code` or `state` value (the module logs them as
/// `[hidden]`).
pub fn shows_one_time_value(log: &str) -> bool {
    ["code=", "state="].iter().any(|p| {
        log.match_indices(p).any(|(i, _)| {
            let param = log[..i].ends_with(['?', '&']) || log[..i].ends_with("session_");
            param && !log[i + p.len()..].starts_with("[hidden]")
        })
    })
}

/// A 4xx without a session cookie.
pub fn assert_refused(b: &Browser, r: &Resp) {
    assert!(
        (400..500).contains(&r.status),
        "expected 400/401/403, got {}\n{}",
        r.summary(),
        b.transcript()
    );
    let set = session_cookies_set(r);
    assert!(set.is_empty(), "a refused callback set {:?}", set);
    assert!(
        b.jar.names_where(is_session_cookie).is_empty(),
        "the browser holds a session cookie after a refused callback"
    );
}

/// A browser carrying only `session` as its session cookie gets 401 on an API request;
/// `what` says where the cookie came from, for the failure message.
pub fn assert_session_refused(env: &Env, session: &str, what: &str) {
    let mut b = env.browser();
    b.jar.set("_oidc", session);
    let r = b.get(
        &env.url("/some/page?x=1"),
        &[("Accept", "application/json")],
    );
    assert_eq!(r.status, 401, "{what} was not refused: {}", r.summary());
}

/// One request written byte for byte to 127.0.0.1:`port` on a fresh connection, no retry
/// (headers need not be valid UTF-8 or fit ureq's rules; ureq would replay a GET whose
/// connection closed). Returns the status (0: nginx closed the connection without an answer)
/// and the whole response; panics after 10 s without one.
pub fn raw_request(port: u16, head: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to nginx");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(head).expect("write request");
    let mut buf = Vec::new();
    if let Err(e) = s.read_to_end(&mut buf) {
        panic!(
            "no complete answer within 10 s ({e}) to {:?}",
            String::from_utf8_lossy(&head[..head.len().min(200)])
        );
    }
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, text)
}

/// Logs `user` in (password = user name) from `page` and checks that the final answer came
/// from the upstream for that page.
pub fn logged_in(env: &Env, page: &str, user: &str) -> Browser {
    let mut b = env.browser();
    let r = b.login_ok(&env.url(page), user);
    assert_eq!(r.json()["path"], page);
    b
}

/// Placeholders for configs that are only checked with `nginx -t` (nothing listens).
pub fn offline_config_vars() -> Vars {
    let mut v = Vars::default();
    v.set("PORT", free_port().to_string())
        .set("UPSTREAM", "9")
        .set("IDP_PORT", "9")
        .set("ISSUER", "http://127.0.0.1:9/realms/test")
        .set("CLIENT_SECRET", "secret")
        .set("KEYS", "@DIR@/keys")
        .set("LOCATION_EXTRA", "");
    v
}

/// The response is a redirect to the provider's authorization endpoint; `context` (a browser
/// transcript, say) is printed when it is not.
pub fn assert_sent_to_login(env: &Env, r: &Resp, context: &str) {
    let auth = format!(
        "{}/protocol/openid-connect/auth?",
        env.provider.issuer.trim_end_matches('/')
    );
    assert!(
        matches!(r.status, 302 | 303) && r.location().is_some_and(|l| l.starts_with(&auth)),
        "expected a redirect to {auth}..., got {}\n{context}",
        r.summary()
    );
}

// ------------------------------------------------------------------------------------ TLS

/// A throwaway certificate authority and a server certificate it signed for `127.0.0.1` and
/// `localhost`, made with the `openssl` command (as scripts/keycloak.sh does for Keycloak).
pub struct TestTls {
    /// The CA certificate (PEM) that clients trust.
    pub ca: PathBuf,
    /// The server's certificate and key (PEM), for `ssl_certificate` / `ssl_certificate_key`.
    pub cert: PathBuf,
    pub key: PathBuf,
    _dir: TempDir,
}

impl TestTls {
    pub fn create() -> TestTls {
        let dir = TempDir::new("tls");
        openssl(
            &dir.path,
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=ngx-oidc test CA",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
            ],
        );
        let mut tls = TestTls {
            ca: dir.join("ca.pem"),
            cert: PathBuf::new(),
            key: PathBuf::new(),
            _dir: dir,
        };
        (tls.cert, tls.key) = tls.issue(
            "server",
            "/CN=127.0.0.1",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
        );
        tls
    }

    /// A certificate signed by this CA for `subject` with the X.509 extension lines `ext`
    /// (e.g. `subjectAltName=DNS:redis.invalid`, `extendedKeyUsage=clientAuth`), as
    /// `<name>.pem` and its key `<name>.key` in the CA's directory.
    pub fn issue(&self, name: &str, subject: &str, ext: &str) -> (PathBuf, PathBuf) {
        let dir = &self._dir;
        let ext = dir.write(&format!("{name}.cnf"), &format!("{ext}\n"));
        let (key, csr, pem) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
        );
        openssl(
            &dir.path,
            &[
                "req", "-newkey", "rsa:2048", "-nodes", "-subj", subject, "-keyout", &key, "-out",
                &csr,
            ],
        );
        openssl(
            &dir.path,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                &ext.display().to_string(),
                "-out",
                &pem,
            ],
        );
        (dir.join(&pem), dir.join(&key))
    }
}

/// Runs the `openssl` command in `dir`; panics with its stderr when it fails.
pub fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("run openssl (apt-get install openssl)");
    assert!(
        out.status.success(),
        "openssl {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// What `curl` got: the HTTP version it spoke (`1.1`, `2`), the status, the response headers
/// (lowercase names) and the body.
#[derive(Debug)]
pub struct CurlResp {
    pub http_version: String,
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl CurlResp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// A header as the echo upstream received it.
    pub fn upstream_header(&self, name: &str) -> Option<String> {
        let json: Value = serde_json::from_str(&self.body).ok()?;
        json["headers"][name.to_ascii_lowercase()]
            .as_str()
            .map(str::to_string)
    }
}

/// Runs the `curl` command on `url` with `args` before it (e.g. `--http2`, `--cacert`, `-H`),
/// never following redirects; the answer's status line and headers come from curl's
/// `--dump-header`.
pub fn curl(url: &str, args: &[&str]) -> CurlResp {
    let dir = TempDir::new("curl");
    let head = dir.join("head");
    let out = Command::new("curl")
        .args(["--silent", "--show-error", "--max-time", "20"])
        .arg("--dump-header")
        .arg(&head)
        .args(["--write-out", "%{stderr}%{http_version}"])
        .args(args)
        .arg(url)
        .stdin(Stdio::null())
        .output()
        .expect("run curl (apt-get install curl)");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "curl {url}: {stderr}");
    let head = std::fs::read_to_string(&head).unwrap_or_default();
    let mut lines = head.lines();
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("curl {url}: no status line in {head:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    CurlResp {
        http_version: stderr.trim().to_string(),
        status,
        headers,
        body: String::from_utf8_lossy(&out.stdout).into_owned(),
    }
}
