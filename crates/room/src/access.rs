//! Who may join a room and who runs it: roles, grants, the room's
//! settings (lock, lobby, password), host actions, and the password
//! check with its per-address limit. Plain data and pure functions; the
//! rules that use them are in `rooms.rs`.

use std::collections::HashMap;
use std::net::IpAddr;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::MediaState;

/// A member's role in its room.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub enum Role {
    /// May change the room's settings, admit people and moderate.
    Host,
    /// Everyone else.
    #[default]
    Guest,
}

/// What a member may send, from its join token (everything without one).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Grants {
    /// Microphone and camera.
    pub publish: bool,
    /// Screen share.
    pub screen: bool,
    /// Chat.
    pub chat: bool,
}

impl Default for Grants {
    fn default() -> Self {
        Grants { publish: true, screen: true, chat: true }
    }
}

impl Grants {
    /// The sources these grants allow, less those a host holds off.
    pub fn allowed(self, held: MediaState) -> MediaState {
        MediaState {
            audio: self.publish && !held.audio,
            video: self.publish && !held.video,
            screen: self.screen && !held.screen,
        }
    }
}

/// No source held: what a member starts with.
pub const NOTHING_HELD: MediaState = MediaState { audio: false, video: false, screen: false };

/// What a `join` proves, as the shell checked it: tokens are verified
/// there (they need the server's secrets); the core decides with them.
#[derive(Clone, Debug)]
pub struct Admission {
    /// The client's address (for bars and the password limit).
    pub addr: IpAddr,
    /// A resume token gave the peer its id back.
    pub resumed: bool,
    /// That resume token was issued while the peer was a host.
    pub resumed_host: bool,
    /// A join token grants `host`.
    pub token_host: bool,
    /// The client created the room (home page): host if it is new.
    pub create: bool,
    /// The room password the client gave.
    pub password: Option<String>,
    /// What the peer may send.
    pub grants: Grants,
    /// The room's chat kept elsewhere (cluster mode: in Redis, from the
    /// room's previous home), oldest first: remembered if the room starts
    /// with this join, within the usual bounds; ignored otherwise.
    pub history: Vec<crate::ChatEntry>,
    /// The room's access state kept elsewhere (cluster mode: in Redis,
    /// from the room's previous home): the room continues with it if it
    /// starts with this join; ignored otherwise.
    pub access: Box<RoomAccess>,
}

impl Default for Admission {
    fn default() -> Self {
        Admission {
            addr: IpAddr::from([0, 0, 0, 0]),
            resumed: false,
            resumed_host: false,
            token_host: false,
            create: false,
            password: None,
            grants: Grants::default(),
            history: Vec::new(),
            access: Box::default(),
        }
    }
}

/// What a room keeps about who may come in and what its members may send:
/// everything a host set that must outlive the room's move to another
/// node (cluster mode) or a member's reconnect. The default is a room
/// nobody has restricted.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct RoomAccess {
    /// No new joins.
    pub locked: bool,
    /// Newcomers wait until a host admits them.
    pub lobby: bool,
    /// The room password, hashed.
    pub password: Option<PasswordHash>,
    /// Ids a host removed and barred (at most [`crate::BARRED_MAX`]).
    pub barred_ids: Vec<crate::PeerId>,
    /// Their addresses (at most [`crate::BARRED_MAX`]).
    pub barred_addrs: Vec<IpAddr>,
    /// Ids a host removed: their resume tokens no longer walk in (at most
    /// [`crate::BARRED_MAX`]).
    pub removed: Vec<crate::PeerId>,
    /// Sources hosts hold off, by peer (at most [`crate::BARRED_MAX`]).
    pub holds: Vec<(crate::PeerId, MediaState)>,
}

impl RoomAccess {
    /// Whether a host restricted anything.
    pub fn is_open(&self) -> bool {
        *self == RoomAccess::default()
    }
}

/// A room's access settings.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct Settings {
    /// No new joins.
    pub locked: bool,
    /// Newcomers wait until a host admits them.
    pub lobby: bool,
    /// A password is needed to join.
    pub password: bool,
}

/// A change of password asked for by a host.
#[derive(Clone, Debug)]
pub enum PasswordChange {
    /// A new password, with a fresh random salt from the shell.
    Set {
        /// In clear: hashed at once, never kept.
        password: String,
        /// Random bytes.
        salt: [u8; 16],
    },
    /// No password any more.
    Clear,
}

/// A host's action on another member.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Action {
    /// Turn its microphone off and hold it off.
    Mute,
    /// Turn its camera off and hold it off.
    StopVideo,
    /// Stop its screen share and hold it off.
    StopScreen,
    /// Release the hold on its microphone and ask it to unmute.
    AskUnmute,
    /// Make it a host.
    MakeHost,
    /// Take it out of the room; `bar`: for as long as the room exists.
    Remove {
        /// Refuse its id and address from now on.
        bar: bool,
    },
}

/// Why a peer waiting in a lobby no longer is.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum KnockEnd {
    /// A host let it in.
    Admitted,
    /// A host did not.
    Denied,
    /// It gave up or disconnected.
    Left,
}

/// Why a member was taken out of its room.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum RemoveReason {
    /// A host removed it.
    Removed,
    /// A host ended the call for everyone.
    Ended,
}

/// PBKDF2 iterations for room passwords: slow enough that a stolen hash
/// is costly to attack, fast enough (about a millisecond) not to stall a
/// shard, since attempts are limited per address anyway.
const PBKDF2_ROUNDS: u32 = 4096;

/// A room password as kept: PBKDF2-HMAC-SHA256 (one block) with a salt.
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordHash {
    salt: [u8; 16],
    hash: [u8; 32],
}

impl std::fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PasswordHash(..)")
    }
}

impl PasswordHash {
    /// Hashes `password` with `salt`.
    pub fn new(password: &str, salt: [u8; 16]) -> Self {
        PasswordHash { salt, hash: pbkdf2(password.as_bytes(), &salt) }
    }

    /// The salt and the hash, to keep elsewhere (they are what the room
    /// keeps anyway; the password itself is never kept).
    pub fn to_parts(&self) -> ([u8; 16], [u8; 32]) {
        (self.salt, self.hash)
    }

    /// A hash kept by [`PasswordHash::to_parts`].
    pub fn from_parts(salt: [u8; 16], hash: [u8; 32]) -> Self {
        PasswordHash { salt, hash }
    }

    /// Whether `password` is the one hashed, in time that does not depend
    /// on where they differ.
    pub fn matches(&self, password: &str) -> bool {
        let other = pbkdf2(password.as_bytes(), &self.salt);
        other.iter().zip(self.hash.iter()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    }
}

/// PBKDF2 (RFC 8018) with HMAC-SHA256, the first 32-byte block.
fn pbkdf2(password: &[u8], salt: &[u8]) -> [u8; 32] {
    let key = <Hmac<Sha256> as Mac>::new_from_slice(password).expect("HMAC takes keys of any length");
    let mut mac = key.clone();
    mac.update(salt);
    mac.update(&1u32.to_be_bytes());
    let mut u: [u8; 32] = mac.finalize().into_bytes().into();
    let mut out = u;
    for _ in 1..PBKDF2_ROUNDS {
        let mut mac = key.clone();
        mac.update(&u);
        u = mac.finalize().into_bytes().into();
        for (o, x) in out.iter_mut().zip(u.iter()) {
            *o ^= x;
        }
    }
    out
}

/// Wrong passwords an address may try in one window.
pub const PASSWORD_ATTEMPTS: u32 = 5;
/// The window, in milliseconds.
pub const PASSWORD_WINDOW_MS: u64 = 60_000;
/// Addresses remembered at once; when all are in their window, attempts
/// from a new address are refused until one ends (failing closed).
pub const PASSWORD_ADDRESSES: usize = 4096;

/// Wrong password attempts per address, in fixed windows.
#[derive(Debug, Default)]
pub struct PasswordLimiter {
    /// Address → (wrong attempts, window start).
    failures: HashMap<IpAddr, (u32, u64)>,
}

impl PasswordLimiter {
    /// Whether `addr` may try a password now.
    pub fn may_try(&mut self, addr: IpAddr, now_ms: u64) -> bool {
        match self.failures.get(&addr) {
            Some(&(count, start)) if now_ms.saturating_sub(start) < PASSWORD_WINDOW_MS => {
                count < PASSWORD_ATTEMPTS
            }
            Some(_) => {
                self.failures.remove(&addr);
                true
            }
            None => {
                if self.failures.len() >= PASSWORD_ADDRESSES {
                    self.failures.retain(|_, (_, start)| now_ms.saturating_sub(*start) < PASSWORD_WINDOW_MS);
                }
                self.failures.len() < PASSWORD_ADDRESSES
            }
        }
    }

    /// Counts a wrong password from `addr` (after [`Self::may_try`]).
    pub fn failed(&mut self, addr: IpAddr, now_ms: u64) {
        let entry = self.failures.entry(addr).or_insert((0, now_ms));
        entry.0 += 1;
    }

    /// Addresses remembered.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.failures.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pbkdf2_agrees_with_a_second_implementation() {
        // Python: hashlib.pbkdf2_hmac('sha256', b'passwd', b'salt', 4096).hex()
        let got: String = pbkdf2(b"passwd", b"salt").iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(got, "21943fd5b7a10905c38fad60157ff498e1e81df1e03254325682a74dca3b2be8");
    }

    #[test]
    fn a_password_matches_only_itself() {
        let h = PasswordHash::new("blue kettle", [3; 16]);
        assert!(h.matches("blue kettle"));
        assert!(!h.matches("blue kettle "));
        assert!(!h.matches(""));
        assert_ne!(h, PasswordHash::new("blue kettle", [4; 16]), "the salt changes the hash");
    }

    #[test]
    fn wrong_passwords_are_limited_per_address_and_window() {
        let mut l = PasswordLimiter::default();
        let a = IpAddr::from([10, 0, 0, 1]);
        let b = IpAddr::from([10, 0, 0, 2]);
        for _ in 0..PASSWORD_ATTEMPTS {
            assert!(l.may_try(a, 1000));
            l.failed(a, 1000);
        }
        assert!(!l.may_try(a, 1000 + PASSWORD_WINDOW_MS - 1), "sixth try in the window");
        assert!(l.may_try(b, 1000), "another address is not affected");
        assert!(l.may_try(a, 1000 + PASSWORD_WINDOW_MS), "a new window");
    }

    #[test]
    fn the_limiter_remembers_a_bounded_number_of_addresses_and_fails_closed() {
        let mut l = PasswordLimiter::default();
        for i in 0..PASSWORD_ADDRESSES as u32 {
            let addr = IpAddr::from(i.to_be_bytes());
            assert!(l.may_try(addr, 0));
            l.failed(addr, 0);
        }
        assert!(!l.may_try(IpAddr::from([255, 1, 1, 1]), 10), "full and all in their window");
        assert_eq!(l.len(), PASSWORD_ADDRESSES);
        assert!(l.may_try(IpAddr::from([255, 1, 1, 1]), PASSWORD_WINDOW_MS), "windows over: forgotten");
        assert!(l.len() <= 1);
    }
}
