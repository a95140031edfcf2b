//! A cluster on one machine: a real `redis-server` (Debian's, installed by scripts/lib.sh, built
//! with TLS) on a free 127.0.0.1 port with its own directory, plain or TLS only, and two nginx
//! masters ("nodes") that share one cookie key file and that Redis, each with its own shared
//! zone.

use std::cell::Cell;
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::*;

/// A `redis-server` of this test, stopped when dropped.
pub struct Redis {
    /// The loopback address it listens on (127.0.0.1 unless a test moves it).
    pub host: String,
    pub port: u16,
    pub dir: PathBuf,
    opts: RedisOptions,
    child: Option<Child>,
    /// redis-cli runs so far (each one connection).
    cli_calls: Cell<usize>,
}

/// Certificates for Redis over TLS, made with the `openssl` command: a test CA, Redis's
/// certificate for 127.0.0.1 and localhost ([`TestTls`]) and a client certificate from the
/// same CA.
pub struct RedisCerts {
    pub tls: TestTls,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl RedisCerts {
    pub fn create() -> RedisCerts {
        let tls = TestTls::create();
        let (client_cert, client_key) =
            tls.issue("client", "/CN=ngx-oidc node", "extendedKeyUsage=clientAuth");
        RedisCerts {
            client_cert,
            client_key,
            tls,
        }
    }

    /// Another server certificate from this CA, for `san` only (e.g. `DNS:redis.invalid`):
    /// its certificate and key.
    pub fn server_cert_for(&self, san: &str) -> (PathBuf, PathBuf) {
        self.tls
            .issue("other", "/CN=other", &format!("subjectAltName={san}"))
    }

    /// Redis serving this CA's server certificate; `auth_clients`: it asks for a client
    /// certificate from this CA (`tls-auth-clients yes`, Redis's default).
    pub fn redis_tls(&self, auth_clients: bool) -> RedisTls {
        RedisTls {
            cert: self.tls.cert.clone(),
            key: self.tls.key.clone(),
            ca: self.tls.ca.clone(),
            auth_clients,
            cli_cert: self.client_cert.clone(),
            cli_key: self.client_key.clone(),
        }
    }
}

/// How a TLS Redis is set up, and how redis-cli reaches it.
#[derive(Clone, Debug)]
pub struct RedisTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The CA of client certificates, which redis-cli also trusts for Redis's certificate.
    pub ca: PathBuf,
    pub auth_clients: bool,
    pub cli_cert: PathBuf,
    pub cli_key: PathBuf,
}

/// How a test's Redis differs from the default one (no password, one user allowed everything).
#[derive(Clone, Debug, Default)]
pub struct RedisOptions {
    /// `requirepass`: the password of the `default` user; [`Redis::cli`] logs in with it.
    pub password: Option<String>,
    /// ACL users, one rule each as `redis.conf` writes it after `user`, e.g.
    /// `ngx on >secret ~ngx-oidc:* &ngx-oidc:* +@all`.
    pub users: Vec<String>,
    /// TLS only (`--port 0 --tls-port`), when set.
    pub tls: Option<RedisTls>,
}

fn redis_binary(name: &str) -> PathBuf {
    let p = PathBuf::from(format!("/usr/bin/{name}"));
    assert!(
        p.is_file(),
        "{} is missing: scripts/test.sh installs Debian's redis-server (apt-get install redis-server)",
        p.display()
    );
    p
}

impl Redis {
    /// Starts Redis on a free port with its data (append-only file) under `dir`; waits until
    /// it answers PING.
    pub fn start(dir: &Path) -> Redis {
        Redis::start_at(dir, "127.0.0.1", free_port())
    }

    /// Starts Redis on `host:port` (a loopback address) with its data under `dir/redis`.
    pub fn start_at(dir: &Path, host: &str, port: u16) -> Redis {
        Redis::launch(dir, host, port, RedisOptions::default())
    }

    /// Starts Redis on 127.0.0.1 and a free port, over TLS only.
    pub fn start_tls(dir: &Path, tls: RedisTls) -> Redis {
        let opts = RedisOptions {
            tls: Some(tls),
            ..Default::default()
        };
        Redis::launch(dir, "127.0.0.1", free_port(), opts)
    }

    /// [`Redis::start`] with a password and ACL users.
    pub fn start_with(dir: &Path, opts: RedisOptions) -> Redis {
        Redis::launch(dir, "127.0.0.1", free_port(), opts)
    }

    fn launch(dir: &Path, host: &str, port: u16, opts: RedisOptions) -> Redis {
        let dir = dir.join("redis");
        std::fs::create_dir_all(&dir).unwrap();
        let mut r = Redis {
            host: host.to_string(),
            port,
            dir,
            opts,
            child: None,
            cli_calls: Cell::new(0),
        };
        r.start_again();
        r
    }

    /// Starts the server again after [`Redis::stop`], on the same port and data.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "Redis is running");
        let port = self.port;
        wait_for("Redis's port to be free", Duration::from_secs(5), || {
            TcpListener::bind((self.host.as_str(), port))
                .ok()
                .map(|_| ())
        });
        let log = std::fs::File::create(self.dir.join("redis.stdout")).unwrap();
        let mut server = Command::new(redis_binary("redis-server"));
        server.args(["--bind", &self.host]);
        match &self.opts.tls {
            None => server.args(["--port", &port.to_string()]),
            Some(tls) => server
                .args(["--port", "0", "--tls-port", &port.to_string()])
                .arg("--tls-cert-file")
                .arg(&tls.cert)
                .arg("--tls-key-file")
                .arg(&tls.key)
                .arg("--tls-ca-cert-file")
                .arg(&tls.ca)
                .args([
                    "--tls-auth-clients",
                    if tls.auth_clients { "yes" } else { "no" },
                ]),
        };
        server
            .arg("--dir")
            .arg(&self.dir)
            .args(["--save", "", "--appendonly", "yes", "--daemonize", "no"])
            // "Accepted" lines: connection attempts can be counted (see `accepted`).
            .args(["--loglevel", "verbose"])
            .args(["--logfile", "redis.log"]);
        if let Some(pw) = &self.opts.password {
            server.args(["--requirepass", pw]);
        }
        for rule in &self.opts.users {
            // redis-server joins the words up to the next `--option` into one config line.
            server.arg("--user").args(rule.split_whitespace());
        }
        let child = server
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        self.child = Some(child);
        wait_for("Redis to answer", Duration::from_secs(10), || {
            (self.cli(&["PING"]).trim() == "PONG").then_some(())
        });
    }

    /// Stops the server (SIGTERM: it writes its data and exits).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill(child.id(), "TERM");
            if !wait_exit(&mut child, Duration::from_secs(5)) {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }

    /// `redis-cli -h <host> -p <port> args...` (as the `default` user), its stdout.
    pub fn cli(&self, args: &[&str]) -> String {
        self.cli_calls.set(self.cli_calls.get() + 1);
        let mut cli = Command::new(redis_binary("redis-cli"));
        if let Some(tls) = &self.opts.tls {
            cli.arg("--tls")
                .arg("--cacert")
                .arg(&tls.ca)
                .arg("--cert")
                .arg(&tls.cli_cert)
                .arg("--key")
                .arg(&tls.cli_key);
        }
        if let Some(pw) = &self.opts.password {
            // From the environment: no "using a password on the command line" warning.
            cli.env("REDISCLI_AUTH", pw);
        }
        cli.args(["-h", &self.host, "-p", &self.port.to_string()])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }

    /// Commands Redis has run since its start or the last `CONFIG RESETSTAT`, by name
    /// (`INFO commandstats`), the stats commands themselves left out.
    pub fn commands(&self) -> HashMap<String, u64> {
        let mut out = HashMap::new();
        for line in self.cli(&["INFO", "commandstats"]).lines() {
            let Some(rest) = line.strip_prefix("cmdstat_") else {
                continue;
            };
            let Some((name, stats)) = rest.split_once(':') else {
                continue;
            };
            let calls = stats
                .split(',')
                .find_map(|kv| kv.strip_prefix("calls="))
                .and_then(|n| n.trim().parse().ok())
                .unwrap_or(0);
            if !matches!(name, "info" | "config|resetstat" | "config") {
                out.insert(name.to_string(), calls);
            }
        }
        out
    }

    /// Connections Redis accepted since its start, other than redis-cli's (`cli`), from
    /// its log: nginx's attempts, even those whose TLS handshake failed.
    pub fn accepted(&self) -> usize {
        let log = std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default();
        let accepted = log.matches(" - Accepted ").count();
        accepted.saturating_sub(self.cli_calls.get())
    }

    /// Forgets the command counts.
    pub fn reset_stats(&self) {
        self.cli(&["CONFIG", "RESETSTAT"]);
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!(
                "---- redis.log, last lines:\n{}",
                tail(&self.dir.join("redis.log"), 20)
            );
        }
        self.stop();
    }
}

/// Two nodes (A is the [`Env`]'s nginx, B a second master on its own port and directory)
/// with the same configuration: one key file, one provider, one Redis.
pub struct TwoNodes {
    pub b: Nginx,
    pub b_port: u16,
    pub b_dir: PathBuf,
    pub env: Env,
    pub redis: Redis,
}

/// The provider block with `cluster_store` set to `url`, and `extra` directives.
pub fn cluster_provider_block(url: &str, extra: &[&str]) -> String {
    let store = format!("cluster_store {url};");
    let mut directives = vec![store.as_str()];
    directives.extend_from_slice(extra);
    provider_block_with(&directives)
}

impl TwoNodes {
    /// Redis, then node A (with the test provider and upstream), then node B.
    pub fn start(provider_extra: &[&str], opts: EnvOptions) -> TwoNodes {
        let redis_dir = TempDir::new("redis");
        let redis = Redis::start(&redis_dir.path);
        std::mem::forget(redis_dir); // lives as long as the test's temp dirs
        let url = format!("redis://127.0.0.1:{}", redis.port);
        TwoNodes::start_with(redis, &url, "", provider_extra, opts)
    }

    /// Both nodes with `redis` (already running) reached through `url`, and `http_extra`
    /// directives in their http blocks (e.g. a `resolver`).
    pub fn start_with(
        redis: Redis,
        url: &str,
        http_extra: &str,
        provider_extra: &[&str],
        mut opts: EnvOptions,
    ) -> TwoNodes {
        opts.http = format!(
            "{http_extra}\n{}{PROTECTED_SERVER}",
            cluster_provider_block(url, provider_extra)
        );
        let env = Env::start_with(opts);
        let b_port = free_port();
        let b_dir = env.dir.join("node-b");
        let b = TwoNodes::start_b(&env, b_port, &b_dir);
        TwoNodes {
            b,
            b_port,
            b_dir,
            env,
            redis,
        }
    }

    fn start_b(env: &Env, port: u16, dir: &Path) -> Nginx {
        let mut vars = Vars(env.vars.0.clone());
        vars.set("PORT", port.to_string());
        Nginx::start(
            dir,
            port,
            true,
            env.opts.worker_connections,
            &vars.render(&env.opts.http),
        )
    }

    /// A URL on node A.
    pub fn a(&self, path: &str) -> String {
        self.env.url(path)
    }

    /// The same URL on node B.
    pub fn b(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.b_port)
    }

    /// Stops node B and starts it again (a new master: its zone starts empty).
    pub fn restart_b(&mut self) {
        self.b.stop();
        let port = self.b_port;
        wait_for("node B's port to be free", Duration::from_secs(5), || {
            TcpListener::bind(("127.0.0.1", port)).ok().map(|_| ())
        });
        self.b = TwoNodes::start_b(&self.env, self.b_port, &self.b_dir);
    }

    /// Both nodes' links are up: each worker has its subscriber connected to Redis.
    pub fn wait_linked(&self) {
        self.wait_linked_to(&self.redis, Duration::from_secs(10));
    }

    /// Every worker of both nodes has its subscriber connected to `redis`, within `deadline`.
    pub fn wait_linked_to(&self, redis: &Redis, deadline: Duration) {
        let want = 2 * 2; // two nodes × two workers
        wait_for("both nodes to subscribe", deadline, || {
            let n = redis
                .cli(&["PUBSUB", "NUMSUB", "ngx-oidc:keycloak:revoked"])
                .lines()
                .nth(1)
                .and_then(|l| l.trim().parse::<usize>().ok())
                .unwrap_or(0);
            (n >= want).then_some(())
        });
    }

    /// Both nodes' error logs are clean (see [`Env::assert_error_log_is_clean`]).
    pub fn assert_error_logs_are_clean(&self) {
        self.env.assert_error_log_is_clean();
        let log = self.b.error_log();
        assert!(
            !log.contains("[alert]") && !log.contains("exited on signal") && !log.contains("eyJ"),
            "node B's error.log:\n{log}"
        );
    }
}

/// A directory for a test's Redis, living as long as the test's temp dirs.
pub fn redis_dir() -> PathBuf {
    let dir = TempDir::new("redis");
    let path = dir.path.clone();
    std::mem::forget(dir);
    path
}

/// Polls `f` until it holds or `deadline` passed; returns how long it took.
pub fn time_until(what: &str, deadline: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    loop {
        if f() {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < deadline,
            "{what}: not within {deadline:?}"
        );
        thread::sleep(Duration::from_millis(5));
    }
}

/// Whether something listens on `port` of 127.0.0.1.
pub fn listening(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port)).is_ok()
}

/// A real DNS server for nginx's `resolver`: Debian's `dnsmasq` on a free 127.0.0.1 UDP port,
/// answering only from its own hosts file (no upstream, no system files), stopped when dropped.
pub struct Dns {
    pub port: u16,
    hosts: PathBuf,
    log: PathBuf,
    child: Child,
}

impl Dns {
    /// Starts dnsmasq answering `records` (name, IPv4 address) with a 1 s TTL.
    pub fn start(dir: &Path, records: &[(&str, &str)]) -> Dns {
        let binary = PathBuf::from("/usr/sbin/dnsmasq");
        assert!(
            binary.is_file(),
            "dnsmasq is missing: scripts/test.sh installs Debian's dnsmasq-base"
        );
        let dir = dir.join("dns");
        std::fs::create_dir_all(&dir).unwrap();
        let hosts = dir.join("hosts");
        let port = free_port();
        write_hosts(&hosts, records);
        let child = Command::new(binary)
            .args([
                "--keep-in-foreground",
                "--no-resolv",
                "--no-hosts",
                "--no-poll",
            ])
            .args(["--listen-address=127.0.0.1", "--bind-interfaces"])
            .arg(format!("--port={port}"))
            .arg(format!("--addn-hosts={}", hosts.display()))
            .args([
                "--local-ttl=1",
                "--pid-file=",
                "--user=root",
                "--log-queries",
            ])
            .arg(format!(
                "--log-facility={}",
                dir.join("dnsmasq.log").display()
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn dnsmasq");
        let dns = Dns {
            port,
            hosts,
            log: dir.join("dnsmasq.log"),
            child,
        };
        dns.wait_read(1);
        dns
    }

    /// Replaces the records and waits until dnsmasq has read them (SIGHUP re-reads its hosts
    /// file and empties its cache).
    pub fn set(&self, records: &[(&str, &str)]) {
        let before = self.reads();
        write_hosts(&self.hosts, records);
        kill(self.child.id(), "HUP");
        self.wait_read(before + 1);
    }

    /// How often dnsmasq has logged reading its hosts file.
    fn reads(&self) -> usize {
        let line = format!("read {}", self.hosts.display());
        std::fs::read_to_string(&self.log)
            .map(|l| l.matches(&line).count())
            .unwrap_or(0)
    }

    fn wait_read(&self, times: usize) {
        wait_for(
            "dnsmasq to read its hosts file",
            Duration::from_secs(10),
            || (self.reads() >= times).then_some(()),
        );
    }
}

fn write_hosts(path: &Path, records: &[(&str, &str)]) {
    let text: String = records
        .iter()
        .map(|(name, addr)| format!("{addr} {name}\n"))
        .collect();
    std::fs::write(path, text).unwrap();
}

impl Drop for Dns {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
