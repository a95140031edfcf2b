//! Sealed cookie values: `v1.` + base64url(nonce ‖ ciphertext ‖ tag), AES-256-GCM.
//!
//! The associated data binds a value to the cookie name and provider it was written for, so a
//! cookie copied between names or providers does not open.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use zeroize::Zeroizing;

const PREFIX: &str = "v1.";
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;

/// Why an `oidc_cookie_key` file was refused; `Display` names the line and the fix.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("no key found: write one base64 32-byte key per line (make one with: openssl rand -base64 32)")]
    Empty,
    #[error("line {line}: not base64 (make a key with: openssl rand -base64 32)")]
    NotBase64 { line: usize },
    #[error("line {line}: key is {len} bytes, AES-256 needs exactly 32 (make one with: openssl rand -base64 32)")]
    WrongLength { line: usize, len: usize },
}

/// The system random source failed, or the value is too large to encrypt.
#[derive(Debug, thiserror::Error)]
#[error("cannot seal the cookie value (system random source or encryption failed)")]
pub struct SealError;

/// All cookie keys of a provider: the first seals, every one opens (key rotation).
pub struct KeyRing {
    keys: Vec<Aes256Gcm>,
}

impl KeyRing {
    /// Parses a key file: one base64 (standard or URL-safe, padded or not) 32-byte key per line;
    /// blank lines and `#` comments are ignored.
    pub fn parse(text: &str) -> Result<KeyRing, KeyError> {
        let mut keys = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let normalized: Zeroizing<String> = Zeroizing::new(
                line.trim_end_matches('=')
                    .chars()
                    .map(|c| match c {
                        '-' => '+',
                        '_' => '/',
                        c => c,
                    })
                    .collect(),
            );
            let bytes = Zeroizing::new(
                base64::engine::general_purpose::STANDARD_NO_PAD
                    .decode(normalized.as_bytes())
                    .map_err(|_| KeyError::NotBase64 { line: i + 1 })?,
            );
            let key = Aes256Gcm::new_from_slice(&bytes).map_err(|_| KeyError::WrongLength {
                line: i + 1,
                len: bytes.len(),
            })?;
            keys.push(key);
        }
        if keys.is_empty() {
            return Err(KeyError::Empty);
        }
        Ok(KeyRing { keys })
    }

    /// Seals `plaintext` with the first key and a fresh random nonce.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<String, SealError> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::getrandom(&mut nonce).map_err(|_| SealError)?;
        let sealed = self.keys[0]
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .map_err(|_| SealError)?;
        let mut raw = Vec::with_capacity(NONCE_LEN + sealed.len());
        raw.extend_from_slice(&nonce);
        raw.extend_from_slice(&sealed);
        let mut out = String::with_capacity(PREFIX.len() + raw.len() * 4 / 3 + 4);
        out.push_str(PREFIX);
        URL_SAFE_NO_PAD.encode_string(&raw, &mut out);
        Ok(out)
    }

    /// Opens a sealed value; `None` for anything that is not intact and ours. The plaintext
    /// holds tokens: it is wiped when dropped.
    pub fn open(&self, aad: &[u8], value: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
        let body = value.strip_prefix(PREFIX.as_bytes())?;
        let raw = URL_SAFE_NO_PAD.decode(body).ok()?;
        if raw.len() < NONCE_LEN + TAG_LEN {
            return None;
        }
        let (nonce, sealed) = raw.split_at(NONCE_LEN);
        self.keys.iter().find_map(|key| {
            key.decrypt(Nonce::from_slice(nonce), Payload { msg: sealed, aad })
                .ok()
                .map(Zeroizing::new)
        })
    }
}

/// A fresh random key in the key-file format, for scripts and tests.
pub fn generate_key_line() -> Result<String, getrandom::Error> {
    let mut key = Zeroizing::new([0u8; 32]);
    getrandom::getrandom(key.as_mut())?;
    Ok(STANDARD.encode(key.as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(lines: &[&str]) -> KeyRing {
        KeyRing::parse(&lines.join("\n")).unwrap()
    }

    #[test]
    fn a_sealed_value_opens_with_the_same_key_and_binding() {
        let k = generate_key_line().unwrap();
        let r = ring(&[&k]);
        let v = r.seal(b"_oidc|kc", b"hello").unwrap();
        assert!(v.starts_with("v1."));
        assert_eq!(
            r.open(b"_oidc|kc", v.as_bytes()).unwrap().as_slice(),
            b"hello"
        );
    }

    #[test]
    fn a_value_for_another_cookie_or_provider_does_not_open() {
        let r = ring(&[&generate_key_line().unwrap()]);
        let v = r.seal(b"_oidc|kc", b"hello").unwrap();
        assert!(r.open(b"_other|kc", v.as_bytes()).is_none());
        assert!(r.open(b"_oidc|other", v.as_bytes()).is_none());
    }

    #[test]
    fn tampered_truncated_and_garbage_values_do_not_open() {
        let r = ring(&[&generate_key_line().unwrap()]);
        let v = r.seal(b"a", b"some session data").unwrap();
        let mut bytes = v.clone().into_bytes();
        let mid = bytes.len() / 2;
        bytes[mid] = if bytes[mid] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(bytes).unwrap();
        assert!(r.open(b"a", tampered.as_bytes()).is_none());
        assert!(r.open(b"a", &v.as_bytes()[..v.len() - 3]).is_none());
        for junk in ["", "v1.", "v1.!!!!", "v2.abc", "garbage", "v1.AAAA"] {
            assert!(r.open(b"a", junk.as_bytes()).is_none(), "{junk}");
        }
    }

    #[test]
    fn rotation_keeps_old_values_readable_and_seals_with_the_first_key() {
        let old = generate_key_line().unwrap();
        let new = generate_key_line().unwrap();
        let before = ring(&[&old]).seal(b"a", b"x").unwrap();
        let rotated = ring(&[&new, &old]);
        assert_eq!(
            rotated.open(b"a", before.as_bytes()).unwrap().as_slice(),
            b"x"
        );
        let after = rotated.seal(b"a", b"y").unwrap();
        assert!(ring(&[&old]).open(b"a", after.as_bytes()).is_none());
        assert!(ring(&[&generate_key_line().unwrap()])
            .open(b"a", before.as_bytes())
            .is_none());
    }

    #[test]
    fn key_files_accept_both_alphabets_and_refuse_bad_keys() {
        let std_key = STANDARD.encode([0xfbu8; 32]);
        let url_key = URL_SAFE_NO_PAD.encode([0xfbu8; 32]);
        assert!(KeyRing::parse(&format!("# comment\n\n{std_key}\n{url_key}\n")).is_ok());
        assert_eq!(KeyRing::parse("# only\n").err(), Some(KeyError::Empty));
        assert_eq!(
            KeyRing::parse(&STANDARD.encode([1u8; 16])).err(),
            Some(KeyError::WrongLength { line: 1, len: 16 })
        );
        assert_eq!(
            KeyRing::parse("not*base64").err(),
            Some(KeyError::NotBase64 { line: 1 })
        );
    }
}
