//! Authorization rules of a location: who, among the logged-in users, may pass.
//!
//! `oidc_require_groups`, `oidc_require_roles`, `oidc_require_claim` and `oidc_email_domains`
//! are checked against the identity claims of the session (or bearer token). Every configured
//! rule must hold; within one rule, one matching value is enough.
//!
//! Inheritance follows nginx: a block without a rule takes its parent's; a block that names a
//! rule replaces the parent's rule of that kind. `oidc_require_claim` lines of a block replace
//! all inherited `oidc_require_claim` lines (like `add_header`). `off` as the only value of
//! `oidc_require_groups`, `oidc_require_roles` or `oidc_email_domains` drops an inherited rule.

use std::fmt;

use serde_json::{Map, Value};

/// A Keycloak role: a realm role, or a role of one client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// `realm_access.roles` contains it.
    Realm(String),
    /// `client:role`: `resource_access.<client>.roles` contains `role`.
    Client { client: String, role: String },
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Role::Realm(r) => f.write_str(r),
            Role::Client { client, role } => write!(f, "{client}:{role}"),
        }
    }
}

/// The rules of one location. `None`: not configured here (inherits); `Some(empty)`: `off`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rules {
    /// `oidc_allow_groups`: the user must be in one of these groups (Keycloak's `groups` claim).
    pub groups: Option<Vec<String>>,
    /// `oidc_allow_roles`: the user must hold one of these realm or client roles.
    pub roles: Option<Vec<Role>>,
    /// Each `(name, values)` must hold; `None` inherits.
    pub claims: Option<Vec<(String, Vec<String>)>>,
    /// Lower-case domains, or `*` for any.
    pub email_domains: Option<Vec<String>>,
    /// Exact addresses (lower-case); only from `/oauth2/auth?allowed_emails=`.
    pub emails: Option<Vec<String>>,
}

impl Rules {
    /// The client roles of these rules that name a client other than `client_id`. Keycloak
    /// puts another client's roles into this client's tokens only with "Full scope allowed"
    /// or a scope mapping, so such a rule is more often a typo (the shipped example once named
    /// a client "client") than intended: `nginx -t` warns.
    pub fn foreign_client_roles<'a>(&'a self, client_id: &str) -> Vec<&'a Role> {
        self.roles
            .iter()
            .flatten()
            .filter(|r| matches!(r, Role::Client { client, .. } if client != client_id))
            .collect()
    }
}

/// A configuration mistake in a rule directive; the text names the directive.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RuleError {
    #[error("{0} is duplicate in this block")]
    Duplicate(&'static str),
    #[error("{directive}: {why}")]
    Invalid {
        directive: &'static str,
        why: String,
    },
}

/// Why a logged-in user was refused: a sentence for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    NotInGroup(Vec<String>),
    MissingRole(Vec<Role>),
    Claim { name: String, expected: Vec<String> },
    NoEmail,
    EmailUnverified(String),
    EmailDomain { email: String, allowed: Vec<String> },
    EmailNotAllowed(String),
}

impl fmt::Display for Denied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Denied::NotInGroup(g) => write!(
                f,
                "not in any of the groups {} (oidc_require_groups; the token needs a \
                 \"groups\" claim: Keycloak's Group Membership mapper)",
                g.join(", ")
            ),
            Denied::MissingRole(r) => {
                let r: Vec<String> = r.iter().map(Role::to_string).collect();
                write!(
                    f,
                    "has none of the roles {} (oidc_require_roles)",
                    r.join(", ")
                )
            }
            Denied::Claim { name, expected } => write!(
                f,
                "claim \"{name}\" is missing or none of {} (oidc_require_claim)",
                expected.join(", ")
            ),
            Denied::NoEmail => f.write_str(
                "the token has no \"email\" claim (oidc_email_domains; add the \"email\" scope)",
            ),
            Denied::EmailUnverified(e) => write!(
                f,
                "email \"{e}\" is not verified (email_verified is not true; set \
                 `allow_unverified_email on` in the provider to accept it)"
            ),
            Denied::EmailDomain { email, allowed } => write!(
                f,
                "email \"{email}\" is not in the domains {} (oidc_email_domains)",
                allowed.join(", ")
            ),
            Denied::EmailNotAllowed(e) => write!(f, "email \"{e}\" is not in allowed_emails"),
        }
    }
}

fn invalid(directive: &'static str, why: impl Into<String>) -> RuleError {
    RuleError::Invalid {
        directive,
        why: why.into(),
    }
}

/// `off` alone, or a list of non-empty values.
fn list(directive: &'static str, args: &[&str]) -> Result<Vec<String>, RuleError> {
    if args.is_empty() {
        return Err(invalid(directive, "needs at least one value"));
    }
    if args == ["off"] {
        return Ok(Vec::new());
    }
    if args.iter().any(|a| a.is_empty() || *a == "off") {
        return Err(invalid(
            directive,
            "values must not be empty, and \"off\" must stand alone",
        ));
    }
    Ok(args.iter().map(|a| a.to_string()).collect())
}

impl Rules {
    /// Whether any rule applies.
    pub fn is_empty(&self) -> bool {
        self.groups.as_ref().is_none_or(Vec::is_empty)
            && self.roles.as_ref().is_none_or(Vec::is_empty)
            && self.claims.as_ref().is_none_or(Vec::is_empty)
            && self.email_domains.as_ref().is_none_or(Vec::is_empty)
            && self.emails.as_ref().is_none_or(Vec::is_empty)
    }

    /// Applies one directive line of a block (`args` without the directive name).
    pub fn set(&mut self, directive: &str, args: &[&str]) -> Result<(), RuleError> {
        match directive {
            "oidc_require_groups" => {
                let d = "oidc_require_groups";
                if self.groups.is_some() {
                    return Err(RuleError::Duplicate(d));
                }
                self.groups = Some(list(d, args)?);
            }
            "oidc_require_roles" => {
                let d = "oidc_require_roles";
                if self.roles.is_some() {
                    return Err(RuleError::Duplicate(d));
                }
                let roles = list(d, args)?
                    .into_iter()
                    .map(|r| match r.split_once(':') {
                        None => Ok(Role::Realm(r)),
                        Some((c, role)) if !c.is_empty() && !role.is_empty() => Ok(Role::Client {
                            client: c.to_string(),
                            role: role.to_string(),
                        }),
                        Some(_) => Err(invalid(
                            d,
                            format!("\"{r}\" must be a realm role or client:role"),
                        )),
                    })
                    .collect::<Result<_, _>>()?;
                self.roles = Some(roles);
            }
            "oidc_require_claim" => {
                let d = "oidc_require_claim";
                let [name, values @ ..] = args else {
                    return Err(invalid(d, "needs a claim name and at least one value"));
                };
                if name.is_empty() || values.is_empty() {
                    return Err(invalid(d, "needs a claim name and at least one value"));
                }
                let values = values.iter().map(|v| v.to_string()).collect();
                self.claims
                    .get_or_insert_with(Vec::new)
                    .push((name.to_string(), values));
            }
            "oidc_email_domains" => {
                let d = "oidc_email_domains";
                if self.email_domains.is_some() {
                    return Err(RuleError::Duplicate(d));
                }
                let domains = list(d, args)?;
                for dom in &domains {
                    if dom != "*" && (dom.contains('@') || dom.contains('*')) {
                        return Err(invalid(
                            d,
                            format!("\"{dom}\" must be a domain like example.com, or *"),
                        ));
                    }
                }
                let domains = domains
                    .into_iter()
                    .map(|s| s.trim_start_matches('.').to_ascii_lowercase())
                    .collect();
                self.email_domains = Some(domains);
            }
            _ => return Err(invalid("oidc", format!("unknown rule {directive}"))),
        }
        Ok(())
    }

    /// nginx merge: what this block does not set comes from the enclosing one.
    pub fn inherit(&mut self, parent: &Rules) {
        if self.groups.is_none() {
            self.groups.clone_from(&parent.groups);
        }
        if self.roles.is_none() {
            self.roles.clone_from(&parent.roles);
        }
        if self.claims.is_none() {
            self.claims.clone_from(&parent.claims);
        }
        if self.email_domains.is_none() {
            self.email_domains.clone_from(&parent.email_domains);
        }
    }

    /// Rules from `/oauth2/auth` query parameters (oauth2-proxy's names): `allowed_groups`,
    /// `allowed_emails`, `allowed_email_domains`, each a comma-separated list.
    pub fn from_query(get: impl Fn(&'static str) -> Option<String>) -> Rules {
        let split = |name: &'static str, lower: bool| {
            get(name).map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|s| {
                        if lower {
                            s.to_ascii_lowercase()
                        } else {
                            s.to_string()
                        }
                    })
                    .collect::<Vec<_>>()
            })
        };
        Rules {
            groups: split("allowed_groups", false),
            emails: split("allowed_emails", true),
            email_domains: split("allowed_email_domains", true),
            ..Rules::default()
        }
    }

    /// Checks every configured rule against the identity claims.
    pub fn check(
        &self,
        claims: &Map<String, Value>,
        allow_unverified_email: bool,
    ) -> Result<(), Denied> {
        if let Some(groups) = self.groups.as_ref().filter(|g| !g.is_empty()) {
            let have = strings(claims.get("groups"));
            if !groups
                .iter()
                .any(|g| have.iter().any(|h| group_matches(g, h)))
            {
                return Err(Denied::NotInGroup(groups.clone()));
            }
        }
        if let Some(roles) = self.roles.as_ref().filter(|r| !r.is_empty()) {
            if !roles.iter().any(|r| has_role(claims, r)) {
                return Err(Denied::MissingRole(roles.clone()));
            }
        }
        for (name, expected) in self.claims.iter().flatten() {
            if !claim_matches(claims.get(name), expected) {
                return Err(Denied::Claim {
                    name: name.clone(),
                    expected: expected.clone(),
                });
            }
        }
        let domains = self.email_domains.as_ref().filter(|d| !d.is_empty());
        let emails = self.emails.as_ref().filter(|e| !e.is_empty());
        if domains.is_some() || emails.is_some() {
            let Some(email) = claims.get("email").and_then(Value::as_str) else {
                return Err(Denied::NoEmail);
            };
            if !allow_unverified_email && !is_true(claims.get("email_verified")) {
                return Err(Denied::EmailUnverified(email.to_string()));
            }
            let lower = email.to_ascii_lowercase();
            if let Some(domains) = domains {
                let domain = lower.rsplit_once('@').map_or("", |(_, d)| d);
                let ok = domains
                    .iter()
                    .any(|d| d == "*" || (!domain.is_empty() && d == domain));
                if !ok {
                    return Err(Denied::EmailDomain {
                        email: email.to_string(),
                        allowed: domains.clone(),
                    });
                }
            }
            if let Some(emails) = emails {
                if !emails.contains(&lower) {
                    return Err(Denied::EmailNotAllowed(email.to_string()));
                }
            }
        }
        Ok(())
    }
}

/// Group matching. Keycloak's Group Membership mapper writes full paths (`/admins`,
/// `/admins/sub`) or, with "Full group path" off, bare names (`admins`). A configured group
/// matches a `groups` entry when both are equal after dropping one leading `/` from each:
/// `admins` and `/admins` match either form. Paths are compared whole and case-sensitively,
/// so `/admins/sub` matches only `/admins/sub` (or `admins/sub`), never `/admins` or `sub`,
/// and membership of a subgroup does not imply membership of its parent.
pub fn group_matches(configured: &str, entry: &str) -> bool {
    let strip = |s: &str| s.strip_prefix('/').unwrap_or(s).to_string();
    strip(configured) == strip(entry)
}

fn strings(v: Option<&Value>) -> Vec<&str> {
    match v {
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
        Some(Value::String(s)) => vec![s.as_str()],
        _ => Vec::new(),
    }
}

fn has_role(claims: &Map<String, Value>, role: &Role) -> bool {
    let (holder, name) = match role {
        Role::Realm(r) => (claims.get("realm_access"), r),
        Role::Client { client, role } => (
            claims.get("resource_access").and_then(|ra| ra.get(client)),
            role,
        ),
    };
    strings(holder.and_then(|h| h.get("roles")))
        .iter()
        .any(|r| r == name)
}

fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A claim equals one of the values; an array claim contains one of them.
fn claim_matches(v: Option<&Value>, expected: &[String]) -> bool {
    let hit = |v: &Value| scalar_text(v).is_some_and(|t| expected.contains(&t));
    match v {
        Some(Value::Array(a)) => a.iter().any(hit),
        Some(v) => hit(v),
        None => false,
    }
}

fn is_true(v: Option<&Value>) -> bool {
    matches!(v, Some(Value::Bool(true))) || matches!(v, Some(Value::String(s)) if s == "true")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    fn demo() -> Map<String, Value> {
        claims(json!({
            "sub": "1", "preferred_username": "demo", "email": "Demo@Example.com",
            "email_verified": true, "groups": ["/demo"],
            "realm_access": {"roles": ["user"]},
            "resource_access": {"test": {"roles": ["viewer"]}},
            "department": "sales", "levels": [1, 2],
        }))
    }

    fn alice() -> Map<String, Value> {
        claims(json!({
            "sub": "2", "email": "alice@example.com", "email_verified": true,
            "groups": ["/admins", "/staff", "/admins/sub"],
            "realm_access": {"roles": ["user", "admin"]},
            "resource_access": {"test": {"roles": ["editor"]}},
        }))
    }

    fn bob() -> Map<String, Value> {
        claims(json!({
            "sub": "3", "email": "bob@other.org", "email_verified": false, "groups": ["/staff"],
        }))
    }

    fn rules(lines: &[(&str, &[&str])]) -> Rules {
        let mut r = Rules::default();
        for (d, a) in lines {
            r.set(d, a).unwrap();
        }
        r
    }

    #[test]
    fn no_rules_let_every_logged_in_user_pass() {
        assert!(Rules::default().is_empty());
        assert_eq!(Rules::default().check(&bob(), false), Ok(()));
    }

    #[test]
    fn groups_match_with_or_without_the_leading_slash_and_only_whole_paths() {
        assert!(group_matches("admins", "/admins"));
        assert!(group_matches("/admins", "admins"));
        assert!(group_matches("/admins/sub", "/admins/sub"));
        assert!(!group_matches("/admins", "/admins/sub"));
        assert!(!group_matches("sub", "/admins/sub"));
        assert!(!group_matches("Admins", "/admins"));
        let r = rules(&[("oidc_require_groups", &["admins", "/ops"])]);
        assert_eq!(r.check(&alice(), false), Ok(()));
        assert!(matches!(
            r.check(&demo(), false),
            Err(Denied::NotInGroup(_))
        ));
        let sub = rules(&[("oidc_require_groups", &["/admins/sub"])]);
        assert_eq!(sub.check(&alice(), false), Ok(()));
        assert!(sub.check(&bob(), false).is_err());
    }

    #[test]
    fn realm_and_client_roles_come_from_keycloaks_claims() {
        let r = rules(&[("oidc_require_roles", &["admin", "test:viewer"])]);
        assert_eq!(r.check(&alice(), false), Ok(()));
        assert_eq!(r.check(&demo(), false), Ok(()));
        let err = r.check(&bob(), false).unwrap_err();
        assert_eq!(
            err.to_string(),
            "has none of the roles admin, test:viewer (oidc_require_roles)"
        );
        let client_only = rules(&[("oidc_require_roles", &["test:editor"])]);
        assert!(client_only.check(&demo(), false).is_err());
        assert!(client_only.check(&alice(), false).is_ok());
        let other_client = rules(&[("oidc_require_roles", &["other:editor"])]);
        assert!(other_client.check(&alice(), false).is_err());
    }

    #[test]
    fn claim_rules_all_hold_and_arrays_contain() {
        let r = rules(&[
            ("oidc_require_claim", &["department", "sales", "ops"]),
            ("oidc_require_claim", &["levels", "2"]),
        ]);
        assert_eq!(r.check(&demo(), false), Ok(()));
        let r = rules(&[
            ("oidc_require_claim", &["department", "sales"]),
            ("oidc_require_claim", &["email_verified", "true"]),
        ]);
        assert_eq!(r.check(&demo(), false), Ok(()));
        assert!(matches!(
            r.check(&bob(), false),
            Err(Denied::Claim { name, .. }) if name == "department"
        ));
        let groups = rules(&[("oidc_require_claim", &["groups", "/staff"])]);
        assert!(groups.check(&bob(), false).is_ok());
        assert!(groups.check(&demo(), false).is_err());
    }

    #[test]
    fn email_domains_are_case_insensitive_and_need_a_verified_email() {
        let r = rules(&[("oidc_email_domains", &["EXAMPLE.com"])]);
        assert_eq!(r.check(&demo(), false), Ok(()));
        assert!(matches!(
            r.check(&bob(), false),
            Err(Denied::EmailUnverified(_))
        ));
        assert!(matches!(
            r.check(&bob(), true),
            Err(Denied::EmailDomain { .. })
        ));
        let any = rules(&[("oidc_email_domains", &["*"])]);
        assert!(any.check(&bob(), false).is_err(), "unverified by default");
        assert!(any.check(&bob(), true).is_ok());
        let mut no_email = demo();
        no_email.remove("email");
        assert_eq!(any.check(&no_email, false), Err(Denied::NoEmail));
        let sub = rules(&[("oidc_email_domains", &["ample.com"])]);
        assert!(sub.check(&demo(), false).is_err(), "no suffix matching");
    }

    #[test]
    fn all_configured_rules_must_hold() {
        let r = rules(&[
            ("oidc_require_groups", &["/staff"]),
            ("oidc_email_domains", &["example.com"]),
        ]);
        assert!(r.check(&alice(), false).is_ok());
        assert!(r.check(&bob(), true).is_err(), "staff, but other.org");
        assert!(r.check(&demo(), false).is_err(), "example.com, not staff");
    }

    #[test]
    fn client_roles_of_another_client_are_pointed_out() {
        let r = rules(&[(
            "oidc_require_roles",
            &["admin", "test:viewer", "client:editor"],
        )]);
        let foreign: Vec<String> = r
            .foreign_client_roles("test")
            .iter()
            .map(|r| r.to_string())
            .collect();
        assert_eq!(foreign, ["client:editor"]);
        assert!(rules(&[]).foreign_client_roles("test").is_empty());
    }

    #[test]
    fn bad_arguments_name_the_directive() {
        let mut r = Rules::default();
        let e = r.set("oidc_require_groups", &[]).unwrap_err().to_string();
        assert!(e.starts_with("oidc_require_groups:"), "{e}");
        let e = r.set("oidc_require_groups", &[""]).unwrap_err().to_string();
        assert!(e.starts_with("oidc_require_groups:"), "{e}");
        let e = r
            .set("oidc_require_roles", &["test:"])
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("oidc_require_roles:") && e.contains("client:role"),
            "{e}"
        );
        let e = r.set("oidc_require_claim", &["x"]).unwrap_err().to_string();
        assert!(e.starts_with("oidc_require_claim:"), "{e}");
        let e = r
            .set("oidc_email_domains", &["a@b.c"])
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("oidc_email_domains:"), "{e}");
        r.set("oidc_require_groups", &["a"]).unwrap();
        assert_eq!(
            r.set("oidc_require_groups", &["b"]),
            Err(RuleError::Duplicate("oidc_require_groups"))
        );
    }

    #[test]
    fn blocks_inherit_rules_they_do_not_set_and_off_drops_one() {
        let parent = rules(&[
            ("oidc_require_groups", &["/staff"]),
            ("oidc_require_claim", &["department", "sales"]),
        ]);
        let mut child = rules(&[("oidc_email_domains", &["example.com"])]);
        child.inherit(&parent);
        assert_eq!(child.groups, Some(vec!["/staff".to_string()]));
        assert_eq!(child.claims.as_ref().map(Vec::len), Some(1));
        let mut off = rules(&[("oidc_require_groups", &["off"])]);
        off.inherit(&parent);
        assert_eq!(off.groups, Some(vec![]));
        assert!(off.check(&demo(), false).is_ok(), "groups off, claim holds");
    }

    #[test]
    fn auth_request_query_parameters_become_rules() {
        let q = |name: &'static str| match name {
            "allowed_groups" => Some("/admins, ops".to_string()),
            "allowed_emails" => Some("Bob@Other.org".to_string()),
            _ => None,
        };
        let r = Rules::from_query(q);
        assert_eq!(r.groups, Some(vec!["/admins".into(), "ops".into()]));
        assert!(r.check(&alice(), false).is_err(), "not bob's address");
        assert!(r.check(&bob(), true).is_err(), "bob is not an admin");
        let only_groups = Rules::from_query(|n| (n == "allowed_groups").then(|| "admins".into()));
        assert!(only_groups.check(&alice(), false).is_ok());
    }
}
