//! Messages from the server to browsers, and their encoder.

use room::{
    Action, ChatEntry, ChatId, DisplayName, Grants, KnockEnd, LeaveReason, MediaState, Mode, PeerId,
    PeerInfo, RemoveReason, Role, Settings,
};
use serde::{Serialize, Serializer};

use crate::{ErrorCode, SdpKind, SfuSource};

/// One entry of an `sfu` offer's `tracks`: what the recipient receives on
/// one of the server's m-lines.
#[derive(Clone, PartialEq, Eq, Debug, Serialize)]
pub struct SfuTrack {
    /// The m-line's mid.
    pub mid: String,
    /// Whose track it is.
    #[serde(serialize_with = "peer_id")]
    pub peer: PeerId,
    /// Which of their sources.
    pub source: SfuSource,
}

/// `sfu.description` as sent.
#[derive(Debug, Serialize)]
pub struct WireDescription<'a> {
    #[serde(rename = "type")]
    kind: SdpKind,
    sdp: &'a str,
}

/// One entry of `joined.ice_servers`, shaped like the browser's
/// `RTCIceServer` so the client passes it on untouched.
#[derive(Clone, PartialEq, Eq, Debug, Serialize)]
pub struct IceServer {
    /// `stun:`, `turn:` or `turns:` URLs.
    pub urls: Vec<String>,
    /// TURN user name, if the server needs one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// TURN password, if the server needs one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// A message from the server. Relayed signals are not here: they are built
/// by [`encode_relay`] without re-reading their payload.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum ServerMsg<'a> {
    /// Answer to `hello`.
    Welcome {
        /// The version both sides now speak.
        version: u64,
        /// Server name and version, for people.
        server: &'a str,
    },
    /// Answer to `join`.
    Joined {
        /// Canonical room name.
        room: &'a str,
        /// The recipient's own id.
        #[serde(serialize_with = "peer_id")]
        you: PeerId,
        /// The recipient's own name, as accepted.
        name: &'a str,
        /// Most peers the room holds.
        capacity: usize,
        /// Whether a resume token gave the recipient its old id back.
        resumed: bool,
        /// The others in the room, oldest first, each with the recipient's
        /// role towards it.
        #[serde(serialize_with = "peers_with_roles")]
        peers: &'a [(PeerInfo, bool)],
        /// The room's recent chat, oldest first.
        #[serde(serialize_with = "chat_entries")]
        chat: &'a [ChatEntry],
        /// For `new RTCPeerConnection({iceServers})`.
        ice_servers: &'a [IceServer],
        /// A token to come back with after a dropped connection.
        resume: &'a str,
        /// How the room's media travels.
        #[serde(serialize_with = "room_mode")]
        mode: Mode,
        /// The recipient's role.
        #[serde(serialize_with = "wire_role")]
        role: Role,
        /// What the recipient may send.
        #[serde(serialize_with = "wire_grants")]
        grants: Grants,
        /// The room's settings.
        #[serde(serialize_with = "wire_settings")]
        settings: Settings,
        /// Who waits in the lobby (for hosts).
        #[serde(serialize_with = "wire_lobby", skip_serializing_if = "<[_]>::is_empty")]
        lobby: &'a [(PeerId, DisplayName)],
    },
    /// The recipient waits in `room`'s lobby.
    Waiting {
        /// The room.
        room: &'a str,
    },
    /// Someone waits in the lobby of the recipient's room (to hosts).
    Knock {
        /// Who.
        #[serde(serialize_with = "peer_id")]
        peer: PeerId,
        /// Its name.
        name: &'a str,
    },
    /// Someone no longer waits in the lobby (to hosts).
    KnockGone {
        /// Who.
        #[serde(serialize_with = "peer_id")]
        peer: PeerId,
        /// Why.
        #[serde(serialize_with = "knock_end")]
        reason: KnockEnd,
    },
    /// The room's settings.
    RoomSettings {
        /// No new joins.
        locked: bool,
        /// Newcomers wait.
        lobby: bool,
        /// A password is needed.
        password: bool,
    },
    /// A member's role changed.
    PeerRole {
        /// Whose.
        #[serde(serialize_with = "peer_id")]
        peer: PeerId,
        /// The role.
        #[serde(serialize_with = "wire_role")]
        role: Role,
    },
    /// A host acted on the recipient.
    Moderated {
        /// What it did.
        #[serde(serialize_with = "wire_action")]
        action: Action,
        /// The host.
        #[serde(serialize_with = "peer_id")]
        by: PeerId,
        /// What the recipient may not turn on now.
        #[serde(serialize_with = "media_state")]
        held: MediaState,
    },
    /// The recipient is no longer in its room.
    Removed {
        /// The room.
        room: &'a str,
        /// Why.
        #[serde(serialize_with = "remove_reason")]
        reason: RemoveReason,
        /// The host.
        #[serde(serialize_with = "peer_id")]
        by: PeerId,
    },
    /// The recipient's room switched how its media travels.
    RoomMode {
        /// The new mode.
        #[serde(serialize_with = "room_mode")]
        mode: Mode,
    },
    /// Which of the recipient's own layers of `source` anybody receives.
    SfuLayers {
        /// Which of its tracks.
        source: SfuSource,
        /// Layer indexes, 0 the lowest.
        active: &'a [u8],
    },
    /// The loudest person in the recipient's room changed.
    Speaker {
        /// Who speaks now.
        #[serde(serialize_with = "peer_id")]
        peer: PeerId,
    },
    /// An offer or answer for the recipient's session with the SFU.
    Sfu {
        /// The description.
        description: WireDescription<'a>,
        /// With an offer: everything the recipient receives, by mid.
        #[serde(skip_serializing_if = "Option::is_none")]
        tracks: Option<&'a [SfuTrack]>,
    },
    /// Someone entered the recipient's room.
    PeerJoined {
        /// The newcomer.
        #[serde(serialize_with = "peer_info")]
        peer: &'a PeerInfo,
        /// The recipient's role towards the newcomer.
        polite: bool,
    },
    /// Someone left the recipient's room.
    PeerLeft {
        /// Who.
        #[serde(serialize_with = "peer_id")]
        peer: PeerId,
        /// Why.
        #[serde(serialize_with = "leave_reason")]
        reason: LeaveReason,
    },
    /// A peer in the recipient's room changed its media state.
    PeerMedia {
        /// Who.
        #[serde(serialize_with = "peer_id")]
        peer: PeerId,
        /// Its new state.
        #[serde(serialize_with = "media_state")]
        media: MediaState,
    },
    /// A chat message in the recipient's room.
    Chat {
        /// The sender.
        #[serde(serialize_with = "peer_id")]
        from: PeerId,
        /// The sender's name.
        name: &'a str,
        /// What it said.
        text: &'a str,
        /// Server time, milliseconds since 1970.
        ts: u64,
        /// The sender's name for the message, if it gave one.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a str>,
    },
    /// Answer to `leave`.
    Left {
        /// The room left.
        room: &'a str,
    },
    /// Answer to `peek`: how full a room is.
    RoomState {
        /// The room, canonical.
        room: &'a str,
        /// How many are in it now.
        peers: usize,
        /// Most it holds.
        capacity: usize,
        /// Who is in it: the first few names, in join order.
        names: &'a [&'a str],
        /// What its hosts set (all off for a room nobody is in).
        #[serde(serialize_with = "wire_settings")]
        settings: Settings,
    },
    /// Answer to `ping`.
    Pong {
        /// A fresh resume token, while in a room.
        #[serde(skip_serializing_if = "Option::is_none")]
        resume: Option<&'a str>,
    },
    /// A refused message.
    Error {
        /// Stable code.
        code: ErrorCode,
        /// Words for people.
        message: &'a str,
        /// `type` of the refused message, if known.
        #[serde(skip_serializing_if = "Option::is_none")]
        request: Option<&'a str>,
    },
}

/// Encodes a server message as JSON text.
pub fn encode(msg: &ServerMsg<'_>) -> String {
    // Every field is a string, number, bool or list of those: serializing
    // them into a String cannot fail.
    serde_json::to_string(msg).expect("server messages always serialize")
}

/// Encodes `signal {from, data}`. `data` must be well-formed JSON, which it
/// is when it comes from a parsed [`crate::ClientMsg::Signal`]; it is copied
/// as it is, never re-parsed.
pub fn encode_relay(from: PeerId, data: &str) -> String {
    const HEAD: &str = r#"{"type":"signal","from":""#;
    const MID: &str = r#"","data":"#;
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(HEAD.len() + 16 + MID.len() + data.len() + 1);
    out.push_str(HEAD);
    // The id as 16 lowercase hex digits (as PeerId's Display writes it,
    // without the formatting machinery: this runs for every signal).
    for shift in (0..16).rev() {
        out.push(char::from(HEX[((from.0 >> (shift * 4)) & 0xf) as usize]));
    }
    out.push_str(MID);
    out.push_str(data);
    out.push('}');
    out
}

impl<'a> ServerMsg<'a> {
    /// An `sfu` message carrying `sdp`.
    pub fn sfu(kind: SdpKind, sdp: &'a str, tracks: Option<&'a [SfuTrack]>) -> Self {
        ServerMsg::Sfu { description: WireDescription { kind, sdp }, tracks }
    }
}

fn room_mode<S: Serializer>(m: &Mode, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(match m {
        Mode::P2p => "p2p",
        Mode::Sfu => "sfu",
    })
}

fn peer_id<S: Serializer>(id: &PeerId, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(id)
}

fn media_state<S: Serializer>(m: &MediaState, s: S) -> Result<S::Ok, S::Error> {
    WireMedia { audio: m.audio, video: m.video, screen: m.screen }.serialize(s)
}

#[derive(Serialize)]
struct WireMedia {
    audio: bool,
    video: bool,
    screen: bool,
}

#[derive(Serialize)]
struct WirePeer<'a> {
    #[serde(serialize_with = "peer_id")]
    id: PeerId,
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    polite: Option<bool>,
    #[serde(serialize_with = "media_state")]
    media: MediaState,
    #[serde(serialize_with = "wire_role")]
    role: Role,
}

fn peer_info<S: Serializer>(p: &&PeerInfo, s: S) -> Result<S::Ok, S::Error> {
    WirePeer { id: p.id, name: p.name.as_str(), polite: None, media: p.media, role: p.role }.serialize(s)
}

fn peers_with_roles<S: Serializer>(peers: &&[(PeerInfo, bool)], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(peers.iter().map(|(p, polite)| WirePeer {
        id: p.id,
        name: p.name.as_str(),
        polite: Some(*polite),
        media: p.media,
        role: p.role,
    }))
}

fn wire_role<S: Serializer>(r: &Role, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(match r {
        Role::Host => "host",
        Role::Guest => "guest",
    })
}

fn wire_grants<S: Serializer>(g: &Grants, s: S) -> Result<S::Ok, S::Error> {
    #[derive(Serialize)]
    struct Wire {
        publish: bool,
        screen: bool,
        chat: bool,
    }
    Wire { publish: g.publish, screen: g.screen, chat: g.chat }.serialize(s)
}

fn wire_settings<S: Serializer>(x: &Settings, s: S) -> Result<S::Ok, S::Error> {
    #[derive(Serialize)]
    struct Wire {
        locked: bool,
        lobby: bool,
        password: bool,
    }
    Wire { locked: x.locked, lobby: x.lobby, password: x.password }.serialize(s)
}

fn wire_lobby<S: Serializer>(l: &&[(PeerId, DisplayName)], s: S) -> Result<S::Ok, S::Error> {
    #[derive(Serialize)]
    struct Wire<'a> {
        #[serde(serialize_with = "peer_id")]
        peer: PeerId,
        name: &'a str,
    }
    s.collect_seq(l.iter().map(|(peer, name)| Wire { peer: *peer, name: name.as_str() }))
}

fn knock_end<S: Serializer>(r: &KnockEnd, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(match r {
        KnockEnd::Admitted => "admitted",
        KnockEnd::Denied => "denied",
        KnockEnd::Left => "left",
    })
}

fn wire_action<S: Serializer>(a: &Action, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(match a {
        Action::Mute => "mute",
        Action::StopVideo => "stop-video",
        Action::StopScreen => "stop-screen",
        Action::AskUnmute => "ask-unmute",
        Action::MakeHost => "make-host",
        Action::Remove { .. } => "remove",
    })
}

fn remove_reason<S: Serializer>(r: &RemoveReason, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(match r {
        RemoveReason::Removed => "removed",
        RemoveReason::Ended => "ended",
    })
}

#[derive(Serialize)]
struct WireChat<'a> {
    #[serde(serialize_with = "peer_id")]
    from: PeerId,
    name: &'a str,
    text: &'a str,
    ts: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
}

fn chat_entries<S: Serializer>(chat: &&[ChatEntry], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(chat.iter().map(|e| WireChat {
        from: e.from,
        name: e.name.as_str(),
        text: e.text.as_str(),
        ts: e.ts_ms,
        id: e.id.as_ref().map(ChatId::as_str),
    }))
}

fn leave_reason<S: Serializer>(r: &LeaveReason, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(match r {
        LeaveReason::Left => "left",
        LeaveReason::Disconnected => "disconnected",
        LeaveReason::Removed => "removed",
    })
}

#[cfg(test)]
mod tests {
    use room::{ChatText, DisplayName};
    use serde_json::value::RawValue;

    use super::*;

    fn name(s: &str) -> DisplayName {
        DisplayName::parse(s).expect("valid name")
    }

    #[test]
    fn encodes_every_message_as_documented() {
        let joon = PeerInfo {
            id: PeerId(0xa),
            name: name("Joon \"J\""),
            media: MediaState { audio: true, video: false, screen: false },
            role: Role::Guest,
        };
        let peers = [(joon.clone(), true)];
        let lobby = [(PeerId(0xc), name("Ara"))];
        let chat = [
            ChatEntry {
                from: PeerId(0xa),
                name: name("Joon"),
                text: ChatText::parse("<b>hi</b>").expect("valid"),
                ts_ms: 1_764_111_111_000,
                id: None,
            },
            ChatEntry {
                from: PeerId(0xa),
                name: name("Joon"),
                text: ChatText::parse("again").expect("valid"),
                ts_ms: 1_764_111_112_000,
                id: Some(ChatId::parse("m-1").expect("valid")),
            },
        ];
        let tracks = [SfuTrack { mid: "3".into(), peer: PeerId(0xa), source: SfuSource::Camera }];
        let stun =
            [IceServer { urls: vec!["stun:example.org:3478".into()], username: None, credential: None }];
        let cases = [
            (
                ServerMsg::Welcome { version: 2, server: "webconf 0.1.0" },
                r#"{"type":"welcome","version":2,"server":"webconf 0.1.0"}"#,
            ),
            (
                ServerMsg::Joined {
                    room: "tea",
                    you: PeerId(0x3f9a_0c21_d4e5_b678),
                    name: "Minji",
                    capacity: 2,
                    resumed: false,
                    peers: &peers,
                    chat: &chat,
                    ice_servers: &stun,
                    resume: "tok",
                    mode: Mode::P2p,
                    role: Role::Host,
                    grants: Grants { publish: true, screen: false, chat: true },
                    settings: Settings { locked: false, lobby: true, password: true },
                    lobby: &lobby,
                },
                r#"{"type":"joined","room":"tea","you":"3f9a0c21d4e5b678","name":"Minji","capacity":2,"resumed":false,"peers":[{"id":"000000000000000a","name":"Joon \"J\"","polite":true,"media":{"audio":true,"video":false,"screen":false},"role":"guest"}],"chat":[{"from":"000000000000000a","name":"Joon","text":"<b>hi</b>","ts":1764111111000},{"from":"000000000000000a","name":"Joon","text":"again","ts":1764111112000,"id":"m-1"}],"ice_servers":[{"urls":["stun:example.org:3478"]}],"resume":"tok","mode":"p2p","role":"host","grants":{"publish":true,"screen":false,"chat":true},"settings":{"locked":false,"lobby":true,"password":true},"lobby":[{"peer":"000000000000000c","name":"Ara"}]}"#,
            ),
            (ServerMsg::RoomMode { mode: Mode::Sfu }, r#"{"type":"room-mode","mode":"sfu"}"#),
            (
                ServerMsg::SfuLayers { source: SfuSource::Camera, active: &[0, 2] },
                r#"{"type":"sfu-layers","source":"camera","active":[0,2]}"#,
            ),
            (ServerMsg::Speaker { peer: PeerId(0xa) }, r#"{"type":"speaker","peer":"000000000000000a"}"#),
            (
                ServerMsg::sfu(SdpKind::Answer, "v=0", None),
                r#"{"type":"sfu","description":{"type":"answer","sdp":"v=0"}}"#,
            ),
            (
                ServerMsg::sfu(SdpKind::Offer, "v=0", Some(&tracks)),
                r#"{"type":"sfu","description":{"type":"offer","sdp":"v=0"},"tracks":[{"mid":"3","peer":"000000000000000a","source":"camera"}]}"#,
            ),
            (
                ServerMsg::PeerJoined { peer: &joon, polite: false },
                r#"{"type":"peer-joined","peer":{"id":"000000000000000a","name":"Joon \"J\"","media":{"audio":true,"video":false,"screen":false},"role":"guest"},"polite":false}"#,
            ),
            (
                ServerMsg::PeerMedia {
                    peer: PeerId(0xa),
                    media: MediaState { audio: false, video: true, screen: true },
                },
                r#"{"type":"peer-media","peer":"000000000000000a","media":{"audio":false,"video":true,"screen":true}}"#,
            ),
            (
                ServerMsg::Chat {
                    from: PeerId(0xa),
                    name: "Joon",
                    text: "<script>x</script>",
                    ts: 5,
                    id: None,
                },
                r#"{"type":"chat","from":"000000000000000a","name":"Joon","text":"<script>x</script>","ts":5}"#,
            ),
            (
                ServerMsg::Chat { from: PeerId(0xa), name: "Joon", text: "hi", ts: 5, id: Some("m-1") },
                r#"{"type":"chat","from":"000000000000000a","name":"Joon","text":"hi","ts":5,"id":"m-1"}"#,
            ),
            (ServerMsg::Pong { resume: Some("tok") }, r#"{"type":"pong","resume":"tok"}"#),
            (
                ServerMsg::PeerLeft { peer: PeerId(1), reason: LeaveReason::Disconnected },
                r#"{"type":"peer-left","peer":"0000000000000001","reason":"disconnected"}"#,
            ),
            (ServerMsg::Left { room: "tea" }, r#"{"type":"left","room":"tea"}"#),
            (ServerMsg::Waiting { room: "tea" }, r#"{"type":"waiting","room":"tea"}"#),
            (
                ServerMsg::Knock { peer: PeerId(0xc), name: "Ara" },
                r#"{"type":"knock","peer":"000000000000000c","name":"Ara"}"#,
            ),
            (
                ServerMsg::KnockGone { peer: PeerId(0xc), reason: KnockEnd::Admitted },
                r#"{"type":"knock-gone","peer":"000000000000000c","reason":"admitted"}"#,
            ),
            (
                ServerMsg::RoomSettings { locked: true, lobby: false, password: false },
                r#"{"type":"room-settings","locked":true,"lobby":false,"password":false}"#,
            ),
            (
                ServerMsg::PeerRole { peer: PeerId(0xa), role: Role::Host },
                r#"{"type":"peer-role","peer":"000000000000000a","role":"host"}"#,
            ),
            (
                ServerMsg::Moderated {
                    action: Action::Mute,
                    by: PeerId(1),
                    held: MediaState { audio: true, video: false, screen: false },
                },
                r#"{"type":"moderated","action":"mute","by":"0000000000000001","held":{"audio":true,"video":false,"screen":false}}"#,
            ),
            (
                ServerMsg::Removed { room: "tea", reason: RemoveReason::Ended, by: PeerId(1) },
                r#"{"type":"removed","room":"tea","reason":"ended","by":"0000000000000001"}"#,
            ),
            (
                ServerMsg::PeerLeft { peer: PeerId(1), reason: LeaveReason::Removed },
                r#"{"type":"peer-left","peer":"0000000000000001","reason":"removed"}"#,
            ),
            (ServerMsg::Pong { resume: None }, r#"{"type":"pong"}"#),
            (
                ServerMsg::RoomState {
                    room: "tea",
                    peers: 2,
                    capacity: 2,
                    names: &["Joon", "Ara \"A\""],
                    settings: Settings { locked: true, lobby: false, password: true },
                },
                r#"{"type":"room-state","room":"tea","peers":2,"capacity":2,"names":["Joon","Ara \"A\""],"settings":{"locked":true,"lobby":false,"password":true}}"#,
            ),
            (
                ServerMsg::Error { code: ErrorCode::RoomFull, message: "full", request: Some("join") },
                r#"{"type":"error","code":"room-full","message":"full","request":"join"}"#,
            ),
            (
                ServerMsg::Error { code: ErrorCode::BadJson, message: "<x>", request: None },
                r#"{"type":"error","code":"bad-json","message":"<x>"}"#,
            ),
        ];
        for (msg, expect) in cases {
            assert_eq!(encode(&msg), expect);
        }
    }

    /// Found by fuzzing (fuzz/fuzz_targets/signal_parse.rs): payloads that
    /// JSON's grammar allows but a strict parser refuses are relayed as they
    /// are. Browsers' JSON.parse accepts both.
    #[test]
    fn relay_keeps_payloads_strict_parsers_refuse() {
        for data in [r#"{"n":777777777777777e7777777777777777777777}"#, r#"{"s":"\uDDD9a\uD9e8"}"#] {
            let frame = format!(r#"{{"type":"signal","to":"00000000000000ff","data":{data}}}"#);
            let Ok(crate::ClientMsg::Signal { data: raw, .. }) = crate::parse(&frame) else {
                panic!("{frame}")
            };
            assert_eq!(raw.get(), data);
            let out = encode_relay(PeerId(1), raw.get());
            assert!(serde_json::from_str::<serde_json::Value>(&out).is_err(), "a strict parser refuses it");
            let back: std::collections::BTreeMap<String, &RawValue> =
                serde_json::from_str(&out).expect("well-formed");
            assert_eq!(back["data"].get(), data);
        }
    }

    #[test]
    fn relay_copies_data_verbatim_and_is_valid_json() {
        let data = r#"{"candidate":"a=candidate:1 1 udp 1 127.0.0.1 5000 typ host","n":[1.50,"\u00e9"]}"#;
        let out = encode_relay(PeerId(0xff), data);
        assert_eq!(out, format!(r#"{{"type":"signal","from":"00000000000000ff","data":{data}}}"#));
        let id = PeerId(0x0123_4567_89ab_cdef);
        assert!(encode_relay(id, "1").contains(&format!(r#""from":"{id}""#)));
        let back: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&out).expect("valid JSON");
        assert_eq!(back["from"], "00000000000000ff");
        let raw: &RawValue = serde_json::from_str(data).expect("valid");
        assert_eq!(back["data"], serde_json::from_str::<serde_json::Value>(raw.get()).expect("valid"));
    }
}
