//! The counters behind `oidc_metrics` and their Prometheus text exposition (format 0.0.4).
//!
//! One [`Metrics`] per provider lives in the provider's shared-memory zone, so every worker
//! adds to the same numbers and they outlive a reload (nginx keeps a zone whose name and size
//! did not change). Counting is one relaxed atomic add on shared memory: no lock, no
//! allocation, nothing to measure on the per-request path. Reading is a relaxed load of each
//! counter: a scrape may see one worker's add and not yet another's, which Prometheus tolerates
//! (counters only grow).
//!
//! All-zero bytes are a valid, empty [`Metrics`]: the zone is created zeroed.

use core::fmt::Write as _;
use core::sync::atomic::{AtomicU64, Ordering};

use crate::oidc::id_token::JwtError;

/// One metric family: its name, help text, and the name of its one label besides `provider`
/// (empty: none).
struct Family {
    name: &'static str,
    help: &'static str,
    label: &'static str,
}

const LOGINS_STARTED: Family = Family {
    name: "ngx_oidc_logins_started_total",
    help: "Authorization requests the module sent browsers to (OIDC Core 3.1.2.1).",
    label: "",
};
const LOGINS: Family = Family {
    name: "ngx_oidc_logins_total",
    help: "Callbacks decided: completed (session cookie written) or the cause of the refusal.",
    label: "outcome",
};
const REFRESHES: Family = Family {
    name: "ngx_oidc_refreshes_total",
    help: "Refresh grants (RFC 6749 6): done, waited (took another request's result), failed \
           (provider unreachable), ended (invalid_grant).",
    label: "outcome",
};
const REVOCATIONS: Family = Family {
    name: "ngx_oidc_revocations_total",
    help: "Provider sessions recorded as logged out, by source.",
    label: "source",
};
const BEARER: Family = Family {
    name: "ngx_oidc_bearer_tokens_total",
    help: "Bearer access tokens (RFC 6750) accepted, or the cause of the refusal.",
    label: "outcome",
};
const SESSIONS: Family = Family {
    name: "ngx_oidc_sessions_total",
    help: "Protected requests decided by session cookie, per status.",
    label: "status",
};
const PROVIDER_ERRORS: Family = Family {
    name: "ngx_oidc_provider_request_errors_total",
    help: "Calls to the provider that got no usable answer (no connection, timeout, or an \
           HTTP status other than 2xx), by endpoint.",
    label: "endpoint",
};
const DURATION: Family = Family {
    name: "ngx_oidc_provider_request_duration_seconds",
    help: "Time from sending a call to the provider to its answer, by endpoint.",
    label: "endpoint",
};

/// Something the module counts. Each variant is one time series; [`SERIES`] gives its family
/// and label value in the same order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub enum Counter {
    LoginStarted,
    LoginCompleted,
    /// The callback's state matches no login of this browser (missing, expired or foreign).
    LoginStateUnknown,
    /// The provider answered the authorization request with `error=` (OIDC Core 3.1.2.6).
    LoginProviderError,
    /// A callback without `code` and `state` (or otherwise malformed).
    LoginBadCallback,
    /// The callback's `iss` is not the provider's (RFC 9207).
    LoginIssuerMismatch,
    /// The code exchange failed: provider unreachable or the token endpoint refused.
    LoginCodeExchangeFailed,
    /// The ID token did not verify (OIDC Core 3.1.3.7).
    LoginIdTokenInvalid,
    RefreshDone,
    RefreshWaited,
    RefreshFailed,
    RefreshEnded,
    RevokedBySignOut,
    RevokedByBackChannel,
    BearerAccepted,
    BearerMalformed,
    BearerSignature,
    BearerExpired,
    /// Issuer, audience or authorized party is not this client's.
    BearerWrongAudience,
    /// An ID, logout or refresh token presented as an access token.
    BearerNotAccessToken,
    /// Another claim check failed (missing claim, issued in the future, ...).
    BearerClaims,
    SessionValid,
    /// No cookie, one that does not open, or one past its lifetime.
    SessionNone,
    SessionRevoked,
    /// A valid session that the location's rules refuse (403).
    SessionForbidden,
    ErrorDiscovery,
    ErrorJwks,
    ErrorToken,
    ErrorRefresh,
}

const COUNTERS: usize = Counter::ErrorRefresh as usize + 1;

/// The family and label value of each [`Counter`], indexed by the counter.
const SERIES: [(Counter, &Family, &str); COUNTERS] = [
    (Counter::LoginStarted, &LOGINS_STARTED, ""),
    (Counter::LoginCompleted, &LOGINS, "completed"),
    (Counter::LoginStateUnknown, &LOGINS, "state_unknown"),
    (Counter::LoginProviderError, &LOGINS, "provider_error"),
    (Counter::LoginBadCallback, &LOGINS, "bad_callback"),
    (Counter::LoginIssuerMismatch, &LOGINS, "issuer_mismatch"),
    (
        Counter::LoginCodeExchangeFailed,
        &LOGINS,
        "code_exchange_failed",
    ),
    (Counter::LoginIdTokenInvalid, &LOGINS, "id_token_invalid"),
    (Counter::RefreshDone, &REFRESHES, "done"),
    (Counter::RefreshWaited, &REFRESHES, "waited"),
    (Counter::RefreshFailed, &REFRESHES, "failed"),
    (Counter::RefreshEnded, &REFRESHES, "ended"),
    (Counter::RevokedBySignOut, &REVOCATIONS, "sign_out"),
    (Counter::RevokedByBackChannel, &REVOCATIONS, "back_channel"),
    (Counter::BearerAccepted, &BEARER, "accepted"),
    (Counter::BearerMalformed, &BEARER, "malformed"),
    (Counter::BearerSignature, &BEARER, "signature"),
    (Counter::BearerExpired, &BEARER, "expired"),
    (Counter::BearerWrongAudience, &BEARER, "wrong_audience"),
    (
        Counter::BearerNotAccessToken,
        &BEARER,
        "not_an_access_token",
    ),
    (Counter::BearerClaims, &BEARER, "claims"),
    (Counter::SessionValid, &SESSIONS, "valid"),
    (Counter::SessionNone, &SESSIONS, "none"),
    (Counter::SessionRevoked, &SESSIONS, "revoked"),
    (Counter::SessionForbidden, &SESSIONS, "forbidden"),
    (Counter::ErrorDiscovery, &PROVIDER_ERRORS, "discovery"),
    (Counter::ErrorJwks, &PROVIDER_ERRORS, "jwks"),
    (Counter::ErrorToken, &PROVIDER_ERRORS, "token"),
    (Counter::ErrorRefresh, &PROVIDER_ERRORS, "refresh"),
];

/// The counter of a bearer token refused for `e` (RFC 6750 §3.1 `invalid_token`, by cause).
pub fn bearer_refusal(e: &JwtError) -> Counter {
    match e {
        JwtError::Malformed => Counter::BearerMalformed,
        JwtError::Algorithm(_)
        | JwtError::UnknownKey(_)
        | JwtError::BadKey
        | JwtError::Signature => Counter::BearerSignature,
        JwtError::Expired => Counter::BearerExpired,
        JwtError::Issuer(_) | JwtError::Audience(_) | JwtError::AuthorizedParty => {
            Counter::BearerWrongAudience
        }
        JwtError::NotAnAccessToken(_) => Counter::BearerNotAccessToken,
        JwtError::IssuedInFuture(_)
        | JwtError::MissingClaim(_)
        | JwtError::Time(_)
        | JwtError::NotYetValid(_)
        | JwtError::Nonce
        | JwtError::Subject
        | JwtError::NotALogoutToken(_) => Counter::BearerClaims,
    }
}

/// The provider endpoint a call went to, for the latency histogram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub enum Endpoint {
    /// `/.well-known/openid-configuration` (OIDC Discovery 1.0 §4).
    Discovery,
    /// `jwks_uri` (RFC 7517).
    Jwks,
    /// The token endpoint with the authorization code (OIDC Core 3.1.3).
    Token,
    /// The token endpoint with a refresh token (RFC 6749 §6).
    Refresh,
}

const ENDPOINTS: [(Endpoint, &str, Counter); 4] = [
    (Endpoint::Discovery, "discovery", Counter::ErrorDiscovery),
    (Endpoint::Jwks, "jwks", Counter::ErrorJwks),
    (Endpoint::Token, "token", Counter::ErrorToken),
    (Endpoint::Refresh, "refresh", Counter::ErrorRefresh),
];

impl Endpoint {
    /// The counter of this endpoint's failed calls.
    pub fn error_counter(self) -> Counter {
        ENDPOINTS[self as usize].2
    }
}

/// Upper bounds of the latency buckets in milliseconds (Prometheus' default buckets, which
/// span a provider on the same host to one across an ocean); `+Inf` follows.
const BUCKETS_MS: [u64; 11] = [5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000];

/// One endpoint's latency histogram: a count per bucket (not cumulative: one add per
/// observation), the number of calls and their total time.
#[repr(C)]
struct Histogram {
    buckets: [AtomicU64; BUCKETS_MS.len() + 1],
    count: AtomicU64,
    sum_ms: AtomicU64,
}

/// One provider's counters, shared by all workers.
#[repr(C)]
pub struct Metrics {
    counters: [AtomicU64; COUNTERS],
    latency: [Histogram; ENDPOINTS.len()],
}

impl Metrics {
    /// Counts one `c`.
    #[inline]
    pub fn add(&self, c: Counter) {
        self.counters[c as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Records a call to `endpoint` that took `ms` milliseconds; `ok` false also counts it as
    /// an error of that endpoint.
    pub fn observe(&self, endpoint: Endpoint, ms: u64, ok: bool) {
        let h = &self.latency[endpoint as usize];
        let bucket = BUCKETS_MS
            .iter()
            .position(|&le| ms <= le)
            .unwrap_or(BUCKETS_MS.len());
        h.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        h.count.fetch_add(1, Ordering::Relaxed);
        h.sum_ms.fetch_add(ms, Ordering::Relaxed);
        if !ok {
            self.add(endpoint.error_counter());
        }
    }

    /// The current value of `c`.
    pub fn get(&self, c: Counter) -> u64 {
        self.counters[c as usize].load(Ordering::Relaxed)
    }
}

/// The Prometheus text exposition (version 0.0.4) of every provider's metrics: `providers` are
/// (provider name, its metrics). Each family is written once, with a `provider` label per
/// series; every series is present from the start (at 0), so that `rate()` and alerts see a
/// series before its first event.
pub fn render(providers: &[(&str, &Metrics)]) -> String {
    let mut out = String::with_capacity(8192);
    let mut last: Option<&str> = None;
    for (counter, family, value) in SERIES {
        if last != Some(family.name) {
            header(&mut out, family, "counter");
            last = Some(family.name);
        }
        for (name, m) in providers {
            out.push_str(family.name);
            labels(&mut out, name, family.label, value, None);
            let _ = writeln!(out, " {}", m.get(counter));
        }
    }
    header(&mut out, &DURATION, "histogram");
    for (endpoint, label, _) in ENDPOINTS {
        for (name, m) in providers {
            let h = &m.latency[endpoint as usize];
            let mut cumulative = 0;
            for (i, bucket) in h.buckets.iter().enumerate() {
                cumulative += bucket.load(Ordering::Relaxed);
                let le = BUCKETS_MS
                    .get(i)
                    .map_or_else(|| "+Inf".to_string(), |ms| seconds(*ms));
                let _ = write!(out, "{}_bucket", DURATION.name);
                labels(&mut out, name, DURATION.label, label, Some(&le));
                let _ = writeln!(out, " {cumulative}");
            }
            // The count is the +Inf bucket, read once: a scrape never shows a count that
            // disagrees with its buckets.
            let _ = write!(out, "{}_sum", DURATION.name);
            labels(&mut out, name, DURATION.label, label, None);
            let sum = h.sum_ms.load(Ordering::Relaxed);
            let _ = writeln!(out, " {}", seconds(sum));
            let _ = write!(out, "{}_count", DURATION.name);
            labels(&mut out, name, DURATION.label, label, None);
            let _ = writeln!(out, " {cumulative}");
        }
    }
    out
}

/// The media type of [`render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

fn header(out: &mut String, family: &Family, kind: &str) {
    let _ = writeln!(out, "# HELP {} {}", family.name, family.help);
    let _ = writeln!(out, "# TYPE {} {kind}", family.name);
}

/// `{provider="...",label="value",le="..."}`, values escaped as the text format says.
fn labels(out: &mut String, provider: &str, label: &str, value: &str, le: Option<&str>) {
    out.push_str("{provider=\"");
    escape(out, provider);
    out.push('"');
    if !label.is_empty() {
        let _ = write!(out, ",{label}=\"");
        escape(out, value);
        out.push('"');
    }
    if let Some(le) = le {
        let _ = write!(out, ",le=\"{le}\"");
    }
    out.push('}');
}

fn escape(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// Milliseconds as seconds in decimal (`2500` → `2.5`), exact, without float rounding.
fn seconds(ms: u64) -> String {
    let (s, frac) = (ms / 1000, ms % 1000);
    if frac == 0 {
        return s.to_string();
    }
    let f = format!("{frac:03}");
    format!("{s}.{}", f.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics() -> Box<Metrics> {
        // SAFETY: all-zero bytes are valid atomics, as in the zone.
        unsafe { Box::new_zeroed().assume_init() }
    }

    /// `name{labels} value` lines of `text`, for looking a series up.
    fn value(text: &str, series: &str) -> Option<String> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .map(str::to_string)
    }

    #[test]
    fn every_counter_has_its_own_series_in_order() {
        for (i, (c, _, _)) in SERIES.iter().enumerate() {
            assert_eq!(*c as usize, i, "{c:?} is out of place in SERIES");
        }
        let mut seen = std::collections::HashSet::new();
        for (c, f, v) in SERIES {
            assert!(seen.insert((f.name, v)), "{c:?} repeats {}{{{v}}}", f.name);
        }
        for (i, (e, _, _)) in ENDPOINTS.iter().enumerate() {
            assert_eq!(*e as usize, i);
        }
    }

    #[test]
    fn names_follow_prometheus_conventions() {
        let ok_name = |n: &str| {
            n.starts_with("ngx_oidc_") && n.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
        };
        for (_, f, v) in SERIES {
            assert!(ok_name(f.name) && f.name.ends_with("_total"), "{}", f.name);
            assert!(v.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'));
            assert!(f.label.is_empty() || ok_name(&format!("ngx_oidc_{}", f.label)));
        }
        assert!(DURATION.name.ends_with("_seconds"));
    }

    #[test]
    fn counts_show_per_provider_and_every_series_starts_at_zero() {
        let (a, b) = (metrics(), metrics());
        a.add(Counter::LoginStarted);
        a.add(Counter::LoginStarted);
        a.add(Counter::LoginCompleted);
        b.add(Counter::BearerNotAccessToken);
        let text = render(&[("keycloak", &a), ("other", &b)]);
        let v = |s| value(&text, s);
        assert_eq!(
            v("ngx_oidc_logins_started_total{provider=\"keycloak\"}").unwrap(),
            "2"
        );
        assert_eq!(
            v("ngx_oidc_logins_total{provider=\"keycloak\",outcome=\"completed\"}").unwrap(),
            "1"
        );
        assert_eq!(
            v("ngx_oidc_logins_total{provider=\"other\",outcome=\"completed\"}").unwrap(),
            "0"
        );
        assert_eq!(
            v("ngx_oidc_bearer_tokens_total{provider=\"other\",outcome=\"not_an_access_token\"}")
                .unwrap(),
            "1"
        );
        assert_eq!(
            text.matches("# TYPE ngx_oidc_logins_total counter").count(),
            1
        );
    }

    #[test]
    fn latency_buckets_are_cumulative_and_count_matches_inf() {
        let m = metrics();
        m.observe(Endpoint::Token, 3, true);
        m.observe(Endpoint::Token, 30, true);
        m.observe(Endpoint::Token, 60_000, false);
        let text = render(&[("p", &m)]);
        let s = |le: &str| {
            value(
                &text,
                &format!(
                    "ngx_oidc_provider_request_duration_seconds_bucket{{provider=\"p\",\
                     endpoint=\"token\",le=\"{le}\"}}"
                ),
            )
            .unwrap()
        };
        assert_eq!(s("0.005"), "1");
        assert_eq!(s("0.025"), "1");
        assert_eq!(s("0.05"), "2");
        assert_eq!(s("10"), "2");
        assert_eq!(s("+Inf"), "3");
        let t = "{provider=\"p\",endpoint=\"token\"}";
        let count = format!("ngx_oidc_provider_request_duration_seconds_count{t}");
        let sum = format!("ngx_oidc_provider_request_duration_seconds_sum{t}");
        assert_eq!(value(&text, &count).unwrap(), "3");
        assert_eq!(value(&text, &sum).unwrap(), "60.033");
        // The slow call failed: it is an error of the token endpoint, and only of that one.
        let errors = "ngx_oidc_provider_request_errors_total{provider=\"p\",endpoint=";
        assert_eq!(value(&text, &format!("{errors}\"token\"}}")).unwrap(), "1");
        assert_eq!(value(&text, &format!("{errors}\"jwks\"}}")).unwrap(), "0");
    }

    #[test]
    fn a_provider_name_is_escaped_in_its_label() {
        let m = metrics();
        let text = render(&[("a\"b\\c\nd", &m)]);
        assert!(text.contains("{provider=\"a\\\"b\\\\c\\nd\"}"));
    }

    #[test]
    fn a_bearer_refusal_is_counted_by_what_the_operator_would_fix() {
        assert_eq!(bearer_refusal(&JwtError::Expired), Counter::BearerExpired);
        assert_eq!(
            bearer_refusal(&JwtError::Audience("api".into())),
            Counter::BearerWrongAudience
        );
        assert_eq!(
            bearer_refusal(&JwtError::NotAnAccessToken("an ID token")),
            Counter::BearerNotAccessToken
        );
        assert_eq!(
            bearer_refusal(&JwtError::UnknownKey("k".into())),
            Counter::BearerSignature
        );
    }

    #[test]
    fn seconds_are_exact_decimals() {
        assert_eq!(seconds(0), "0");
        assert_eq!(seconds(5), "0.005");
        assert_eq!(seconds(250), "0.25");
        assert_eq!(seconds(2500), "2.5");
        assert_eq!(seconds(10_000), "10");
    }

    #[test]
    fn the_counters_are_small_and_plain_for_a_shared_zone() {
        assert!(size_of::<Metrics>() < 2048);
        assert!(align_of::<Metrics>() <= 8);
    }
}
