//! The webconf signaling protocol, version 2: the wire types, their codec, and
//! the stable error codes. `docs/protocol.md` is the prose form of this crate.
//!
//! This is the API boundary between browsers and the server. Everything a
//! peer sends is parsed by [`parse`] into a [`ClientMsg`] whose names are
//! already validated, or refused with a [`ProtocolError`] carrying the code
//! to send back. Everything the server sends is built by [`encode`] or
//! [`encode_relay`]. Nothing here touches sockets or rooms.

mod client;
mod json;
mod server;
pub mod ws;

pub use client::{ClientMsg, ProtocolError, SdpKind, SfuSource, parse, parse_general};
pub use json::RawJson;
pub use server::{IceServer, ServerMsg, SfuTrack, encode, encode_relay};

/// The protocol version this crate speaks.
pub const VERSION: u64 = 3;

/// Largest message a peer may send, in bytes (UTF-8 JSON text).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// Stable error codes: clients switch on these, so they never change meaning.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum ErrorCode {
    /// The frame is not valid JSON.
    BadJson,
    /// Unknown `type`, a missing or mistyped field, or a binary frame.
    BadMessage,
    /// The first message must be `hello`.
    HelloRequired,
    /// The server does not speak the requested version.
    UnsupportedVersion,
    /// The room name is not valid.
    BadRoom,
    /// The display name is not valid.
    BadName,
    /// The room is at capacity.
    RoomFull,
    /// `join` while in a room.
    AlreadyJoined,
    /// `signal` or `leave` outside a room.
    NotJoined,
    /// `signal.to` is not another peer of the sender's room.
    UnknownPeer,
    /// Too many messages; this one was dropped.
    RateLimited,
    /// The chat text is not valid.
    BadChat,
    /// The resume token is malformed, expired, or not for this room.
    BadResume,
    /// An `sfu` description the server cannot use, or not the one expected.
    BadSdp,
    /// The server runs no SFU, or holds as many sessions as it may.
    SfuUnavailable,
    /// The SFU session could not connect in time, or its path went silent.
    SfuFailed,
    /// A host action from a guest.
    NotHost,
    /// A host locked the room.
    RoomLocked,
    /// The room has a password and the join gave none.
    PasswordRequired,
    /// The join's password is wrong (or not a valid password).
    BadPassword,
    /// Too many wrong passwords from this address lately.
    TooManyAttempts,
    /// Too many people wait in the room's lobby.
    LobbyFull,
    /// A host did not admit the peer.
    Denied,
    /// A host removed the peer and barred it.
    Barred,
    /// The server admits only join-token holders.
    TokenRequired,
    /// The join token is malformed, expired, tampered with or for another room.
    BadToken,
    /// The peer's join token does not grant this.
    NotAllowed,
    /// A host holds this source off.
    Held,
    /// Cluster mode: the servers cannot reach their shared Redis, so a room
    /// whose home is not known here cannot be joined just now.
    ClusterUnavailable,
}

impl ErrorCode {
    /// Every code, for documentation checks and metrics.
    pub const ALL: [ErrorCode; 29] = [
        ErrorCode::BadJson,
        ErrorCode::BadMessage,
        ErrorCode::HelloRequired,
        ErrorCode::UnsupportedVersion,
        ErrorCode::BadRoom,
        ErrorCode::BadName,
        ErrorCode::RoomFull,
        ErrorCode::AlreadyJoined,
        ErrorCode::NotJoined,
        ErrorCode::UnknownPeer,
        ErrorCode::RateLimited,
        ErrorCode::BadChat,
        ErrorCode::BadResume,
        ErrorCode::BadSdp,
        ErrorCode::SfuUnavailable,
        ErrorCode::SfuFailed,
        ErrorCode::NotHost,
        ErrorCode::RoomLocked,
        ErrorCode::PasswordRequired,
        ErrorCode::BadPassword,
        ErrorCode::TooManyAttempts,
        ErrorCode::LobbyFull,
        ErrorCode::Denied,
        ErrorCode::Barred,
        ErrorCode::TokenRequired,
        ErrorCode::BadToken,
        ErrorCode::NotAllowed,
        ErrorCode::Held,
        ErrorCode::ClusterUnavailable,
    ];

    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadJson => "bad-json",
            ErrorCode::BadMessage => "bad-message",
            ErrorCode::HelloRequired => "hello-required",
            ErrorCode::UnsupportedVersion => "unsupported-version",
            ErrorCode::BadRoom => "bad-room",
            ErrorCode::BadName => "bad-name",
            ErrorCode::RoomFull => "room-full",
            ErrorCode::AlreadyJoined => "already-joined",
            ErrorCode::NotJoined => "not-joined",
            ErrorCode::UnknownPeer => "unknown-peer",
            ErrorCode::RateLimited => "rate-limited",
            ErrorCode::BadChat => "bad-chat",
            ErrorCode::BadResume => "bad-resume",
            ErrorCode::BadSdp => "bad-sdp",
            ErrorCode::SfuUnavailable => "sfu-unavailable",
            ErrorCode::SfuFailed => "sfu-failed",
            ErrorCode::NotHost => "not-host",
            ErrorCode::RoomLocked => "room-locked",
            ErrorCode::PasswordRequired => "password-required",
            ErrorCode::BadPassword => "bad-password",
            ErrorCode::TooManyAttempts => "too-many-attempts",
            ErrorCode::LobbyFull => "lobby-full",
            ErrorCode::Denied => "denied",
            ErrorCode::Barred => "barred",
            ErrorCode::TokenRequired => "token-required",
            ErrorCode::BadToken => "bad-token",
            ErrorCode::NotAllowed => "not-allowed",
            ErrorCode::Held => "held",
            ErrorCode::ClusterUnavailable => "cluster-unavailable",
        }
    }
}

impl serde::Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// WebSocket close codes the server uses (RFC 6455 section 7.4.1), with
/// the reason text sent beside them.
pub mod close {
    /// Server shutting down, or a peer that stopped answering pings.
    pub const GOING_AWAY: u16 = 1001;
    /// A peer too slow to take its messages.
    pub const POLICY: u16 = 1008;
    /// A message over [`crate::MAX_MESSAGE_BYTES`].
    pub const TOO_BIG: u16 = 1009;

    /// Reason sent with [`GOING_AWAY`] on shutdown.
    pub const REASON_SHUTDOWN: &str = "server shutting down";
    /// Reason sent with [`GOING_AWAY`] when pings went unanswered.
    pub const REASON_TIMEOUT: &str = "ping timeout";
    /// Reason sent with [`POLICY`] when the outbound queue filled.
    pub const REASON_TOO_SLOW: &str = "too slow";
    /// Reason sent with [`TOO_BIG`].
    pub const REASON_TOO_BIG: &str = "message too big";
    /// Reason sent with [`POLICY`] when `hello` did not come in time.
    pub const REASON_NO_HELLO: &str = "no hello";
    /// Too many connections, in all or from one address.
    pub const TRY_AGAIN_LATER: u16 = 1013;
    /// Reason sent with [`TRY_AGAIN_LATER`] when the server is at capacity.
    pub const REASON_SERVER_FULL: &str = "server full";
    /// Reason sent with [`TRY_AGAIN_LATER`] when one address has too many.
    pub const REASON_ADDRESS_FULL: &str = "too many connections from your address";
    /// Cluster mode: the room now lives on another node (its home died or
    /// drained, or a message between nodes was lost): reconnect.
    pub const SERVICE_RESTART: u16 = 1012;
    /// Reason sent with [`SERVICE_RESTART`].
    pub const REASON_MOVED: &str = "room moved to another server";
    /// Another connection resumed this peer's id.
    pub const REPLACED: u16 = 4000;
    /// Reason sent with [`REPLACED`].
    pub const REASON_REPLACED: &str = "replaced by a newer connection";
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every code in [`ErrorCode::ALL`] is documented in docs/protocol.md,
    /// and every code documented there exists.
    #[test]
    fn error_codes_match_the_protocol_doc() {
        let doc = include_str!("../../../docs/protocol.md");
        let table = doc.split("## Error codes").nth(1).expect("protocol.md has an error code table");
        let table = table.split("\n## ").next().unwrap_or(table);
        let documented: Vec<&str> =
            table.lines().filter_map(|l| l.strip_prefix("| `")?.split('`').next()).collect();
        let ours: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(documented, ours);
    }
}
