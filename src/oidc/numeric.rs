//! Times and lifetimes in provider answers, in the shapes real providers send: NumericDate
//! claims of signed tokens (RFC 7519 §2: a JSON number of seconds since 1970, which "can
//! represent non-integer values") and the token response's lifetimes (RFC 6749 §5.1
//! `expires_in`, Keycloak's `refresh_expires_in`), which some providers send as strings.
//!
//! Fractions of a second are dropped (rounded down): an expiry is then taken at most a second
//! early, never late.

use serde_json::{Map, Value};

/// Latest time accepted, 9999-12-31T23:59:59Z: anything later is not a date but a mistake,
/// and it keeps `now + lifetime` arithmetic far from overflowing.
pub const MAX_SECONDS: u64 = 253_402_300_799;

/// Why a time or lifetime field was refused. `Display` names the field and the cause.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum TimeError {
    #[error("\"{field}\" is {found}, not a number of seconds")]
    WrongType { field: String, found: &'static str },
    #[error("\"{field}\" is {value}, out of range (0 to {MAX_SECONDS} seconds)")]
    OutOfRange { field: String, value: String },
    #[error("\"{field}\" is the text \"{text}\", not a number of seconds")]
    NotANumber { field: String, text: String },
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Whole seconds of a JSON number: integers as they are, non-integers (`1764473812.25`,
/// `1.7644738e9`) rounded down; negative, non-finite and absurdly large values are refused.
fn seconds_of_number(field: &str, n: &serde_json::Number) -> Result<u64, TimeError> {
    let out_of_range = || TimeError::OutOfRange {
        field: field.to_string(),
        value: n.to_string(),
    };
    let secs = match n.as_u64() {
        Some(u) => u,
        None => match n.as_f64() {
            Some(f) if f.is_finite() && f >= 0.0 && f <= MAX_SECONDS as f64 => f.floor() as u64,
            _ => return Err(out_of_range()),
        },
    };
    if secs > MAX_SECONDS {
        return Err(out_of_range());
    }
    Ok(secs)
}

/// The NumericDate claim `field` of a token's claims (`exp`, `iat`, `nbf`, `auth_time`), in
/// whole seconds since 1970: `Ok(None)` when the claim is absent, an error naming the claim
/// when it is not a non-negative JSON number (a string is refused: RFC 7519 says number).
pub fn numeric_date(claims: &Map<String, Value>, field: &str) -> Result<Option<u64>, TimeError> {
    match claims.get(field) {
        None => Ok(None),
        Some(Value::Number(n)) => seconds_of_number(field, n).map(Some),
        Some(other) => Err(TimeError::WrongType {
            field: field.to_string(),
            found: json_type(other),
        }),
    }
}

/// A lifetime of the token response (`expires_in`, `refresh_expires_in`) in whole seconds:
/// `Ok(None)` when absent or `null`; numbers as in [`numeric_date`]; a string holding a number
/// (`"300"`, `" 299.5 "`) as that number.
pub fn lifetime(field: &str, value: Option<&Value>) -> Result<Option<u64>, TimeError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => seconds_of_number(field, n).map(Some),
        Some(Value::String(s)) => {
            let text = s.trim();
            let n = text
                .parse::<serde_json::Number>()
                .map_err(|_| TimeError::NotANumber {
                    field: field.to_string(),
                    text: text.chars().filter(|c| !c.is_control()).take(40).collect(),
                })?;
            seconds_of_number(field, &n).map(Some)
        }
        Some(other) => Err(TimeError::WrongType {
            field: field.to_string(),
            found: json_type(other),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn numeric_dates_accept_integers_fractions_and_exponents() {
        let c = claims(
            json!({"a": 1764473812, "b": 1764473812.25, "c": 1.7644738e9,
                              "d": 1764473812.999, "e": 0}),
        );
        assert_eq!(numeric_date(&c, "a"), Ok(Some(1764473812)));
        assert_eq!(numeric_date(&c, "b"), Ok(Some(1764473812)));
        assert_eq!(numeric_date(&c, "c"), Ok(Some(1764473800)));
        assert_eq!(numeric_date(&c, "d"), Ok(Some(1764473812)), "rounded down");
        assert_eq!(numeric_date(&c, "e"), Ok(Some(0)));
        assert_eq!(numeric_date(&c, "missing"), Ok(None));
    }

    #[test]
    fn a_refused_numeric_date_names_the_claim_and_the_cause() {
        let c = claims(
            json!({"s": "1764473812", "neg": -1, "negf": -0.5, "big": 1e300,
                              "huge": 18446744073709551615u64, "b": true, "n": null, "o": {}}),
        );
        assert_eq!(
            numeric_date(&c, "s"),
            Err(TimeError::WrongType {
                field: "s".into(),
                found: "a string"
            })
        );
        for f in ["neg", "negf", "big", "huge"] {
            let e = numeric_date(&c, f).unwrap_err();
            assert!(matches!(e, TimeError::OutOfRange { .. }), "{f}: {e}");
            assert!(e.to_string().contains("out of range"), "{e}");
        }
        assert_eq!(
            numeric_date(&c, "n").unwrap_err().to_string(),
            "\"n\" is null, not a number of seconds"
        );
        assert!(matches!(
            numeric_date(&c, "b"),
            Err(TimeError::WrongType { .. })
        ));
        assert!(matches!(
            numeric_date(&c, "o"),
            Err(TimeError::WrongType { .. })
        ));
    }

    #[test]
    fn lifetimes_accept_numbers_strings_and_absence() {
        let l = |v: Value| lifetime("expires_in", Some(&v));
        assert_eq!(l(json!(300)), Ok(Some(300)));
        assert_eq!(l(json!(299.9)), Ok(Some(299)));
        assert_eq!(l(json!("300")), Ok(Some(300)));
        assert_eq!(l(json!(" 3599 ")), Ok(Some(3599)));
        assert_eq!(l(json!("299.5")), Ok(Some(299)));
        assert_eq!(l(json!(0)), Ok(Some(0)));
        assert_eq!(l(Value::Null), Ok(None));
        assert_eq!(lifetime("expires_in", None), Ok(None));
    }

    #[test]
    fn a_refused_lifetime_names_the_field_and_the_cause() {
        let l = |v: Value| lifetime("expires_in", Some(&v)).unwrap_err().to_string();
        assert_eq!(
            l(json!("soon")),
            "\"expires_in\" is the text \"soon\", not a number of seconds"
        );
        assert!(
            l(json!(-5)).contains("-5, out of range"),
            "{}",
            l(json!(-5))
        );
        assert!(l(json!("-5")).contains("out of range"));
        assert_eq!(
            l(json!([300])),
            "\"expires_in\" is an array, not a number of seconds"
        );
    }
}
