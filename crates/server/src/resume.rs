//! Resume tokens: how a peer gets its old id back after its connection
//! dropped or the server restarted (docs/protocol.md, `join`).
//!
//! A token is `<peer id>.<expiry, unix seconds>.<MAC>` (a guest's) or
//! `<peer id>.<expiry>.h.<MAC>` (a host's), the MAC being HMAC-SHA256 over
//! the room, id, expiry and role, truncated to 128 bits. The room
//! is in the MAC but not the token, so a token says nothing about its room
//! and fails anywhere else. No state is kept: any server holding the same
//! secret (the same one after a restart) can check it. Pure functions, the
//! time passed in.

use hmac::{Hmac, Mac};
use room::{PeerId, Role, RoomId};
use sha2::Sha256;

/// The MAC is truncated to this many bytes (RFC 2104 section 5 allows down
/// to half the hash; 128 bits is beyond guessing).
const MAC_BYTES: usize = 16;

/// Why a token was refused.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ResumeError {
    /// Not shaped like a token.
    Malformed,
    /// Past its expiry.
    Expired,
    /// Not signed by us for this room and id.
    Invalid,
}

impl ResumeError {
    /// Words for the `bad-resume` error.
    pub fn message(self) -> &'static str {
        match self {
            ResumeError::Malformed => "the resume token is malformed",
            ResumeError::Expired => "the resume token has expired",
            ResumeError::Invalid => "the resume token is not valid for this room",
        }
    }
}

/// The server's signing key.
#[derive(Clone)]
pub struct ResumeKey([u8; 32]);

impl std::fmt::Debug for ResumeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ResumeKey(..)")
    }
}

impl ResumeKey {
    /// A key from 32 secret bytes.
    pub fn new(secret: [u8; 32]) -> Self {
        ResumeKey(secret)
    }

    fn mac(&self, room: &RoomId, peer: PeerId, expires: u64, role: Role) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("HMAC takes keys of any length");
        // Lengths first, so no two (room, peer, expiry) triples feed the MAC
        // the same bytes.
        mac.update(b"webconf-resume-v1");
        mac.update(&(room.as_str().len() as u64).to_be_bytes());
        mac.update(room.as_str().as_bytes());
        mac.update(&peer.0.to_be_bytes());
        mac.update(&expires.to_be_bytes());
        if role == Role::Host {
            mac.update(b"host");
        }
        mac
    }

    /// A guest's token for `peer` in `room`, valid until `expires` (unix
    /// seconds).
    pub fn issue(&self, room: &RoomId, peer: PeerId, expires: u64) -> String {
        self.issue_with_role(room, peer, expires, Role::Guest)
    }

    /// A token for `peer` in `room` that also gives back `role`.
    pub fn issue_with_role(&self, room: &RoomId, peer: PeerId, expires: u64, role: Role) -> String {
        let tag = self.mac(room, peer, expires, role).finalize().into_bytes();
        let host = if role == Role::Host { "h." } else { "" };
        let mut out = format!("{peer}.{expires}.{host}");
        for b in &tag[..MAC_BYTES] {
            out.push_str(&format!("{b:02x}"));
        }
        out
    }

    /// The peer id `token` resumes in `room` at `now` (unix seconds).
    pub fn verify(&self, token: &str, room: &RoomId, now: u64) -> Result<PeerId, ResumeError> {
        self.verify_with_role(token, room, now).map(|(peer, _)| peer)
    }

    /// The peer id and role `token` gives back in `room` at `now`.
    pub fn verify_with_role(
        &self,
        token: &str,
        room: &RoomId,
        now: u64,
    ) -> Result<(PeerId, Role), ResumeError> {
        let parts: Vec<&str> = token.splitn(5, '.').collect();
        let (peer, expires, role, tag) = match parts.as_slice() {
            [peer, expires, tag] => (*peer, *expires, Role::Guest, *tag),
            [peer, expires, "h", tag] => (*peer, *expires, Role::Host, *tag),
            _ => return Err(ResumeError::Malformed),
        };
        let peer = PeerId::parse(peer).ok_or(ResumeError::Malformed)?;
        let expires: u64 = expires.parse().map_err(|_| ResumeError::Malformed)?;
        let tag = unhex(tag).ok_or(ResumeError::Malformed)?;
        if tag.len() != MAC_BYTES {
            return Err(ResumeError::Malformed);
        }
        // Checked before expiry, so an expired token says "expired" only if
        // it was ours.
        self.mac(room, peer, expires, role).verify_truncated_left(&tag).map_err(|_| ResumeError::Invalid)?;
        if now >= expires {
            return Err(ResumeError::Expired);
        }
        Ok((peer, role))
    }
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room(name: &str) -> RoomId {
        RoomId::parse(name).expect("valid room")
    }

    #[test]
    fn a_token_resumes_its_peer_in_its_room_until_it_expires() {
        let key = ResumeKey::new([7; 32]);
        let token = key.issue(&room("tea"), PeerId(42), 1000);
        assert!(token.starts_with("000000000000002a.1000."), "{token}");
        assert_eq!(key.verify(&token, &room("tea"), 999), Ok(PeerId(42)));
        assert_eq!(key.verify(&token, &room("Tea"), 999), Ok(PeerId(42)), "rooms are case-folded");
        assert_eq!(key.verify(&token, &room("tea"), 1000), Err(ResumeError::Expired));
        assert_eq!(key.verify(&token, &room("coffee"), 999), Err(ResumeError::Invalid));
        assert_eq!(ResumeKey::new([8; 32]).verify(&token, &room("tea"), 999), Err(ResumeError::Invalid));
    }

    #[test]
    fn a_token_cannot_be_edited_into_another_id_or_expiry() {
        let key = ResumeKey::new([7; 32]);
        let token = key.issue(&room("tea"), PeerId(42), 1000);
        let tag = token.rsplit('.').next().expect("tag");
        let other_peer = format!("{}.1000.{tag}", PeerId(43));
        assert_eq!(key.verify(&other_peer, &room("tea"), 999), Err(ResumeError::Invalid));
        let later = format!("{}.9999.{tag}", PeerId(42));
        assert_eq!(key.verify(&later, &room("tea"), 999), Err(ResumeError::Invalid));
    }

    #[test]
    fn a_hosts_token_gives_back_the_role_and_a_guest_cannot_claim_it() {
        let key = ResumeKey::new([7; 32]);
        let host = key.issue_with_role(&room("tea"), PeerId(42), 1000, Role::Host);
        assert_eq!(key.verify_with_role(&host, &room("tea"), 999), Ok((PeerId(42), Role::Host)));
        let guest = key.issue(&room("tea"), PeerId(42), 1000);
        assert_eq!(key.verify_with_role(&guest, &room("tea"), 999), Ok((PeerId(42), Role::Guest)));
        // A guest's token with the host mark added is not ours.
        let (head, tag) = guest.rsplit_once('.').expect("tag");
        let forged = format!("{head}.h.{tag}");
        assert_eq!(key.verify_with_role(&forged, &room("tea"), 999), Err(ResumeError::Invalid));
    }

    #[test]
    fn garbage_is_malformed_not_a_panic() {
        let key = ResumeKey::new([7; 32]);
        for bad in [
            "",
            ".",
            "..",
            "a.b.c",
            "000000000000002a.1000.zz",
            "000000000000002a.1000.abc",
            "000000000000002a.-1.00",
            "000000000000002a.1000.00.00",
            "é.é.é",
        ] {
            assert_eq!(key.verify(bad, &room("tea"), 0), Err(ResumeError::Malformed), "{bad:?}");
        }
        let short = format!("{}.1000.{}", PeerId(1), "00".repeat(8));
        assert_eq!(key.verify(&short, &room("tea"), 0), Err(ResumeError::Malformed));
    }
}
