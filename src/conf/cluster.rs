//! `cluster_store`, `cluster_store_password_file`, `cluster_store_prefix` and the TLS
//! settings of `rediss://` (`cluster_store_trusted_certificate`, `cluster_store_certificate`,
//! `cluster_store_certificate_key`) of an `oidc_provider` block: where the nodes of a cluster
//! share revocations and refresh results.

use std::fmt;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

/// A parsed `redis://[:password@]host:port[/db]` (or `rediss://`) value.
///
/// The URL scheme follows the IANA registration of `redis` / `rediss` (the one redis-cli and
/// every Redis client take). The password never shows up in `Debug` or error text.
#[derive(Clone, PartialEq, Eq)]
pub struct StoreUrl {
    /// `rediss://`: TLS to Redis.
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// Logical database (`SELECT`), 0 when the URL has no path.
    pub db: u32,
    /// Password for `AUTH`, when the URL has one.
    pub password: Option<Zeroizing<String>>,
    /// User name for `AUTH user password` (Redis 6 ACLs), when the URL has one.
    pub username: Option<String>,
}

impl fmt::Debug for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreUrl")
            .field("tls", &self.tls)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("db", &self.db)
            .field("password", &self.password.as_ref().map(|_| "<hidden>"))
            .field("username", &self.username)
            .finish()
    }
}

/// The cluster store of one provider, complete and checked.
#[derive(Clone, Debug)]
pub struct ClusterStore {
    pub url: StoreUrl,
    /// Every key and channel of this provider starts with it, so that several providers or
    /// clusters share one Redis without seeing each other's entries.
    pub prefix: String,
    /// Where to connect when that is known from the configuration: the URL's IP address, or
    /// (filled in by the glue when nginx has no `resolver`) the host's addresses looked up
    /// once at start, like `proxy_pass` host names. Empty for a host name that nginx's
    /// resolver looks up at every connect.
    pub addrs: Vec<SocketAddr>,
    /// `rediss://`: how the TLS link is set up; `None` for `redis://`.
    pub tls: Option<StoreTls>,
}

/// The TLS settings of a `rediss://` store. The server's certificate is always verified (the
/// chain, RFC 5280, and the URL's host, RFC 6125); only what it is verified against changes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoreTls {
    /// `cluster_store_trusted_certificate`: PEM CA certificates the server's chain must end
    /// in; `None` uses OpenSSL's default trust store (as `redis-cli --tls` does).
    pub trusted_certificate: Option<PathBuf>,
    /// `cluster_store_certificate` and `cluster_store_certificate_key`: the client certificate
    /// for a Redis with `tls-auth-clients yes` (its default).
    pub client: Option<ClientCertificate>,
}

/// A client certificate (PEM, leaf first, intermediates after it) and its unencrypted PEM key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientCertificate {
    pub certificate: PathBuf,
    pub key: PathBuf,
}

/// What a PEM file given to a TLS directive must hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pem {
    /// One or more certificates (`-----BEGIN CERTIFICATE-----`).
    Certificates,
    /// A private key (`-----BEGIN PRIVATE KEY-----`, or its RSA or EC form), not encrypted:
    /// nginx has no one to ask for a pass phrase at reload.
    PrivateKey,
}

/// Checks that `text` (the contents of `path`) is PEM of the `kind` asked for, so that a file
/// swapped for another or for a DER file fails `nginx -t` with the fix instead of an OpenSSL
/// error. OpenSSL parses the file right after; this only catches the common mix-ups.
pub fn check_pem(kind: Pem, path: &Path, text: &[u8]) -> Result<(), String> {
    let has = |label: &str| memchr::memmem::find(text, label.as_bytes()).is_some();
    let shown = path.display();
    match kind {
        Pem::Certificates if has("-----BEGIN CERTIFICATE-----") => Ok(()),
        Pem::Certificates => Err(format!(
            "\"{shown}\" holds no PEM certificate (-----BEGIN CERTIFICATE-----); convert a DER \
             file with `openssl x509 -inform der -in FILE -out FILE.pem`"
        )),
        Pem::PrivateKey if has("-----BEGIN ENCRYPTED PRIVATE KEY-----") => Err(format!(
            "\"{shown}\" is encrypted; nginx cannot ask for its pass phrase, write it \
             unencrypted with `openssl pkey -in FILE -out FILE.key` and keep it readable only \
             by nginx's master"
        )),
        Pem::PrivateKey if has("PRIVATE KEY-----") => Ok(()),
        Pem::PrivateKey => Err(format!(
            "\"{shown}\" holds no PEM private key (-----BEGIN PRIVATE KEY-----); give the \
             key of the certificate, not the certificate itself"
        )),
    }
}

const EXAMPLE: &str = "write e.g. `cluster_store redis://127.0.0.1:6379;` or \
                       `cluster_store redis://:password@redis.example.com:6379/0;`";

/// Parses the value of `cluster_store`. The error text never repeats the password.
pub fn parse_url(value: &str) -> Result<StoreUrl, String> {
    let (tls, rest) = if let Some(r) = value.strip_prefix("redis://") {
        (false, r)
    } else if let Some(r) = value.strip_prefix("rediss://") {
        (true, r)
    } else {
        return Err(format!(
            "\"{}\" is not a redis:// or rediss:// URL; {EXAMPLE}",
            redact(value)
        ));
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, ""),
    };
    let (userinfo, hostport) = match authority.rfind('@') {
        Some(i) => (Some(&authority[..i]), &authority[i + 1..]),
        None => (None, authority),
    };
    let (username, password) = match userinfo {
        None => (None, None),
        Some(u) => {
            let (user, pass) = u.split_once(':').ok_or_else(|| {
                "the part before '@' must be \":password\" or \"user:password\"".to_string()
            })?;
            let pass = percent_encoding::percent_decode_str(pass)
                .decode_utf8()
                .map_err(|_| "the password is not UTF-8 once %-decoded".to_string())?;
            if pass.is_empty() {
                return Err("the password after ':' is empty; drop the \"@\" part for none".into());
            }
            let user = (!user.is_empty()).then(|| user.to_string());
            (user, Some(Zeroizing::new(pass.into_owned())))
        }
    };
    let (host, port) = split_host_port(hostport)
        .ok_or_else(|| format!("\"{}\" needs host:port; {EXAMPLE}", redact(value)))?;
    let db = if path.is_empty() {
        0
    } else {
        path.parse::<u32>()
            .map_err(|_| format!("the database \"/{path}\" must be a number like /0; {EXAMPLE}"))?
    };
    Ok(StoreUrl {
        tls,
        host,
        port,
        db,
        password,
        username,
    })
}

/// `host:port` or `[v6]:port`; the port is required (an explicit port beats a silent default
/// in a cluster's only shared component).
fn split_host_port(s: &str) -> Option<(String, u16)> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (h, p) = rest.split_once("]:")?;
        (h, p)
    } else {
        s.rsplit_once(':')?
    };
    let valid_host = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._:".contains(&b));
    let port: u16 = port.parse().ok().filter(|p| *p > 0)?;
    valid_host.then(|| (host.to_string(), port))
}

/// The value with any password replaced, for error messages.
fn redact(value: &str) -> String {
    match (value.find("://"), value.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://<hidden>@{}", &value[..s], &value[at + 1..]),
        _ => value.to_string(),
    }
}

/// A key prefix: printable, no spaces (keys go into `SCAN MATCH` patterns, so no glob
/// characters either).
pub fn check_prefix(value: &str) -> Result<(), String> {
    let ok = !value.is_empty()
        && value.len() <= 64
        && value
            .bytes()
            .all(|b| b.is_ascii_graphic() && !b"*?[]\\".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "\"{value}\" must be 1 to 64 printable characters without spaces or *?[]\\, \
             e.g. `cluster_store_prefix oidc:prod:;`"
        ))
    }
}

/// The prefix when `cluster_store_prefix` is not given: one per provider name.
pub fn default_prefix(provider: &str) -> String {
    format!("ngx-oidc:{provider}:")
}

/// The URL's host as an address, when it is an IP address (IPv6 in brackets); `None` for a
/// host name, which needs a lookup.
pub fn literal_addr(url: &StoreUrl) -> Option<SocketAddr> {
    let ip: IpAddr = url.host.trim_matches(['[', ']']).parse().ok()?;
    Some(SocketAddr::new(ip, url.port))
}

/// Looks the store's host up with the system resolver (`getaddrinfo`), once at configuration
/// time as nginx does for `proxy_pass` host names when no `resolver` is set. Returns every
/// address; errors name the host.
pub fn resolve(url: &StoreUrl) -> Result<Vec<SocketAddr>, String> {
    let addrs: Vec<SocketAddr> = (url.host.trim_matches(['[', ']']), url.port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve \"{}\": {e}", url.host))?
        .collect();
    if addrs.is_empty() {
        return Err(format!("\"{}\" has no address", url.host));
    }
    Ok(addrs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_url_gets_database_zero_and_no_password() {
        let u = parse_url("redis://127.0.0.1:6379").unwrap();
        assert_eq!(
            (u.tls, u.host.as_str(), u.port, u.db),
            (false, "127.0.0.1", 6379, 0)
        );
        assert!(u.password.is_none() && u.username.is_none());
    }

    #[test]
    fn password_user_database_and_tls_are_read() {
        let u = parse_url("rediss://app:s%40cret@redis.example.com:6380/3").unwrap();
        assert!(u.tls);
        assert_eq!(u.host, "redis.example.com");
        assert_eq!((u.port, u.db), (6380, 3));
        assert_eq!(u.username.as_deref(), Some("app"));
        assert_eq!(u.password.as_deref().map(String::as_str), Some("s@cret"));
        let u = parse_url("redis://:pw@[::1]:6379/").unwrap();
        assert_eq!((u.host.as_str(), u.username.as_deref()), ("::1", None));
    }

    #[test]
    fn malformed_values_say_what_to_write_and_never_echo_the_password() {
        for bad in [
            "127.0.0.1:6379",
            "http://127.0.0.1:6379",
            "redis://127.0.0.1",
            "redis://127.0.0.1:0",
            "redis://127.0.0.1:99999",
            "redis://:@127.0.0.1:6379",
            "redis://hunter2@127.0.0.1:6379",
            "redis://:hunter2@127.0.0.1/x",
            "redis://:hunter2@127.0.0.1:6379/x",
            "redis://:hunter2@bad host:6379",
        ] {
            let e = parse_url(bad).expect_err(bad);
            assert!(!e.contains("hunter2"), "{bad}: {e}");
        }
        let e = parse_url("127.0.0.1:6379").unwrap_err();
        assert!(e.contains("redis://127.0.0.1:6379"), "{e}");
    }

    #[test]
    fn debug_output_hides_the_password() {
        let u = parse_url("redis://:hunter2@127.0.0.1:6379").unwrap();
        assert!(!format!("{u:?}").contains("hunter2"));
    }

    #[test]
    fn prefixes_are_checked_and_default_to_the_provider_name() {
        assert_eq!(default_prefix("kc"), "ngx-oidc:kc:");
        assert!(check_prefix("oidc:prod:").is_ok());
        for bad in ["", "a b", "a*", "x".repeat(65).as_str()] {
            assert!(check_prefix(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn only_ip_addresses_are_known_without_a_lookup() {
        let at = |u: &str| literal_addr(&parse_url(u).unwrap());
        assert_eq!(
            at("redis://10.0.0.7:6379"),
            Some("10.0.0.7:6379".parse().unwrap())
        );
        assert_eq!(
            at("redis://[::1]:6380/2"),
            Some("[::1]:6380".parse().unwrap())
        );
        assert_eq!(at("redis://redis.cluster.local:6379"), None);
    }

    #[test]
    fn tls_files_must_be_pem_of_the_right_kind() {
        let p = Path::new("/etc/nginx/redis.pem");
        let cert = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
        let key = b"-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n";
        let rsa = b"-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----\n";
        assert_eq!(check_pem(Pem::Certificates, p, cert), Ok(()));
        assert_eq!(check_pem(Pem::PrivateKey, p, key), Ok(()));
        assert_eq!(check_pem(Pem::PrivateKey, p, rsa), Ok(()));
        let e = check_pem(Pem::Certificates, p, key).unwrap_err();
        assert!(e.contains("/etc/nginx/redis.pem") && e.contains("no PEM certificate"));
        let e = check_pem(Pem::PrivateKey, p, cert).unwrap_err();
        assert!(e.contains("not the certificate itself"), "{e}");
        let der = [0x30u8, 0x82, 0x03, 0x01];
        assert!(check_pem(Pem::Certificates, p, &der)
            .unwrap_err()
            .contains("DER"));
        let enc = b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIE\n";
        assert!(check_pem(Pem::PrivateKey, p, enc)
            .unwrap_err()
            .contains("encrypted"));
    }

    #[test]
    fn ip_addresses_resolve_without_a_lookup() {
        let u = parse_url("redis://127.0.0.1:6379").unwrap();
        assert_eq!(
            resolve(&u).unwrap(),
            vec!["127.0.0.1:6379".parse().unwrap()]
        );
    }
}
