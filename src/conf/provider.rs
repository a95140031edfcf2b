//! The body of an `oidc_provider NAME { ... }` block.

use std::path::{Path, PathBuf};

use ipnet::IpNet;
use zeroize::Zeroizing;

use crate::conf::cluster::{self, ClientCertificate, ClusterStore, Pem, StoreTls, StoreUrl};
use crate::forwarded;
use crate::oidc::authorize::{self, ExtraArg};
use crate::session::codec::{KeyError, KeyRing};
use crate::session::cookies::{self, CookieName, CookieScope, SameSite};

/// A provider's settings, complete and checked.
pub struct ProviderConf {
    pub name: String,
    pub issuer: String,
    pub client_id: String,
    pub client_secret: Zeroizing<String>,
    pub keys: KeyRing,
    pub scope: String,
    /// Absolute URL, or a path completed from the request's scheme and Host; may hold nginx
    /// variables (then it starts with `$` or holds one, and is evaluated per request).
    pub redirect_uri: String,
    pub cookie_name: CookieName,
    /// `cookie_secure`, `cookie_domain`, `cookie_path`, `cookie_samesite`.
    pub cookie: CookieScope,
    /// `extra_auth_args`: parameters added to every authorization request.
    pub extra_auth_args: Vec<ExtraArg>,
    /// `trusted_proxies`: peers whose `X-Forwarded-Proto`/`X-Forwarded-Host` count.
    pub trusted_proxies: Vec<IpNet>,
    pub fetch_location: String,
    /// Longest a login lasts, in seconds.
    pub session_lifetime: u64,
    /// Refresh the access token this many seconds before it expires.
    pub refresh_leeway: u64,
    /// Where the provider sends the browser after logout (a path is completed from the request;
    /// may hold nginx variables).
    pub post_logout_redirect_uri: Option<String>,
    /// The audience bearer tokens must carry.
    pub bearer_audience: String,
    /// Allowed clock difference between nginx and the provider when checking token times.
    pub clock_skew: u64,
    /// `allow_unverified_email on`: email rules accept addresses with `email_verified` false.
    pub allow_unverified_email: bool,
    /// The claim that names the user (`X-Auth-Request-User`, `$oidc_user`, log lines); `sub`
    /// when a token lacks it.
    pub user_claim: String,
    /// Associated data of session cookies: binds them to this cookie name and provider.
    pub session_aad: Vec<u8>,
    /// Associated data of login-state cookies.
    pub state_aad: Vec<u8>,
    /// `cluster_store`: the Redis that the nodes of a cluster share; `None` keeps every
    /// decision in this node.
    pub cluster: Option<ClusterStore>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfError {
    #[error("\"{0}\" is not a directive of oidc_provider (known: {KNOWN})")]
    Unknown(String),
    #[error("\"{0}\" takes exactly one value")]
    Arity(String),
    #[error("\"{0}\" is given twice")]
    Duplicate(String),
    #[error("\"{directive}\": {why}")]
    Invalid {
        directive: &'static str,
        why: String,
    },
    #[error("\"{directive}\": cannot read \"{path}\": {err}")]
    File {
        directive: &'static str,
        path: String,
        err: std::io::Error,
    },
    #[error("\"cookie_secret_file\" \"{path}\": {err}")]
    Key { path: String, err: KeyError },
    #[error("\"{directive}\" does not fit \"{other}\": {why}")]
    Conflict {
        directive: &'static str,
        other: &'static str,
        why: String,
    },
    #[error("oidc_provider \"{provider}\" has no \"{directive}\"; {fix}")]
    Missing {
        provider: String,
        directive: &'static str,
        fix: &'static str,
    },
}

const KNOWN: &str = "issuer, client_id, client_secret, client_secret_file, cookie_secret_file, \
                     scope, redirect_uri, cookie_name, cookie_secure, cookie_domain, \
                     cookie_path, cookie_samesite, extra_auth_args, trusted_proxies, \
                     fetch_location, session_lifetime, refresh_leeway, post_logout_redirect_uri, \
                     bearer_audience, clock_skew, allow_unverified_email, user_claim, \
                     cluster_store, cluster_store_password_file, cluster_store_prefix, \
                     cluster_store_trusted_certificate, cluster_store_certificate, \
                     cluster_store_certificate_key";

/// Collects the directives of one provider block.
#[derive(Default)]
pub struct ProviderBuilder {
    name: String,
    issuer: Option<String>,
    client_id: Option<String>,
    client_secret: Option<Zeroizing<String>>,
    keys: Option<KeyRing>,
    scope: Option<String>,
    redirect_uri: Option<String>,
    cookie_name: Option<String>,
    cookie_secure: Option<bool>,
    cookie_domain: Option<String>,
    cookie_path: Option<String>,
    cookie_samesite: Option<SameSite>,
    extra_auth_args: Option<Vec<ExtraArg>>,
    trusted_proxies: Option<Vec<IpNet>>,
    fetch_location: Option<String>,
    session_lifetime: Option<u64>,
    refresh_leeway: Option<u64>,
    post_logout_redirect_uri: Option<String>,
    bearer_audience: Option<String>,
    clock_skew: Option<u64>,
    allow_unverified_email: Option<bool>,
    user_claim: Option<String>,
    cluster_store: Option<StoreUrl>,
    cluster_store_password: Option<Zeroizing<String>>,
    cluster_store_prefix: Option<String>,
    cluster_store_trusted_certificate: Option<PathBuf>,
    cluster_store_certificate: Option<PathBuf>,
    cluster_store_certificate_key: Option<PathBuf>,
}

fn once<T>(slot: &mut Option<T>, directive: &str, value: T) -> Result<(), ConfError> {
    if slot.is_some() {
        return Err(ConfError::Duplicate(directive.to_string()));
    }
    *slot = Some(value);
    Ok(())
}

fn on_off(directive: &'static str, value: &str) -> Result<bool, ConfError> {
    match value {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err(ConfError::Invalid {
            directive,
            why: format!("\"{value}\" must be \"on\" or \"off\""),
        }),
    }
}

/// A URL directive's value: a path, an absolute http(s) URL, or something built from nginx
/// variables (checked per request once evaluated, see [`url_problem`]).
fn url_value(directive: &'static str, value: &str, example: &str) -> Result<(), ConfError> {
    if value.starts_with('$') {
        return Ok(());
    }
    url_problem(value).map_or(Ok(()), |_| {
        Err(ConfError::Invalid {
            directive,
            why: format!("\"{value}\" must be a path like {example} or an absolute http(s) URL"),
        })
    })
}

/// Why a `redirect_uri` or `post_logout_redirect_uri` (as configured, or as evaluated from
/// variables) is unusable, or `None`: it must be a path or an absolute http(s) URL.
pub fn url_problem(value: &str) -> Option<&'static str> {
    let ok = value.starts_with('/') && !value.starts_with("//")
        || value.starts_with("http://")
        || value.starts_with("https://");
    (!ok).then_some("not a path or an absolute http(s) URL")
}

/// Whether a configured value holds nginx variables (and so is evaluated per request).
pub fn has_variables(value: &str) -> bool {
    value.contains('$')
}

/// The path part of a literal redirect URI (`None` when variables make it unknown until a
/// request comes).
fn literal_path(uri: &str) -> Option<&str> {
    if has_variables(uri) {
        return None;
    }
    match uri.find("://") {
        Some(i) => {
            let rest = &uri[i + 3..];
            Some(rest.find('/').map_or("/", |p| &rest[p..]))
        }
        None => Some(uri),
    }
}

/// Whether a request path lies inside a cookie `Path` (RFC 6265 §5.1.4 path-match).
fn path_matches(request_path: &str, cookie_path: &str) -> bool {
    request_path == cookie_path
        || request_path.starts_with(cookie_path)
            && (cookie_path.ends_with('/') || request_path[cookie_path.len()..].starts_with('/'))
}

/// Reads a file of secrets; the text is wiped when dropped.
fn read_file(directive: &'static str, path: &Path) -> Result<Zeroizing<String>, ConfError> {
    std::fs::read_to_string(path)
        .map(Zeroizing::new)
        .map_err(|err| ConfError::File {
            directive,
            path: path.display().to_string(),
            err,
        })
}

/// A PEM file of a TLS directive: readable now and of the `kind` asked for. Returns the
/// resolved path (OpenSSL reads the file again when the configuration is applied).
fn pem_file(directive: &'static str, path: PathBuf, kind: Pem) -> Result<PathBuf, ConfError> {
    let text = std::fs::read(&path)
        .map(Zeroizing::new)
        .map_err(|err| ConfError::File {
            directive,
            path: path.display().to_string(),
            err,
        })?;
    cluster::check_pem(kind, &path, &text).map_err(|why| ConfError::Invalid { directive, why })?;
    Ok(path)
}

impl ProviderBuilder {
    pub fn new(name: &str) -> ProviderBuilder {
        ProviderBuilder {
            name: name.to_string(),
            ..Default::default()
        }
    }

    /// Applies one directive line. `resolve` turns a relative file path into nginx's
    /// prefix-relative one.
    pub fn set(
        &mut self,
        directive: &str,
        args: &[&str],
        resolve: &dyn Fn(&str) -> PathBuf,
    ) -> Result<(), ConfError> {
        if directive == "trusted_proxies" {
            return self.set_trusted_proxies(args);
        }
        let [value] = args else {
            return Err(if KNOWN.split(", ").any(|k| k.trim() == directive) {
                ConfError::Arity(directive.to_string())
            } else {
                ConfError::Unknown(directive.to_string())
            });
        };
        let value = *value;
        match directive {
            "issuer" => {
                // Kept exactly as written: the ID token's `iss` and the discovery document's
                // `issuer` must equal it character for character (OpenID Connect Discovery
                // §4.3, Core §3.1.3.7), and some providers' issuers end in `/`.
                let issuer = value;
                if !(issuer.starts_with("https://") || issuer.starts_with("http://")) {
                    return Err(ConfError::Invalid {
                        directive: "issuer",
                        why: format!("\"{value}\" is not an http(s) URL, e.g. https://sso.example.com/realms/myrealm"),
                    });
                }
                if let Some(base) = issuer
                    .find("/.well-known/")
                    .or_else(|| issuer.find("/protocol/openid-connect"))
                    .map(|i| &issuer[..i])
                {
                    return Err(ConfError::Invalid {
                        directive: "issuer",
                        why: format!(
                            "\"{value}\" is an endpoint URL, not the issuer; use \"{base}\" \
                             (the \"issuer\" value of the discovery document)"
                        ),
                    });
                }
                once(&mut self.issuer, directive, issuer.to_string())
            }
            "client_id" => once(&mut self.client_id, directive, value.to_string()),
            "client_secret" => once(
                &mut self.client_secret,
                directive,
                Zeroizing::new(value.to_string()),
            ),
            "client_secret_file" => {
                let text = read_file("client_secret_file", &resolve(value))?;
                // Only the file's line ending goes: spaces are characters of the secret.
                let secret = Zeroizing::new(text.trim_end_matches(['\n', '\r']).to_string());
                if secret.is_empty() {
                    return Err(ConfError::Invalid {
                        directive: "client_secret_file",
                        why: format!("\"{value}\" is empty"),
                    });
                }
                once(&mut self.client_secret, "client_secret", secret)
            }
            "cookie_secret_file" => {
                let path = resolve(value);
                let text = read_file("cookie_secret_file", &path)?;
                let keys = KeyRing::parse(&text).map_err(|err| ConfError::Key {
                    path: path.display().to_string(),
                    err,
                })?;
                once(&mut self.keys, directive, keys)
            }
            "scope" => {
                if !value.split(' ').any(|s| s == "openid") {
                    return Err(ConfError::Invalid {
                        directive: "scope",
                        why: "must contain \"openid\"".into(),
                    });
                }
                once(&mut self.scope, directive, value.to_string())
            }
            "redirect_uri" => {
                url_value("redirect_uri", value, "/oauth2/callback")?;
                once(&mut self.redirect_uri, directive, value.to_string())
            }
            "cookie_domain" => {
                if let Some(why) = cookies::domain_problem(value) {
                    return Err(ConfError::Invalid {
                        directive: "cookie_domain",
                        why,
                    });
                }
                once(
                    &mut self.cookie_domain,
                    directive,
                    value.to_ascii_lowercase(),
                )
            }
            "cookie_path" => {
                let valid = value.starts_with('/')
                    && value
                        .bytes()
                        .all(|b| b.is_ascii_graphic() && b != b';' && b != b',');
                if !valid {
                    return Err(ConfError::Invalid {
                        directive: "cookie_path",
                        why: format!("\"{value}\" is not a path like / or /app"),
                    });
                }
                once(&mut self.cookie_path, directive, value.to_string())
            }
            "cookie_samesite" => {
                let same_site = SameSite::parse(value).ok_or_else(|| ConfError::Invalid {
                    directive: "cookie_samesite",
                    why: format!("\"{value}\" must be lax, strict or none"),
                })?;
                once(&mut self.cookie_samesite, directive, same_site)
            }
            "extra_auth_args" => {
                let args =
                    authorize::parse_extra_args(value).map_err(|why| ConfError::Invalid {
                        directive: "extra_auth_args",
                        why,
                    })?;
                once(&mut self.extra_auth_args, directive, args)
            }
            "cookie_name" => {
                let valid = !value.is_empty()
                    && value
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
                if !valid {
                    return Err(ConfError::Invalid {
                        directive: "cookie_name",
                        why: "use letters, digits, '_' and '-' only".into(),
                    });
                }
                once(&mut self.cookie_name, directive, value.to_string())
            }
            "cookie_secure" => {
                let on = on_off("cookie_secure", value)?;
                once(&mut self.cookie_secure, directive, on)
            }
            "allow_unverified_email" => {
                let on = on_off("allow_unverified_email", value)?;
                once(&mut self.allow_unverified_email, directive, on)
            }
            "fetch_location" => {
                if !value.starts_with('/') {
                    return Err(ConfError::Invalid {
                        directive: "fetch_location",
                        why: "must be a location path like /_oidc".into(),
                    });
                }
                once(&mut self.fetch_location, directive, value.to_string())
            }
            "session_lifetime" => {
                let secs = parse_duration(value).ok_or_else(|| ConfError::Invalid {
                    directive: "session_lifetime",
                    why: format!("\"{value}\" is not a time like 30m, 8h or 7d"),
                })?;
                once(&mut self.session_lifetime, directive, secs)
            }
            "refresh_leeway" => {
                let secs = parse_duration(value).filter(|s| *s < 3600).ok_or_else(|| {
                    ConfError::Invalid {
                        directive: "refresh_leeway",
                        why: format!("\"{value}\" is not a time under an hour, like 30s"),
                    }
                })?;
                once(&mut self.refresh_leeway, directive, secs)
            }
            "post_logout_redirect_uri" => {
                url_value("post_logout_redirect_uri", value, "/")?;
                once(
                    &mut self.post_logout_redirect_uri,
                    directive,
                    value.to_string(),
                )
            }
            "bearer_audience" => once(&mut self.bearer_audience, directive, value.to_string()),
            "clock_skew" => {
                let secs = parse_duration(value).filter(|s| *s <= 600).ok_or_else(|| {
                    ConfError::Invalid {
                        directive: "clock_skew",
                        why: format!("\"{value}\" is not a time up to 10m, like 60s"),
                    }
                })?;
                once(&mut self.clock_skew, directive, secs)
            }
            "user_claim" => {
                let valid = !value.is_empty() && value.bytes().all(|b| b.is_ascii_graphic());
                if !valid {
                    return Err(ConfError::Invalid {
                        directive: "user_claim",
                        why: format!(
                            "\"{value}\" is not a claim name like sub or preferred_username"
                        ),
                    });
                }
                once(&mut self.user_claim, directive, value.to_string())
            }
            "cluster_store" => {
                let url = cluster::parse_url(value).map_err(|why| ConfError::Invalid {
                    directive: "cluster_store",
                    why,
                })?;
                once(&mut self.cluster_store, directive, url)
            }
            "cluster_store_password_file" => {
                let text = read_file("cluster_store_password_file", &resolve(value))?;
                let password = Zeroizing::new(text.trim_end_matches(['\n', '\r']).to_string());
                if password.is_empty() {
                    return Err(ConfError::Invalid {
                        directive: "cluster_store_password_file",
                        why: format!("\"{value}\" is empty"),
                    });
                }
                once(&mut self.cluster_store_password, directive, password)
            }
            "cluster_store_prefix" => {
                cluster::check_prefix(value).map_err(|why| ConfError::Invalid {
                    directive: "cluster_store_prefix",
                    why,
                })?;
                once(&mut self.cluster_store_prefix, directive, value.to_string())
            }
            "cluster_store_trusted_certificate" => {
                let path = pem_file(
                    "cluster_store_trusted_certificate",
                    resolve(value),
                    Pem::Certificates,
                )?;
                once(&mut self.cluster_store_trusted_certificate, directive, path)
            }
            "cluster_store_certificate" => {
                let path = pem_file(
                    "cluster_store_certificate",
                    resolve(value),
                    Pem::Certificates,
                )?;
                once(&mut self.cluster_store_certificate, directive, path)
            }
            "cluster_store_certificate_key" => {
                let path = pem_file(
                    "cluster_store_certificate_key",
                    resolve(value),
                    Pem::PrivateKey,
                )?;
                once(&mut self.cluster_store_certificate_key, directive, path)
            }
            other => Err(ConfError::Unknown(other.to_string())),
        }
    }

    /// `trusted_proxies ADDRESS|NETWORK ...`.
    fn set_trusted_proxies(&mut self, args: &[&str]) -> Result<(), ConfError> {
        if args.is_empty() {
            return Err(ConfError::Arity("trusted_proxies".into()));
        }
        let nets = args
            .iter()
            .map(|a| {
                forwarded::parse_trusted(a).ok_or_else(|| ConfError::Invalid {
                    directive: "trusted_proxies",
                    why: format!(
                        "\"{a}\" is not an address or network like 10.0.0.0/8 or 192.0.2.7"
                    ),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        once(&mut self.trusted_proxies, "trusted_proxies", nets)
    }

    /// The cookie scope, with the combinations browsers refuse turned into errors.
    fn cookie_scope(&self, redirect_uri: &str) -> Result<CookieScope, ConfError> {
        let scope = CookieScope {
            secure: self.cookie_secure.unwrap_or(true),
            domain: self.cookie_domain.clone(),
            path: self.cookie_path.clone().unwrap_or_else(|| "/".into()),
            same_site: self.cookie_samesite.unwrap_or_default(),
        };
        if scope.same_site == SameSite::None && !scope.secure {
            return Err(ConfError::Conflict {
                directive: "cookie_samesite",
                other: "cookie_secure off",
                why: "browsers drop a SameSite=None cookie without Secure; remove \
                      `cookie_secure off` (and serve https) or use `cookie_samesite lax`"
                    .into(),
            });
        }
        if let Some(path) = literal_path(redirect_uri).filter(|p| !path_matches(p, &scope.path)) {
            return Err(ConfError::Conflict {
                directive: "cookie_path",
                other: "redirect_uri",
                why: format!(
                    "the callback {path} is outside cookie path {}, so the browser would not \
                     send the login-state cookie to it; widen cookie_path or move redirect_uri \
                     (and the oidc_endpoints location) under it",
                    scope.path
                ),
            });
        }
        Ok(scope)
    }

    /// The cluster store, when `cluster_store` is given; its companions alone are an error.
    fn cluster(&mut self) -> Result<Option<ClusterStore>, ConfError> {
        let invalid = |why: String| ConfError::Invalid {
            directive: "cluster_store",
            why,
        };
        let tls_directive = [
            (
                "cluster_store_trusted_certificate",
                self.cluster_store_trusted_certificate.is_some(),
            ),
            (
                "cluster_store_certificate",
                self.cluster_store_certificate.is_some(),
            ),
            (
                "cluster_store_certificate_key",
                self.cluster_store_certificate_key.is_some(),
            ),
        ]
        .into_iter()
        .find_map(|(d, given)| given.then_some(d));
        let Some(mut url) = self.cluster_store.take() else {
            if let Some(directive) = tls_directive {
                return Err(ConfError::Invalid {
                    directive,
                    why: "needs `cluster_store rediss://host:port;` (TLS) in the same \
                          oidc_provider block"
                        .into(),
                });
            }
            return match (&self.cluster_store_password, &self.cluster_store_prefix) {
                (None, None) => Ok(None),
                _ => Err(invalid(
                    "cluster_store_password_file and cluster_store_prefix need \
                     `cluster_store redis://host:port;` in the same oidc_provider block"
                        .into(),
                )),
            };
        };
        let tls = if url.tls {
            Some(self.store_tls()?)
        } else if let Some(directive) = tls_directive {
            return Err(ConfError::Invalid {
                directive,
                why: "applies to a TLS link only: write the store as \
                      `cluster_store rediss://host:port;`"
                    .into(),
            });
        } else {
            None
        };
        if let Some(pw) = self.cluster_store_password.take() {
            if url.password.is_some() {
                return Err(invalid(
                    "the password is given twice: in the URL and in \
                     cluster_store_password_file; keep one (the file keeps it out of \
                     nginx.conf)"
                        .into(),
                ));
            }
            url.password = Some(pw);
        }
        // A host name is looked up later: through nginx's `resolver` when the http block has
        // one (which may come after this block), else once at start.
        let addrs = cluster::literal_addr(&url).into_iter().collect();
        let prefix = self
            .cluster_store_prefix
            .take()
            .unwrap_or_else(|| cluster::default_prefix(&self.name));
        Ok(Some(ClusterStore {
            url,
            prefix,
            addrs,
            tls,
        }))
    }

    /// The TLS settings of a `rediss://` store; a client certificate needs its key and the
    /// other way round.
    fn store_tls(&mut self) -> Result<StoreTls, ConfError> {
        let client = match (
            self.cluster_store_certificate.take(),
            self.cluster_store_certificate_key.take(),
        ) {
            (Some(certificate), Some(key)) => Some(ClientCertificate { certificate, key }),
            (None, None) => None,
            (Some(_), None) => {
                return Err(ConfError::Invalid {
                    directive: "cluster_store_certificate",
                    why: "needs its private key: add `cluster_store_certificate_key FILE;` \
                          in the same oidc_provider block"
                        .into(),
                })
            }
            (None, Some(_)) => {
                return Err(ConfError::Invalid {
                    directive: "cluster_store_certificate_key",
                    why: "is the key of a client certificate: add \
                          `cluster_store_certificate FILE;` in the same oidc_provider block"
                        .into(),
                })
            }
        };
        Ok(StoreTls {
            trusted_certificate: self.cluster_store_trusted_certificate.take(),
            client,
        })
    }

    pub fn build(mut self) -> Result<ProviderConf, ConfError> {
        let cluster = self.cluster()?;
        let missing = |directive, fix| ConfError::Missing {
            provider: self.name.clone(),
            directive,
            fix,
        };
        let issuer = self.issuer.clone().ok_or_else(|| {
            missing(
                "issuer",
                "add e.g. `issuer https://sso.example.com/realms/myrealm;`",
            )
        })?;
        let client_id = self
            .client_id
            .clone()
            .ok_or_else(|| missing("client_id", "add the client id registered at the provider"))?;
        let client_secret = self.client_secret.clone().ok_or_else(|| {
            missing(
                "client_secret",
                "add `client_secret` or `client_secret_file`",
            )
        })?;
        let redirect_uri = self
            .redirect_uri
            .clone()
            .unwrap_or_else(|| "/oauth2/callback".into());
        let cookie = self.cookie_scope(&redirect_uri)?;
        let keys = match self.keys {
            Some(k) => k,
            None => {
                return Err(ConfError::Missing {
                    provider: self.name,
                    directive: "cookie_secret_file",
                    fix: "create one with `openssl rand -base64 32 > /etc/nginx/oidc-cookie-keys` and add `cookie_secret_file /etc/nginx/oidc-cookie-keys;` (a random per-start key would log everyone out on reload)",
                })
            }
        };
        let cookie_name = self.cookie_name.unwrap_or_else(|| "_oidc".into());
        let bearer_audience = self.bearer_audience.unwrap_or_else(|| client_id.clone());
        Ok(ProviderConf {
            session_aad: format!("session|{cookie_name}|{}", self.name).into_bytes(),
            state_aad: format!("state|{cookie_name}|{}", self.name).into_bytes(),
            name: self.name,
            issuer,
            client_id,
            client_secret,
            keys,
            scope: self.scope.unwrap_or_else(|| "openid email profile".into()),
            redirect_uri,
            cookie_name: CookieName::new(&cookie_name),
            cookie,
            extra_auth_args: self.extra_auth_args.unwrap_or_default(),
            trusted_proxies: self.trusted_proxies.unwrap_or_default(),
            fetch_location: self.fetch_location.unwrap_or_else(|| "/_oidc".into()),
            session_lifetime: self.session_lifetime.unwrap_or(8 * 3600),
            refresh_leeway: self.refresh_leeway.unwrap_or(30),
            post_logout_redirect_uri: self.post_logout_redirect_uri,
            bearer_audience,
            clock_skew: self.clock_skew.unwrap_or(60),
            allow_unverified_email: self.allow_unverified_email.unwrap_or(false),
            user_claim: self
                .user_claim
                .unwrap_or_else(|| "preferred_username".into()),
            cluster,
        })
    }
}

/// nginx-style time: `90`, `90s`, `30m`, `8h`, `7d`, or combinations like `1h30m`.
pub fn parse_duration(s: &str) -> Option<u64> {
    let mut total: u64 = 0;
    let mut num: Option<u64> = None;
    for c in s.chars() {
        if let Some(d) = c.to_digit(10) {
            num = Some(num.unwrap_or(0).checked_mul(10)?.checked_add(d as u64)?);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86400,
            'w' => 7 * 86400,
            _ => return None,
        };
        total = total.checked_add(num.take()?.checked_mul(unit)?)?;
    }
    if let Some(n) = num {
        total = total.checked_add(n)?;
    }
    (total > 0).then_some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn builder_with_keyfile(dir: &Path) -> ProviderBuilder {
        let key = crate::session::codec::generate_key_line().unwrap();
        std::fs::write(dir.join("keys"), key).unwrap();
        let mut b = ProviderBuilder::new("kc");
        let r = |p: &str| dir.join(p);
        b.set("issuer", &["http://127.0.0.1:8081/realms/test/"], &r)
            .unwrap();
        b.set("client_id", &["test"], &r).unwrap();
        b.set("client_secret", &["secret"], &r).unwrap();
        b.set("cookie_secret_file", &["keys"], &r).unwrap();
        b
    }

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("ngx-oidc-conf-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_minimal_provider_gets_the_documented_defaults() {
        let p = builder_with_keyfile(&tmp("min")).build().unwrap();
        assert_eq!(
            p.issuer, "http://127.0.0.1:8081/realms/test/",
            "the issuer is kept exactly as configured"
        );
        assert_eq!(p.scope, "openid email profile");
        assert_eq!(p.redirect_uri, "/oauth2/callback");
        assert_eq!(&*p.cookie_name, "_oidc");
        assert_eq!(
            p.cookie,
            CookieScope::default(),
            "Secure, Path=/, SameSite=Lax"
        );
        assert!(p.extra_auth_args.is_empty());
        assert!(
            p.trusted_proxies.is_empty(),
            "no client's forwarded headers are trusted by default"
        );
        assert_eq!(p.fetch_location, "/_oidc");
        assert_eq!(p.refresh_leeway, 30);
        assert_eq!(p.post_logout_redirect_uri, None);
        assert_eq!(p.bearer_audience, "test");
        assert!(
            !p.allow_unverified_email,
            "unverified emails are refused by default"
        );
        assert_eq!(p.user_claim, "preferred_username");
    }

    #[test]
    fn user_claim_names_one_claim() {
        let d = tmp("user-claim");
        let r = |p: &str| d.join(p);
        let mut b = builder_with_keyfile(&d);
        let err = b.set("user_claim", &["a b"], &r).unwrap_err().to_string();
        assert!(err.contains("user_claim"), "{err}");
        b.set("user_claim", &["sub"], &r).unwrap();
        assert_eq!(b.build().unwrap().user_claim, "sub");
    }

    #[test]
    fn an_issuer_and_a_client_secret_are_taken_literally() {
        let d = tmp("literal");
        let r = |p: &str| d.join(p);
        for issuer in [
            "https://sso.example.com/application/o/app/",
            "https://sso.example.com/realms/a",
        ] {
            let mut b = ProviderBuilder::new("kc");
            b.set("issuer", &[issuer], &r).unwrap();
            b.set("client_id", &["c"], &r).unwrap();
            std::fs::write(d.join("secret"), " s3cret with spaces \r\n").unwrap();
            b.set("client_secret_file", &["secret"], &r).unwrap();
            std::fs::write(
                d.join("keys"),
                crate::session::codec::generate_key_line().unwrap(),
            )
            .unwrap();
            b.set("cookie_secret_file", &["keys"], &r).unwrap();
            let p = b.build().unwrap();
            assert_eq!(p.issuer, issuer);
            assert_eq!(p.client_secret.as_str(), " s3cret with spaces ");
        }
    }

    #[test]
    fn allow_unverified_email_is_an_on_off_switch() {
        let d = tmp("unverified");
        let r = |p: &str| d.join(p);
        let mut b = builder_with_keyfile(&d);
        let err = b
            .set("allow_unverified_email", &["yes"], &r)
            .unwrap_err()
            .to_string();
        assert!(err.contains("allow_unverified_email"), "{err}");
        b.set("allow_unverified_email", &["on"], &r).unwrap();
        assert!(b.build().unwrap().allow_unverified_email);
    }

    #[test]
    fn an_endpoint_url_given_as_issuer_is_refused_with_the_issuer_to_use() {
        let r = |p: &str| PathBuf::from(p);
        for url in [
            "https://kc/realms/a/.well-known/openid-configuration",
            "https://kc/realms/a/protocol/openid-connect/auth",
        ] {
            let err = ProviderBuilder::new("kc")
                .set("issuer", &[url], &r)
                .unwrap_err()
                .to_string();
            assert!(err.contains("use \"https://kc/realms/a\""), "{err}");
        }
    }

    #[test]
    fn missing_settings_name_the_directive_and_the_fix() {
        let err = ProviderBuilder::new("kc")
            .build()
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("\"issuer\""), "{err}");
        let mut b = ProviderBuilder::new("kc");
        let r = |p: &str| PathBuf::from(p);
        b.set("issuer", &["https://x/realms/a"], &r).unwrap();
        b.set("client_id", &["c"], &r).unwrap();
        b.set("client_secret", &["s"], &r).unwrap();
        let err = b.build().err().unwrap().to_string();
        assert!(
            err.contains("cookie_secret_file") && err.contains("openssl rand"),
            "{err}"
        );
    }

    #[test]
    fn bad_values_are_refused_with_the_directive_name() {
        let d = tmp("bad");
        let r = |p: &str| d.join(p);
        let mut b = builder_with_keyfile(&d);
        assert!(matches!(
            b.set("issuer", &["http://x"], &r),
            Err(ConfError::Duplicate(_))
        ));
        assert!(matches!(
            b.set("colour", &["x"], &r),
            Err(ConfError::Unknown(_))
        ));
        assert!(matches!(
            b.set("scope", &["a", "b"], &r),
            Err(ConfError::Arity(_))
        ));
        assert!(b
            .set("scope", &["email"], &r)
            .unwrap_err()
            .to_string()
            .contains("openid"));
        assert!(b.set("cookie_secure", &["yes"], &r).is_err());
        assert!(b.set("redirect_uri", &["callback"], &r).is_err());
        std::fs::write(d.join("short"), "c2hvcnQ=\n").unwrap();
        let err = ProviderBuilder::new("x")
            .set("cookie_secret_file", &["short"], &r)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("cookie_secret_file") && err.contains("32"),
            "{err}"
        );
        let err = ProviderBuilder::new("x")
            .set("client_secret_file", &["nope"], &r)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("client_secret_file") && err.contains("cannot read"),
            "{err}"
        );
    }

    #[test]
    fn samesite_none_without_secure_is_refused_naming_the_fix() {
        let d = tmp("samesite");
        let r = |p: &str| d.join(p);
        let mut b = builder_with_keyfile(&d);
        b.set("cookie_samesite", &["none"], &r).unwrap();
        b.set("cookie_secure", &["off"], &r).unwrap();
        let err = b.build().err().unwrap().to_string();
        assert!(
            err.contains("cookie_samesite") && err.contains("cookie_secure off"),
            "{err}"
        );
        let mut b = builder_with_keyfile(&d);
        b.set("cookie_samesite", &["None"], &r).unwrap();
        assert_eq!(b.build().unwrap().cookie.same_site, SameSite::None);
        let err = builder_with_keyfile(&d)
            .set("cookie_samesite", &["relaxed"], &r)
            .unwrap_err()
            .to_string();
        assert!(err.contains("cookie_samesite") && err.contains("lax, strict or none"));
    }

    #[test]
    fn a_shared_cookie_domain_and_path_reach_the_cookie_scope() {
        let d = tmp("domain");
        let r = |p: &str| d.join(p);
        let mut b = builder_with_keyfile(&d);
        b.set("cookie_domain", &["Example.Test"], &r).unwrap();
        b.set("cookie_path", &["/app"], &r).unwrap();
        b.set("redirect_uri", &["/app/oauth2/callback"], &r)
            .unwrap();
        let scope = b.build().unwrap().cookie;
        assert_eq!(scope.domain.as_deref(), Some("example.test"));
        assert_eq!(scope.path, "/app");
        let err = builder_with_keyfile(&d)
            .set("cookie_domain", &[".example.test"], &r)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("cookie_domain") && err.contains("leading dot"),
            "{err}"
        );
        let err = builder_with_keyfile(&d)
            .set("cookie_path", &["app"], &r)
            .unwrap_err()
            .to_string();
        assert!(err.contains("cookie_path"), "{err}");
    }

    #[test]
    fn a_cookie_path_that_hides_the_callback_is_refused() {
        let d = tmp("path");
        let r = |p: &str| d.join(p);
        let mut b = builder_with_keyfile(&d);
        b.set("cookie_path", &["/app"], &r).unwrap();
        let err = b.build().err().unwrap().to_string();
        assert!(
            err.contains("cookie_path") && err.contains("/oauth2/callback"),
            "{err}"
        );
        let mut b = builder_with_keyfile(&d);
        b.set("cookie_path", &["/app"], &r).unwrap();
        b.set("redirect_uri", &["https://x.test/application/cb"], &r)
            .unwrap();
        assert!(b.build().is_err(), "/application is not inside /app");
        let mut b = builder_with_keyfile(&d);
        b.set("cookie_path", &["/app"], &r).unwrap();
        b.set("redirect_uri", &["$scheme://$host/app/cb"], &r)
            .unwrap();
        assert!(b.build().is_ok(), "checked per request once evaluated");
    }

    #[test]
    fn urls_may_be_built_from_variables() {
        let d = tmp("vars");
        let r = |p: &str| d.join(p);
        let mut b = builder_with_keyfile(&d);
        b.set(
            "redirect_uri",
            &["$oidc_scheme://$host/oauth2/callback"],
            &r,
        )
        .unwrap();
        b.set("post_logout_redirect_uri", &["$logout_page"], &r)
            .unwrap();
        let p = b.build().unwrap();
        assert!(has_variables(&p.redirect_uri));
        assert_eq!(url_problem("https://a.test/cb"), None);
        assert_eq!(url_problem("/cb"), None);
        assert!(url_problem("//evil.test/cb").is_some());
        assert!(url_problem("javascript:alert(1)").is_some());
    }

    #[test]
    fn trusted_proxies_and_extra_auth_args_are_checked_when_read() {
        let d = tmp("proxies");
        let r = |p: &str| d.join(p);
        let mut b = builder_with_keyfile(&d);
        b.set("trusted_proxies", &["10.0.0.0/8", "127.0.0.1"], &r)
            .unwrap();
        let err = b
            .set("extra_auth_args", &["prompt=login&state=x"], &r)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("extra_auth_args") && err.contains("\"state\""),
            "{err}"
        );
        b.set("extra_auth_args", &["kc_idp_hint=$idp"], &r).unwrap();
        let p = b.build().unwrap();
        assert_eq!(p.trusted_proxies.len(), 2);
        assert_eq!(p.extra_auth_args[0].name, "kc_idp_hint");
        let err = builder_with_keyfile(&d)
            .set("trusted_proxies", &["lb.internal"], &r)
            .unwrap_err()
            .to_string();
        assert!(err.contains("trusted_proxies"), "{err}");
    }

    #[test]
    fn durations_read_like_nginx_times() {
        assert_eq!(parse_duration("90"), Some(90));
        assert_eq!(parse_duration("30m"), Some(1800));
        assert_eq!(parse_duration("1h30m"), Some(5400));
        assert_eq!(parse_duration("7d"), Some(604800));
        assert_eq!(parse_duration("0"), None);
        assert_eq!(parse_duration("h"), None);
        assert_eq!(parse_duration("5x"), None);
    }

    #[test]
    fn without_cluster_store_the_provider_stays_node_local() {
        let p = builder_with_keyfile(&tmp("nocluster")).build().unwrap();
        assert!(p.cluster.is_none());
    }

    #[test]
    fn cluster_store_takes_a_password_file_and_a_prefix_defaulting_to_the_provider() {
        let d = tmp("cluster");
        let r = |p: &str| d.join(p);
        let mut b = builder_with_keyfile(&d);
        b.set("cluster_store", &["redis://127.0.0.1:6379/2"], &r)
            .unwrap();
        let p = b.build().unwrap();
        let c = p.cluster.unwrap();
        assert_eq!(c.prefix, "ngx-oidc:kc:");
        assert_eq!(c.addrs, vec!["127.0.0.1:6379".parse().unwrap()]);
        assert_eq!(c.url.db, 2);

        std::fs::write(d.join("redis-pw"), "hunter2\n").unwrap();
        let mut b = builder_with_keyfile(&d);
        b.set("cluster_store", &["redis://127.0.0.1:6379"], &r)
            .unwrap();
        b.set("cluster_store_password_file", &["redis-pw"], &r)
            .unwrap();
        b.set("cluster_store_prefix", &["prod:"], &r).unwrap();
        let c = b.build().unwrap().cluster.unwrap();
        assert_eq!(
            c.url.password.as_deref().map(String::as_str),
            Some("hunter2")
        );
        assert_eq!(c.prefix, "prod:");
    }

    #[test]
    fn cluster_store_mistakes_name_the_directive_and_the_fix() {
        let d = tmp("cluster-bad");
        let r = |p: &str| d.join(p);
        let err = ProviderBuilder::new("x")
            .set("cluster_store", &["127.0.0.1:6379"], &r)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("cluster_store") && err.contains("redis://"),
            "{err}"
        );
        let mut b = builder_with_keyfile(&d);
        b.set("cluster_store_prefix", &["p:"], &r).unwrap();
        let err = b.build().err().unwrap().to_string();
        assert!(err.contains("cluster_store redis://"), "{err}");
        std::fs::write(d.join("pw"), "x\n").unwrap();
        let mut b = builder_with_keyfile(&d);
        b.set("cluster_store", &["redis://:y@127.0.0.1:6379"], &r)
            .unwrap();
        b.set("cluster_store_password_file", &["pw"], &r).unwrap();
        let err = b.build().err().unwrap().to_string();
        assert!(err.contains("twice") && !err.contains("\"y\""), "{err}");
    }

    #[test]
    fn a_cluster_store_host_name_is_left_for_a_later_lookup() {
        let d = tmp("cluster-name");
        let r = |p: &str| d.join(p);
        let mut b = builder_with_keyfile(&d);
        b.set("cluster_store", &["redis://redis.cluster.test:6379"], &r)
            .unwrap();
        let c = b.build().unwrap().cluster.unwrap();
        assert!(c.addrs.is_empty());
        assert_eq!(c.url.host, "redis.cluster.test");
    }

    const CERT: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
    const KEY: &str = "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n";

    #[test]
    fn rediss_verifies_against_the_trusted_certificate_and_presents_a_client_certificate() {
        let d = tmp("cluster-tls");
        let r = |p: &str| d.join(p);
        std::fs::write(d.join("ca.pem"), CERT).unwrap();
        std::fs::write(d.join("client.pem"), CERT).unwrap();
        std::fs::write(d.join("client.key"), KEY).unwrap();

        let mut b = builder_with_keyfile(&d);
        b.set("cluster_store", &["rediss://127.0.0.1:6380"], &r)
            .unwrap();
        let c = b.build().unwrap().cluster.unwrap();
        assert_eq!(
            c.tls,
            Some(StoreTls::default()),
            "no file: OpenSSL's default trust store"
        );

        let mut b = builder_with_keyfile(&d);
        b.set("cluster_store", &["rediss://127.0.0.1:6380"], &r)
            .unwrap();
        b.set("cluster_store_trusted_certificate", &["ca.pem"], &r)
            .unwrap();
        b.set("cluster_store_certificate", &["client.pem"], &r)
            .unwrap();
        b.set("cluster_store_certificate_key", &["client.key"], &r)
            .unwrap();
        let tls = b.build().unwrap().cluster.unwrap().tls.unwrap();
        assert_eq!(tls.trusted_certificate, Some(d.join("ca.pem")));
        assert_eq!(
            tls.client,
            Some(ClientCertificate {
                certificate: d.join("client.pem"),
                key: d.join("client.key"),
            })
        );

        let mut b = builder_with_keyfile(&d);
        b.set("cluster_store", &["redis://127.0.0.1:6379"], &r)
            .unwrap();
        assert_eq!(b.build().unwrap().cluster.unwrap().tls, None);
    }

    #[test]
    fn tls_directive_mistakes_name_the_directive_and_the_fix() {
        let d = tmp("cluster-tls-bad");
        let r = |p: &str| d.join(p);
        std::fs::write(d.join("ca.pem"), CERT).unwrap();
        std::fs::write(d.join("client.key"), KEY).unwrap();

        let err = |b: ProviderBuilder| b.build().err().unwrap().to_string();
        let mut b = builder_with_keyfile(&d);
        b.set("cluster_store_trusted_certificate", &["ca.pem"], &r)
            .unwrap();
        let e = err(b);
        assert!(
            e.contains("cluster_store_trusted_certificate") && e.contains("rediss://"),
            "{e}"
        );

        let mut b = builder_with_keyfile(&d);
        b.set("cluster_store", &["redis://127.0.0.1:6379"], &r)
            .unwrap();
        b.set("cluster_store_certificate_key", &["client.key"], &r)
            .unwrap();
        let e = err(b);
        assert!(
            e.contains("cluster_store_certificate_key") && e.contains("rediss://"),
            "{e}"
        );

        let mut b = builder_with_keyfile(&d);
        b.set("cluster_store", &["rediss://127.0.0.1:6380"], &r)
            .unwrap();
        b.set("cluster_store_certificate", &["ca.pem"], &r).unwrap();
        let e = err(b);
        assert!(
            e.contains("\"cluster_store_certificate\"")
                && e.contains("cluster_store_certificate_key FILE"),
            "{e}"
        );

        let mut b = builder_with_keyfile(&d);
        b.set("cluster_store", &["rediss://127.0.0.1:6380"], &r)
            .unwrap();
        b.set("cluster_store_certificate_key", &["client.key"], &r)
            .unwrap();
        let e = err(b);
        assert!(e.contains("cluster_store_certificate FILE"), "{e}");

        let mut b = builder_with_keyfile(&d);
        let e = b
            .set("cluster_store_trusted_certificate", &["missing.pem"], &r)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("cluster_store_trusted_certificate") && e.contains("missing.pem"),
            "{e}"
        );
        let e = b
            .set("cluster_store_certificate", &["client.key"], &r)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("cluster_store_certificate") && e.contains("no PEM certificate"),
            "{e}"
        );
        let e = b
            .set("cluster_store_certificate_key", &["ca.pem"], &r)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("cluster_store_certificate_key") && e.contains("no PEM private key"),
            "{e}"
        );
    }
}
