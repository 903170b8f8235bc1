//! Credentials: the coturn "REST API" scheme for time-limited TURN
//! credentials (draft-uberti-behave-turn-rest), the long-term credential
//! key of RFC 8489 section 9.2.2, and stateless nonces.
//!
//! A username is `<unix expiry>:<anything>`, its password
//! `base64(HMAC-SHA1(secret, username))`. Whoever holds the secret (webconf
//! when it hands out credentials, coturn or webconf's TURN server when it
//! checks them) can mint and check them without sharing any state.

use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use sha1::Sha1;

/// The password for `username` under `secret`.
pub fn rest_password(secret: &[u8], username: &str) -> String {
    let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(username.as_bytes());
    base64(&mac.finalize().into_bytes())
}

/// A username valid until `expires` (unix seconds) for `user`.
pub fn rest_username(expires: u64, user: &str) -> String {
    format!("{expires}:{user}")
}

/// The expiry in a REST username, if it has one.
pub fn rest_expiry(username: &str) -> Option<u64> {
    username.split(':').next()?.parse().ok()
}

/// The long-term credential key: MD5(username ":" realm ":" password).
pub fn long_term_key(username: &str, realm: &str, password: &str) -> [u8; 16] {
    let mut md5 = Md5::new();
    md5.update(username.as_bytes());
    md5.update(b":");
    md5.update(realm.as_bytes());
    md5.update(b":");
    md5.update(password.as_bytes());
    md5.finalize().into()
}

/// Makes and checks nonces without remembering them: a nonce is its expiry
/// and a MAC over it and the client's address.
#[derive(Clone)]
pub struct NonceKey([u8; 32]);

impl std::fmt::Debug for NonceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NonceKey(..)")
    }
}

/// What a nonce check found.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum NonceCheck {
    /// Ours, for this client, not expired.
    Valid,
    /// Ours but expired: answer 438 Stale Nonce with a fresh one.
    Stale,
    /// Not ours (or not for this client).
    Invalid,
}

impl NonceKey {
    /// A key from secret bytes.
    pub fn new(secret: [u8; 32]) -> Self {
        NonceKey(secret)
    }

    fn tag(&self, expires: u64, client: &str) -> String {
        let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(&self.0).expect("HMAC takes keys of any length");
        mac.update(&expires.to_be_bytes());
        mac.update(client.as_bytes());
        mac.finalize().into_bytes()[..8].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// A nonce for `client` (its address, as text) valid until `expires`.
    pub fn make(&self, expires: u64, client: &str) -> String {
        format!("{expires:x}-{}", self.tag(expires, client))
    }

    /// Checks a nonce from `client` at `now` (unix seconds).
    pub fn check(&self, nonce: &str, client: &str, now: u64) -> NonceCheck {
        let Some((expires, tag)) = nonce.split_once('-') else { return NonceCheck::Invalid };
        let Ok(expires) = u64::from_str_radix(expires, 16) else { return NonceCheck::Invalid };
        if tag != self.tag(expires, client) {
            return NonceCheck::Invalid;
        }
        if now >= expires { NonceCheck::Stale } else { NonceCheck::Valid }
    }
}

/// Standard base64 with padding (RFC 4648 section 4).
pub fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (input, output) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(input.as_bytes()), output);
        }
    }

    /// The same computation coturn's `turnserver --use-auth-secret` does:
    /// printf '1764115200:alice' | openssl dgst -sha1 -hmac 's3cret' -binary | base64
    #[test]
    fn rest_credentials_match_the_coturn_scheme() {
        assert_eq!(rest_password(b"s3cret", "1764115200:alice"), "tnDVOpiumZxLfw+kLQfAjG5KqSo=");
        assert_eq!(rest_username(1_764_115_200, "alice"), "1764115200:alice");
        assert_eq!(rest_expiry("1764115200:alice"), Some(1_764_115_200));
        assert_eq!(rest_expiry("alice"), None);
    }

    /// RFC 5769 section 2.4's user: username "マトリックス" (after SASLprep),
    /// realm "example.org", password "TheMatrIX"; the key computed apart with
    /// Python's hashlib.md5.
    #[test]
    fn long_term_key_is_md5_of_the_triple() {
        let key =
            long_term_key("\u{30DE}\u{30C8}\u{30EA}\u{30C3}\u{30AF}\u{30B9}", "example.org", "TheMatrIX");
        let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "e8ca7ad59d5eb0518e312911d2dab2a9");
    }

    #[test]
    fn nonces_are_bound_to_client_and_time() {
        let key = NonceKey::new([1; 32]);
        let nonce = key.make(1000, "198.51.100.1:5000");
        assert_eq!(key.check(&nonce, "198.51.100.1:5000", 999), NonceCheck::Valid);
        assert_eq!(key.check(&nonce, "198.51.100.1:5000", 1000), NonceCheck::Stale);
        assert_eq!(key.check(&nonce, "198.51.100.2:5000", 999), NonceCheck::Invalid);
        assert_eq!(NonceKey::new([2; 32]).check(&nonce, "198.51.100.1:5000", 999), NonceCheck::Invalid);
        for bad in ["", "-", "zz-00", "3e8", "3e8-"] {
            assert_eq!(key.check(bad, "198.51.100.1:5000", 0), NonceCheck::Invalid, "{bad:?}");
        }
    }
}
