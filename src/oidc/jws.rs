//! JSON Web Signatures (RFC 7515) of the provider's tokens in compact form, and the JSON Web
//! Keys (RFC 7517) that verify them: every asymmetric algorithm a Keycloak 26 realm can sign
//! tokens with (RFC 7518 §3, RFC 8037 for EdDSA).
//!
//! One verification path for every token: [`parse`] splits the token, [`verify`] checks the
//! signature with the key the caller picked by `kid`. RSA, ECDSA P-256/P-384 and Ed25519 use
//! `jsonwebtoken`'s RustCrypto backend; ECDSA P-521 (`ES512`) and Ed448, which `jsonwebtoken`
//! lacks, use RustCrypto's `p521` and `ed448-goldilocks`.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::Deserialize;

/// A signature algorithm this module accepts. HMAC (`HS*`) is never accepted: a Keycloak realm
/// signs with its own HMAC key, which a relying party does not have, and a token keyed with
/// the client secret could be made by anyone who holds that secret. `none` is never accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alg {
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    ES512,
    /// Ed25519 or Ed448, by the key's `crv` (RFC 8037 §3.1).
    EdDSA,
}

impl Alg {
    /// The algorithm named by a JWS header's `alg`; `None` for anything not accepted.
    pub fn from_name(name: &str) -> Option<Alg> {
        Some(match name {
            "RS256" => Alg::RS256,
            "RS384" => Alg::RS384,
            "RS512" => Alg::RS512,
            "PS256" => Alg::PS256,
            "PS384" => Alg::PS384,
            "PS512" => Alg::PS512,
            "ES256" => Alg::ES256,
            "ES384" => Alg::ES384,
            "ES512" => Alg::ES512,
            "EdDSA" => Alg::EdDSA,
            _ => return None,
        })
    }

    /// `jsonwebtoken`'s name for the algorithm, for those it verifies.
    fn jsonwebtoken(self) -> jsonwebtoken::Algorithm {
        use jsonwebtoken::Algorithm as A;
        match self {
            Alg::RS256 => A::RS256,
            Alg::RS384 => A::RS384,
            Alg::RS512 => A::RS512,
            Alg::PS256 => A::PS256,
            Alg::PS384 => A::PS384,
            Alg::PS512 => A::PS512,
            Alg::ES256 => A::ES256,
            Alg::ES384 => A::ES384,
            Alg::ES512 | Alg::EdDSA => A::EdDSA,
        }
    }
}

/// One public key of the provider's JWKS. Only the members this module uses are read; a key
/// of a type or curve it cannot use still parses (and never verifies anything), so one exotic
/// key does not make the whole set unusable.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
pub struct Jwk {
    /// `RSA`, `EC` or `OKP` for the keys this module can use (RFC 7518 §6.1, RFC 8037 §2).
    #[serde(default)]
    pub kty: String,
    /// The key id that tokens name in their header.
    #[serde(default)]
    pub kid: Option<String>,
    /// When present, the only algorithm the key may be used with (RFC 7517 §4.4).
    #[serde(default)]
    pub alg: Option<String>,
    /// When present, must be `sig` (RFC 7517 §4.2).
    #[serde(default, rename = "use")]
    pub key_use: Option<String>,
    /// The curve of an `EC` or `OKP` key: `P-256`, `P-384`, `P-521`, `Ed25519`, `Ed448`.
    #[serde(default)]
    pub crv: Option<String>,
    /// RSA modulus and exponent, base64url (RFC 7518 §6.3.1).
    #[serde(default)]
    pub n: Option<String>,
    /// RSA public exponent, base64url (RFC 7518 §6.3.1.2).
    #[serde(default)]
    pub e: Option<String>,
    /// The public point, base64url: `x` and `y` for `EC` (RFC 7518 §6.2.1), `x` alone for
    /// `OKP` (RFC 8037 §2).
    #[serde(default)]
    pub x: Option<String>,
    /// The `EC` point's y coordinate, base64url (RFC 7518 §6.2.1.3).
    #[serde(default)]
    pub y: Option<String>,
}

/// The provider's JWKS (`jwks_uri`).
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
pub struct JwkSet {
    /// In the provider's order; several may share a `kid` only by mistake (the first wins).
    pub keys: Vec<Jwk>,
}

impl JwkSet {
    /// The key with this `kid`.
    pub fn find(&self, kid: &str) -> Option<&Jwk> {
        self.keys.iter().find(|k| k.kid.as_deref() == Some(kid))
    }
}

/// The JOSE header members this module reads.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Header {
    /// The signature algorithm (RFC 7515 §4.1.1), checked against [`Alg`].
    pub alg: String,
    /// The key id (RFC 7515 §4.1.4) that picks the JWKS key.
    #[serde(default)]
    pub kid: Option<String>,
    /// The media type of the whole token (RFC 7515 §4.1.9): `at+jwt` for an access token
    /// (RFC 9068), `logout+jwt` for a logout token, usually `JWT` otherwise.
    #[serde(default)]
    pub typ: Option<String>,
}

/// A compact JWS split into its parts; nothing in it is trusted before [`verify`].
pub struct Jws<'a> {
    /// The decoded JOSE header.
    pub header: Header,
    /// `BASE64URL(header) . BASE64URL(payload)`: what was signed.
    signing_input: &'a str,
    /// The signature, still base64url (as `jsonwebtoken` takes it).
    signature: &'a str,
    /// The decoded payload: the claims' JSON.
    pub payload: Vec<u8>,
}

/// Why a signature was refused (RFC 7515 §5.2); `Display` is the log text.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JwsError {
    #[error("the token is not a signed JWT")]
    Malformed,
    #[error("the token uses algorithm {0}, which is not allowed (asymmetric signatures only)")]
    Algorithm(String),
    #[error("the JWKS key for this token is unusable with its algorithm")]
    BadKey,
    #[error("the token's signature does not verify")]
    Signature,
}

/// Splits a compact JWS (RFC 7515 §7.1) and decodes its header and payload.
pub fn parse(token: &str) -> Result<Jws<'_>, JwsError> {
    let (signing_input, signature) = token.rsplit_once('.').ok_or(JwsError::Malformed)?;
    let (header, payload) = signing_input.split_once('.').ok_or(JwsError::Malformed)?;
    let decode = |part: &str| {
        URL_SAFE_NO_PAD
            .decode(part)
            .map_err(|_| JwsError::Malformed)
    };
    let header: Header =
        serde_json::from_slice(&decode(header)?).map_err(|_| JwsError::Malformed)?;
    Ok(Jws {
        header,
        signing_input,
        signature,
        payload: decode(payload)?,
    })
}

/// The header of a token, unverified: to pick the key, or to explain a refusal.
pub fn header(token: &str) -> Option<Header> {
    let part = token.split('.').next()?;
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).ok()?).ok()
}

/// Checks the signature of `jws` with `key`: the header's algorithm must be accepted, agree
/// with the key's type and curve (and its `alg` and `use` when the key names them).
pub fn verify(jws: &Jws, key: &Jwk) -> Result<(), JwsError> {
    let alg = Alg::from_name(&jws.header.alg)
        .ok_or_else(|| JwsError::Algorithm(printable(&jws.header.alg)))?;
    if key.alg.as_deref().is_some_and(|a| a != jws.header.alg)
        || key.key_use.as_deref().is_some_and(|u| u != "sig")
    {
        return Err(JwsError::BadKey);
    }
    let curve = key.crv.as_deref();
    let by_jsonwebtoken = match (alg, key.kty.as_str(), curve) {
        (Alg::RS256 | Alg::RS384 | Alg::RS512 | Alg::PS256 | Alg::PS384 | Alg::PS512, "RSA", _) => {
            jsonwebtoken::DecodingKey::from_rsa_components(text(&key.n)?, text(&key.e)?)
        }
        (Alg::ES256, "EC", Some("P-256")) | (Alg::ES384, "EC", Some("P-384")) => {
            jsonwebtoken::DecodingKey::from_ec_components(text(&key.x)?, text(&key.y)?)
        }
        (Alg::EdDSA, "OKP", Some("Ed25519")) => {
            jsonwebtoken::DecodingKey::from_ed_components(text(&key.x)?)
        }
        (Alg::ES512, "EC", Some("P-521")) => {
            return verify_es512(jws, bytes(text(&key.x)?)?, bytes(text(&key.y)?)?)
        }
        (Alg::EdDSA, "OKP", Some("Ed448")) => return verify_ed448(jws, bytes(text(&key.x)?)?),
        _ => return Err(JwsError::BadKey),
    };
    let key = by_jsonwebtoken.map_err(|_| JwsError::BadKey)?;
    match jsonwebtoken::crypto::verify(
        jws.signature,
        jws.signing_input.as_bytes(),
        &key,
        alg.jsonwebtoken(),
    ) {
        Ok(true) => Ok(()),
        _ => Err(JwsError::Signature),
    }
}

fn text(member: &Option<String>) -> Result<&str, JwsError> {
    member.as_deref().ok_or(JwsError::BadKey)
}

fn bytes(b64: &str) -> Result<Vec<u8>, JwsError> {
    URL_SAFE_NO_PAD.decode(b64).map_err(|_| JwsError::BadKey)
}

fn signature_bytes(jws: &Jws) -> Result<Vec<u8>, JwsError> {
    URL_SAFE_NO_PAD
        .decode(jws.signature)
        .map_err(|_| JwsError::Signature)
}

/// ECDSA with P-521 and SHA-512 (RFC 7518 §3.4): the signature is R ‖ S, 66 bytes each.
fn verify_es512(jws: &Jws, x: Vec<u8>, y: Vec<u8>) -> Result<(), JwsError> {
    use p521::ecdsa::signature::Verifier;
    if x.len() != 66 || y.len() != 66 {
        return Err(JwsError::BadKey);
    }
    let mut point = Vec::with_capacity(133);
    point.push(0x04);
    point.extend_from_slice(&x);
    point.extend_from_slice(&y);
    let key = p521::ecdsa::VerifyingKey::from_sec1_bytes(&point).map_err(|_| JwsError::BadKey)?;
    let sig = p521::ecdsa::Signature::from_slice(&signature_bytes(jws)?)
        .map_err(|_| JwsError::Signature)?;
    key.verify(jws.signing_input.as_bytes(), &sig)
        .map_err(|_| JwsError::Signature)
}

/// Pure Ed448 without context (RFC 8032 §5.2, RFC 8037 §3.1): a 57-byte key, a 114-byte
/// signature.
fn verify_ed448(jws: &Jws, x: Vec<u8>) -> Result<(), JwsError> {
    let x: [u8; 57] = x.try_into().map_err(|_| JwsError::BadKey)?;
    let key = ed448_goldilocks::VerifyingKey::from_bytes(&x).map_err(|_| JwsError::BadKey)?;
    let sig = ed448_goldilocks::Signature::from_slice(&signature_bytes(jws)?)
        .map_err(|_| JwsError::Signature)?;
    key.verify_raw(&sig, jws.signing_input.as_bytes())
        .map_err(|_| JwsError::Signature)
}

/// A header value for a log line: short and printable.
fn printable(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_graphic())
        .take(32)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn vectors() -> (JwkSet, Vec<(String, String)>) {
        let (jwks, tokens) = crate::oidc::test_vectors::algorithm_vectors();
        (serde_json::from_value(jwks).unwrap(), tokens)
    }

    fn check(jwks: &JwkSet, token: &str) -> Result<(), JwsError> {
        let jws = parse(token)?;
        let kid = jws.header.kid.clone().unwrap();
        verify(&jws, jwks.find(&kid).unwrap())
    }

    #[test]
    fn every_algorithm_keycloak_offers_verifies_with_its_key() {
        let (jwks, tokens) = vectors();
        let mut names: Vec<&str> = tokens.iter().map(|(n, _)| n.as_str()).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            [
                "ES256", "ES384", "ES512", "Ed25519", "Ed448", "PS256", "PS384", "PS512", "RS256",
                "RS384", "RS512"
            ]
        );
        for (name, token) in &tokens {
            assert_eq!(check(&jwks, token), Ok(()), "{name}");
        }
    }

    #[test]
    fn a_tampered_payload_fails_for_every_algorithm() {
        let (jwks, tokens) = vectors();
        for (name, token) in &tokens {
            let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
            let mut payload: Value =
                serde_json::from_slice(&URL_SAFE_NO_PAD.decode(&parts[1]).unwrap()).unwrap();
            payload["sub"] = "admin".into();
            parts[1] = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&payload).unwrap());
            assert_eq!(
                check(&jwks, &parts.join(".")),
                Err(JwsError::Signature),
                "{name}"
            );
        }
    }

    #[test]
    fn a_key_of_another_type_or_curve_never_verifies() {
        let (jwks, tokens) = vectors();
        let token = |n: &str| &tokens.iter().find(|(k, _)| k == n).unwrap().1;
        let key = |n: &str| jwks.find(&format!("kid-{n}")).unwrap().clone();
        let with_key = |t: &str, mut k: Jwk| {
            k.alg = None;
            verify(&parse(t).unwrap(), &k)
        };
        // ES512 header, P-384 key; EdDSA header with an Ed25519 key for an Ed448 signature.
        assert_eq!(
            with_key(token("ES512"), key("ES384")),
            Err(JwsError::BadKey)
        );
        assert_eq!(
            with_key(token("Ed448"), key("Ed25519")),
            Err(JwsError::Signature)
        );
        assert_eq!(
            with_key(token("RS256"), key("ES256")),
            Err(JwsError::BadKey)
        );
        // A key that names its algorithm is used with no other.
        let mut rs384 = key("RS256");
        rs384.alg = Some("RS384".into());
        assert_eq!(
            verify(&parse(token("RS256")).unwrap(), &rs384),
            Err(JwsError::BadKey)
        );
        let mut enc = key("RS256");
        enc.key_use = Some("enc".into());
        assert_eq!(
            verify(&parse(token("RS256")).unwrap(), &enc),
            Err(JwsError::BadKey)
        );
    }

    #[test]
    fn a_jwks_with_keys_of_unknown_kinds_still_serves_the_others() {
        let jwks: JwkSet = serde_json::from_str(
            r#"{"keys":[{"kty":"OKP","crv":"X448","kid":"enc","x":"AA","use":"enc"},
                {"kty":"oct","kid":"h","k":"c2VjcmV0"},
                {"kty":"EC","crv":"secp256k1","kid":"k1","x":"AA","y":"AA"},
                {"kty":"RSA","kid":"r","n":"AQAB","e":"AQAB","x5c":["MII="]}]}"#,
        )
        .unwrap();
        assert_eq!(jwks.keys.len(), 4);
        assert!(jwks.find("r").is_some());
    }

    #[test]
    fn hmac_and_none_are_refused_whatever_the_key() {
        let (jwks, tokens) = vectors();
        let (_, rs) = &tokens[0];
        let rest = rs.split_once('.').unwrap().1;
        for alg in ["HS256", "HS512", "none", "ES256K"] {
            let head = URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"{alg}","kid":"kid-RS256"}}"#));
            assert_eq!(
                check(&jwks, &format!("{head}.{rest}")),
                Err(JwsError::Algorithm(alg.into()))
            );
        }
        assert_eq!(parse("a.b").err(), Some(JwsError::Malformed));
        assert_eq!(parse("no-dots").err(), Some(JwsError::Malformed));
    }
}
