//! Join tokens: how another application lets its users into webconf
//! rooms (docs/tokens.md). A token names a room, a display name, an expiry
//! and grants, signed with a secret the application shares with webconf
//! (`--join-secret`).
//!
//! Format: `v1.<payload>.<signature>`, both base64url without padding;
//! the payload is JSON (`room`, `name`, `exp` in unix seconds, and the
//! grants `host`, `publish`, `screen`, `chat`); the signature is
//! HMAC-SHA256 with the secret over `v1.<payload>` (the ASCII text, as
//! sent). Pure functions, the time passed in.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use room::{DisplayName, Grants, RoomId};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// The shortest secret accepted, in bytes: shorter ones are guessable.
pub const MIN_SECRET: usize = 16;

/// The secret join tokens are signed with.
#[derive(Clone)]
pub struct JoinKey(Vec<u8>);

impl std::fmt::Debug for JoinKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JoinKey(..)")
    }
}

/// What a valid token lets its holder do.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct JoinGrant {
    /// The name others see.
    pub name: DisplayName,
    /// Joins as a host.
    pub host: bool,
    /// What it may send.
    pub grants: Grants,
}

/// Why a token was refused.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum TokenError {
    /// Not shaped like a token, or its payload is not what it must be.
    Malformed,
    /// Not signed with our secret (or changed since).
    Invalid,
    /// Past its expiry.
    Expired,
    /// For another room.
    OtherRoom,
}

impl TokenError {
    /// Words for the `bad-token` error.
    pub fn message(self) -> &'static str {
        match self {
            TokenError::Malformed => "the join token is malformed",
            TokenError::Invalid => "the join token is not signed by this server's join secret",
            TokenError::Expired => "the join token has expired",
            TokenError::OtherRoom => "the join token is for another room",
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Payload {
    room: String,
    name: String,
    exp: u64,
    #[serde(default)]
    host: bool,
    #[serde(default = "yes")]
    publish: bool,
    #[serde(default = "yes")]
    screen: bool,
    #[serde(default = "yes")]
    chat: bool,
}

fn yes() -> bool {
    true
}

impl JoinKey {
    /// A key from a secret of at least [`MIN_SECRET`] bytes.
    pub fn new(secret: &[u8]) -> Result<JoinKey, String> {
        if secret.len() < MIN_SECRET {
            return Err(format!("the join secret must have at least {MIN_SECRET} bytes"));
        }
        Ok(JoinKey(secret.to_vec()))
    }

    fn sign(&self, signed: &str) -> [u8; 32] {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("HMAC takes keys of any length");
        mac.update(signed.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// A token for `name` in `room` until `exp` (unix seconds).
    pub fn mint(&self, room: &RoomId, name: &DisplayName, exp: u64, host: bool, grants: Grants) -> String {
        let payload = Payload {
            room: room.as_str().to_owned(),
            name: name.as_str().to_owned(),
            exp,
            host,
            publish: grants.publish,
            screen: grants.screen,
            chat: grants.chat,
        };
        let json = serde_json::to_vec(&payload).expect("a payload always serializes");
        let signed = format!("v1.{}", URL_SAFE_NO_PAD.encode(json));
        let sig = URL_SAFE_NO_PAD.encode(self.sign(&signed));
        format!("{signed}.{sig}")
    }

    /// What `token` grants in `room` at `now` (unix seconds).
    pub fn verify(&self, token: &str, room: &RoomId, now: u64) -> Result<JoinGrant, TokenError> {
        let (signed, sig) = token.rsplit_once('.').ok_or(TokenError::Malformed)?;
        let payload = signed.strip_prefix("v1.").ok_or(TokenError::Malformed)?;
        let sig = URL_SAFE_NO_PAD.decode(sig).map_err(|_| TokenError::Malformed)?;
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("HMAC takes keys of any length");
        mac.update(signed.as_bytes());
        // Constant time, and before the payload is even read.
        mac.verify_slice(&sig).map_err(|_| TokenError::Invalid)?;
        let json = URL_SAFE_NO_PAD.decode(payload).map_err(|_| TokenError::Malformed)?;
        let p: Payload = serde_json::from_slice(&json).map_err(|_| TokenError::Malformed)?;
        if now >= p.exp {
            return Err(TokenError::Expired);
        }
        let token_room = RoomId::parse(&p.room).map_err(|_| TokenError::Malformed)?;
        if &token_room != room {
            return Err(TokenError::OtherRoom);
        }
        let name = DisplayName::parse(&p.name).map_err(|_| TokenError::Malformed)?;
        Ok(JoinGrant {
            name,
            host: p.host,
            grants: Grants { publish: p.publish, screen: p.screen, chat: p.chat },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room(s: &str) -> RoomId {
        RoomId::parse(s).expect("valid room")
    }

    fn key() -> JoinKey {
        JoinKey::new(b"0123456789abcdef-test").expect("long enough")
    }

    #[test]
    fn a_token_grants_what_it_says_in_its_room_until_it_expires() {
        let name = DisplayName::parse("Minji").expect("valid");
        let grants = Grants { publish: true, screen: false, chat: true };
        let t = key().mint(&room("class-7"), &name, 1000, true, grants);
        let want = JoinGrant { name, host: true, grants };
        assert_eq!(key().verify(&t, &room("Class-7"), 999), Ok(want), "rooms are case-folded");
        assert_eq!(key().verify(&t, &room("class-7"), 1000), Err(TokenError::Expired));
        assert_eq!(key().verify(&t, &room("class-8"), 999), Err(TokenError::OtherRoom));
        let other = JoinKey::new(b"another secret, long enough").expect("long");
        assert_eq!(other.verify(&t, &room("class-7"), 999), Err(TokenError::Invalid));
    }

    #[test]
    fn a_changed_payload_is_refused() {
        let name = DisplayName::parse("Minji").expect("valid");
        let t = key().mint(&room("tea"), &name, 1000, false, Grants::default());
        let (_, payload, sig) = {
            let mut p = t.split('.');
            (p.next().unwrap_or(""), p.next().unwrap_or(""), p.next().unwrap_or(""))
        };
        let json = String::from_utf8(URL_SAFE_NO_PAD.decode(payload).expect("b64")).expect("utf8");
        let forged = URL_SAFE_NO_PAD.encode(json.replace("\"host\":false", "\"host\":true"));
        assert_eq!(key().verify(&format!("v1.{forged}.{sig}"), &room("tea"), 999), Err(TokenError::Invalid));
    }

    #[test]
    fn a_token_made_elsewhere_by_the_documented_recipe_is_accepted() {
        // docs/tokens.md's Python example with this secret, room "tea",
        // name "Ara", exp 2000000000, no grants given (all but host).
        let payload = URL_SAFE_NO_PAD.encode(br#"{"room":"tea","name":"Ara","exp":2000000000}"#);
        let signed = format!("v1.{payload}");
        let sig = URL_SAFE_NO_PAD.encode(key().sign(&signed));
        let got = key().verify(&format!("{signed}.{sig}"), &room("tea"), 1_900_000_000).expect("valid");
        assert!(!got.host);
        assert_eq!(got.grants, Grants::default());
    }

    #[test]
    fn garbage_is_refused_not_a_panic() {
        for bad in ["", ".", "v1..", "v1.x.y", "v2.e30.AAAA", "v1.!!!.AAAA", "x.y.z.w"] {
            assert!(key().verify(bad, &room("tea"), 0).is_err(), "{bad:?}");
        }
        assert!(JoinKey::new(b"short").is_err());
    }
}
