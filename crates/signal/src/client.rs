//! Messages from browsers to the server, and their parser.

use std::borrow::Cow;
use std::fmt;

use room::{Action, ChatId, ChatText, DisplayName, MediaState, PeerId, RoomId};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::ErrorCode;
use crate::json::RawJson;

/// A message from a client, validated: names are checked newtypes, and a
/// signal's payload is known to be well-formed JSON.
#[derive(Debug)]
pub enum ClientMsg<'a> {
    /// `hello {version}`: must come first.
    Hello {
        /// The version the client speaks.
        version: u64,
    },
    /// `join {room, name, media, resume}`.
    Join {
        /// The canonical room name.
        room: RoomId,
        /// The display name, [`DisplayName::guest`] if none was given.
        name: DisplayName,
        /// Media state to start with (default: microphone and camera on).
        media: MediaState,
        /// A resume token, unchecked: only the server's secret can check it.
        resume: Option<Cow<'a, str>>,
        /// A join token, unchecked (see docs/tokens.md).
        token: Option<Cow<'a, str>>,
        /// The room password given, 1 to [`MAX_PASSWORD`] characters.
        password: Option<Cow<'a, str>>,
        /// The page created the room (home page): host if it is new.
        create: bool,
    },
    /// `admit {peer}` (hosts).
    Admit {
        /// Who waits.
        peer: PeerId,
    },
    /// `deny {peer}` (hosts).
    Deny {
        /// Who waits.
        peer: PeerId,
    },
    /// `room-settings {locked, lobby, password}` (hosts): each field that
    /// is present changes.
    RoomSettings {
        /// Lock or unlock.
        locked: Option<bool>,
        /// Lobby on or off.
        lobby: Option<bool>,
        /// A new password (`Some("")`: none).
        password: Option<Cow<'a, str>>,
    },
    /// `moderate {peer, action, bar}` (hosts).
    Moderate {
        /// On whom.
        peer: PeerId,
        /// What.
        action: Action,
    },
    /// `end-call {}` (hosts).
    EndCall,
    /// `signal {to, data}`.
    Signal {
        /// The addressee.
        to: PeerId,
        /// The payload, untouched, borrowed from the frame.
        data: RawJson<'a>,
    },
    /// `chat {text, id}`.
    Chat {
        /// The message.
        text: ChatText,
        /// The sender's name for it, if it gave one.
        id: Option<ChatId>,
    },
    /// `media {audio, video, screen}`: each field that is present changes.
    Media {
        /// Microphone on or off.
        audio: Option<bool>,
        /// Camera on or off.
        video: Option<bool>,
        /// Screen share on or off.
        screen: Option<bool>,
    },
    /// `sfu {description, sources}`: an offer or answer for the client's
    /// session with the SFU.
    Sfu {
        /// Offer or answer.
        kind: SdpKind,
        /// The session description, unchecked (str0m parses it).
        sdp: Cow<'a, str>,
        /// With an offer: what the client sends on each m-line, by mid.
        sources: Vec<(String, SfuSource)>,
    },
    /// `sfu-layout {tiles}`: the height the client shows each peer at.
    SfuLayout {
        /// Peer and height in CSS pixels (0: not shown).
        tiles: Vec<(PeerId, u32)>,
    },
    /// `peek {room}`: how full a room is, without joining it.
    Peek {
        /// The canonical room name.
        room: RoomId,
    },
    /// `leave {}`.
    Leave,
    /// `ping {}`.
    Ping,
}

impl ClientMsg<'_> {
    /// The message's `type` on the wire.
    pub fn kind(&self) -> &'static str {
        match self {
            ClientMsg::Hello { .. } => "hello",
            ClientMsg::Join { .. } => "join",
            ClientMsg::Signal { .. } => "signal",
            ClientMsg::Chat { .. } => "chat",
            ClientMsg::Media { .. } => "media",
            ClientMsg::Sfu { .. } => "sfu",
            ClientMsg::SfuLayout { .. } => "sfu-layout",
            ClientMsg::Peek { .. } => "peek",
            ClientMsg::Admit { .. } => "admit",
            ClientMsg::Deny { .. } => "deny",
            ClientMsg::RoomSettings { .. } => "room-settings",
            ClientMsg::Moderate { .. } => "moderate",
            ClientMsg::EndCall => "end-call",
            ClientMsg::Leave => "leave",
            ClientMsg::Ping => "ping",
        }
    }
}

/// Which side of an exchange a session description is.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SdpKind {
    /// An offer.
    Offer,
    /// An answer.
    Answer,
}

/// What a track of an SFU session carries.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SfuSource {
    /// The microphone.
    Audio,
    /// The camera.
    Camera,
    /// A screen share.
    Screen,
}

/// The most m-lines an `sfu` offer may name in `sources`.
const MAX_SOURCES: usize = 3;

/// The longest room password, in characters.
pub const MAX_PASSWORD: usize = 128;

/// The longest join token, in bytes.
pub const MAX_TOKEN: usize = 2048;

/// The most tiles one `sfu-layout` may list.
const MAX_TILES: usize = 100;

/// One `sfu-layout` tile.
#[derive(Deserialize)]
struct Tile<'a> {
    #[serde(borrow)]
    peer: Cow<'a, str>,
    height: u32,
}

/// A message the server refuses, with what to answer.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ProtocolError {
    /// The stable code.
    pub code: ErrorCode,
    /// Words for people.
    pub message: String,
    /// The `type` of the refused message, when it was one we know.
    pub request: Option<&'static str>,
}

impl ProtocolError {
    /// An error about a message of type `request`.
    pub fn new(code: ErrorCode, request: Option<&'static str>, message: impl Into<String>) -> Self {
        ProtocolError { code, message: message.into(), request }
    }
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.message)
    }
}

impl std::error::Error for ProtocolError {}

/// Every field any message has, each kept raw: the envelope is read in one
/// pass, and each message then reads only its own fields, so an error can
/// name the field and the message it belongs to. (serde's internally tagged
/// enums cannot hold borrowed `RawValue`s, which is why this is not one.)
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<&'a RawValue>,
    #[serde(borrow)]
    version: Option<&'a RawValue>,
    #[serde(borrow)]
    room: Option<&'a RawValue>,
    #[serde(borrow)]
    name: Option<&'a RawValue>,
    #[serde(borrow)]
    to: Option<&'a RawValue>,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
    #[serde(borrow)]
    media: Option<&'a RawValue>,
    #[serde(borrow)]
    resume: Option<&'a RawValue>,
    #[serde(borrow)]
    text: Option<&'a RawValue>,
    #[serde(borrow)]
    audio: Option<&'a RawValue>,
    #[serde(borrow)]
    video: Option<&'a RawValue>,
    #[serde(borrow)]
    screen: Option<&'a RawValue>,
    #[serde(borrow)]
    description: Option<&'a RawValue>,
    #[serde(borrow)]
    sources: Option<&'a RawValue>,
    #[serde(borrow)]
    tiles: Option<&'a RawValue>,
    #[serde(borrow)]
    id: Option<&'a RawValue>,
    #[serde(borrow)]
    token: Option<&'a RawValue>,
    #[serde(borrow)]
    password: Option<&'a RawValue>,
    #[serde(borrow)]
    create: Option<&'a RawValue>,
    #[serde(borrow)]
    peer: Option<&'a RawValue>,
    #[serde(borrow)]
    action: Option<&'a RawValue>,
    #[serde(borrow)]
    bar: Option<&'a RawValue>,
    #[serde(borrow)]
    locked: Option<&'a RawValue>,
    #[serde(borrow)]
    lobby: Option<&'a RawValue>,
}

/// `sfu.description`.
#[derive(Deserialize)]
struct Description<'a> {
    #[serde(rename = "type")]
    kind: SdpKind,
    #[serde(borrow)]
    sdp: Cow<'a, str>,
}

/// `media` as `join` carries it: every field optional.
#[derive(Deserialize)]
struct MediaFields {
    audio: Option<bool>,
    video: Option<bool>,
    screen: Option<bool>,
}

/// Parses one text frame.
pub fn parse(text: &str) -> Result<ClientMsg<'_>, ProtocolError> {
    if let Some(msg) = parse_signal_fast(text) {
        return Ok(msg);
    }
    parse_any(text)
}

/// The one message sent many times a second in a call, in the exact form
/// browsers send it (`JSON.stringify({type, to, data})`): read without the
/// general machinery. Anything else, or anything this does not accept, goes
/// the general way, which gives the same answer for every input this
/// accepts (`data` must still be one well-formed JSON value).
fn parse_signal_fast(text: &str) -> Option<ClientMsg<'_>> {
    let rest = text.strip_prefix(r#"{"type":"signal","to":""#)?;
    let to = PeerId::parse(rest.get(..16)?)?;
    let value = rest.get(16..)?.strip_prefix(r#"","data":"#)?.strip_suffix('}')?;
    let data = crate::json::compact(value)?;
    if data.get() == "null" {
        return None;
    }
    Some(ClientMsg::Signal { to, data })
}

/// [`parse`] without its fast path, for checking that both agree (tests and
/// the fuzz target); use [`parse`].
#[doc(hidden)]
pub fn parse_general(text: &str) -> Result<ClientMsg<'_>, ProtocolError> {
    parse_any(text)
}

fn parse_any(text: &str) -> Result<ClientMsg<'_>, ProtocolError> {
    let env: Envelope<'_> = serde_json::from_str(text).map_err(|e| {
        if e.is_data() {
            ProtocolError::new(ErrorCode::BadMessage, None, "a message must be a JSON object with a \"type\"")
        } else {
            ProtocolError::new(ErrorCode::BadJson, None, format!("not valid JSON: {e}"))
        }
    })?;
    let kind = env.kind.ok_or_else(|| {
        ProtocolError::new(ErrorCode::BadMessage, None, "a message needs a string field \"type\"")
    })?;
    let kind = string(kind).ok_or_else(|| {
        ProtocolError::new(ErrorCode::BadMessage, None, "the field \"type\" must be a string")
    })?;
    match &*kind {
        "hello" => {
            let version = required(env.version, "hello", "version")?;
            let version = serde_json::from_str::<u64>(version.get())
                .map_err(|_| mistyped("hello", "version", "a non-negative integer"))?;
            Ok(ClientMsg::Hello { version })
        }
        "join" => {
            let room = required(env.room, "join", "room")?;
            let room = string(room).ok_or_else(|| mistyped("join", "room", "a string"))?;
            let room = RoomId::parse(&room).map_err(|e| {
                ProtocolError::new(ErrorCode::BadRoom, Some("join"), format!("the room name {e}"))
            })?;
            let name = match env.name {
                None => DisplayName::guest(),
                Some(raw) if raw.get() == "null" => DisplayName::guest(),
                Some(raw) => {
                    let name = string(raw).ok_or_else(|| mistyped("join", "name", "a string"))?;
                    DisplayName::parse(&name).map_err(|e| {
                        ProtocolError::new(ErrorCode::BadName, Some("join"), format!("the name {e}"))
                    })?
                }
            };
            let media = match env.media {
                None => MediaState::default(),
                Some(raw) => {
                    let m: MediaFields = serde_json::from_str(raw.get()).map_err(|_| {
                        mistyped("join", "media", "an object of booleans audio, video, screen")
                    })?;
                    let d = MediaState::default();
                    MediaState {
                        audio: m.audio.unwrap_or(d.audio),
                        video: m.video.unwrap_or(d.video),
                        screen: m.screen.unwrap_or(d.screen),
                    }
                }
            };
            let resume = match env.resume {
                None => None,
                Some(raw) if raw.get() == "null" => None,
                Some(raw) => Some(string(raw).ok_or_else(|| mistyped("join", "resume", "a string"))?),
            };
            let token = optional_string(env.token, "join", "token")?;
            if token.as_ref().is_some_and(|t| t.len() > MAX_TOKEN) {
                return Err(ProtocolError::new(
                    ErrorCode::BadToken,
                    Some("join"),
                    format!("a join token is at most {MAX_TOKEN} bytes"),
                ));
            }
            let password = optional_string(env.password, "join", "password")?;
            if let Some(p) = &password {
                check_password(p, "join")?;
            }
            let create = optional_bool(env.create, "join", "create")?.unwrap_or(false);
            Ok(ClientMsg::Join { room, name, media, resume, token, password, create })
        }
        "admit" | "deny" => {
            let kind: &'static str = if &*kind == "admit" { "admit" } else { "deny" };
            let peer = peer_field(env.peer, kind)?;
            Ok(if kind == "admit" { ClientMsg::Admit { peer } } else { ClientMsg::Deny { peer } })
        }
        "room-settings" => {
            let password = optional_string(env.password, "room-settings", "password")?;
            if let Some(p) = password.as_ref().filter(|p| !p.is_empty()) {
                check_password(p, "room-settings")?;
            }
            Ok(ClientMsg::RoomSettings {
                locked: optional_bool(env.locked, "room-settings", "locked")?,
                lobby: optional_bool(env.lobby, "room-settings", "lobby")?,
                password,
            })
        }
        "moderate" => {
            let peer = peer_field(env.peer, "moderate")?;
            let action = required(env.action, "moderate", "action")?;
            let action = string(action).ok_or_else(|| mistyped("moderate", "action", "a string"))?;
            let bar = optional_bool(env.bar, "moderate", "bar")?.unwrap_or(false);
            let action = match &*action {
                "mute" => Action::Mute,
                "stop-video" => Action::StopVideo,
                "stop-screen" => Action::StopScreen,
                "ask-unmute" => Action::AskUnmute,
                "make-host" => Action::MakeHost,
                "remove" => Action::Remove { bar },
                _ => {
                    return Err(mistyped(
                        "moderate",
                        "action",
                        "one of mute, stop-video, stop-screen, ask-unmute, make-host, remove",
                    ));
                }
            };
            Ok(ClientMsg::Moderate { peer, action })
        }
        "end-call" => Ok(ClientMsg::EndCall),
        "chat" => {
            let text = required(env.text, "chat", "text")?;
            let text = string(text).ok_or_else(|| mistyped("chat", "text", "a string"))?;
            let text = ChatText::parse(&text).map_err(|e| {
                ProtocolError::new(ErrorCode::BadChat, Some("chat"), format!("the message {e}"))
            })?;
            let id = match env.id {
                None => None,
                Some(raw) if raw.get() == "null" => None,
                Some(raw) => {
                    let id = string(raw).ok_or_else(|| mistyped("chat", "id", "a string"))?;
                    Some(ChatId::parse(&id).map_err(|e| {
                        ProtocolError::new(ErrorCode::BadChat, Some("chat"), format!("the message id {e}"))
                    })?)
                }
            };
            Ok(ClientMsg::Chat { text, id })
        }
        "media" => {
            let flag = |raw: Option<&RawValue>, name: &str| match raw {
                None => Ok(None),
                Some(raw) => serde_json::from_str::<bool>(raw.get())
                    .map(Some)
                    .map_err(|_| mistyped("media", name, "true or false")),
            };
            Ok(ClientMsg::Media {
                audio: flag(env.audio, "audio")?,
                video: flag(env.video, "video")?,
                screen: flag(env.screen, "screen")?,
            })
        }
        "signal" => {
            let to = required(env.to, "signal", "to")?;
            let to = string(to).ok_or_else(|| mistyped("signal", "to", "a peer id string"))?;
            // An id that cannot exist names nobody in the room: same answer
            // as a well-formed id of a peer elsewhere.
            let to = PeerId::parse(&to).ok_or_else(|| {
                ProtocolError::new(ErrorCode::UnknownPeer, Some("signal"), "no such peer in your room")
            })?;
            let data = required(env.data, "signal", "data")?;
            Ok(ClientMsg::Signal { to, data: RawJson::checked(data.get()) })
        }
        "sfu" => {
            let description = required(env.description, "sfu", "description")?;
            let Description { kind, sdp } = serde_json::from_str(description.get()).map_err(|_| {
                mistyped("sfu", "description", "an object with \"type\" offer or answer and a string \"sdp\"")
            })?;
            let sources = match env.sources {
                None => Vec::new(),
                Some(raw) if raw.get() == "null" => Vec::new(),
                Some(raw) => {
                    let map: std::collections::BTreeMap<String, SfuSource> = serde_json::from_str(raw.get())
                        .map_err(|_| {
                            mistyped("sfu", "sources", "an object of mid to audio, camera or screen")
                        })?;
                    if map.len() > MAX_SOURCES {
                        return Err(ProtocolError::new(
                            ErrorCode::BadSdp,
                            Some("sfu"),
                            format!("at most {MAX_SOURCES} sources: audio, camera, screen"),
                        ));
                    }
                    map.into_iter().collect()
                }
            };
            Ok(ClientMsg::Sfu { kind, sdp, sources })
        }
        "sfu-layout" => {
            let raw = required(env.tiles, "sfu-layout", "tiles")?;
            let bad = || mistyped("sfu-layout", "tiles", "a list of {peer, height}");
            let list: Vec<Tile<'_>> = serde_json::from_str(raw.get()).map_err(|_| bad())?;
            if list.len() > MAX_TILES {
                return Err(ProtocolError::new(
                    ErrorCode::BadMessage,
                    Some("sfu-layout"),
                    format!("at most {MAX_TILES} tiles"),
                ));
            }
            // Tiles of ids that cannot exist name nobody: left out.
            let tiles = list.iter().filter_map(|t| Some((PeerId::parse(&t.peer)?, t.height))).collect();
            Ok(ClientMsg::SfuLayout { tiles })
        }
        "peek" => {
            let room = required(env.room, "peek", "room")?;
            let room = string(room).ok_or_else(|| mistyped("peek", "room", "a string"))?;
            let room = RoomId::parse(&room).map_err(|e| {
                ProtocolError::new(ErrorCode::BadRoom, Some("peek"), format!("the room name {e}"))
            })?;
            Ok(ClientMsg::Peek { room })
        }
        "leave" => Ok(ClientMsg::Leave),
        "ping" => Ok(ClientMsg::Ping),
        other => {
            let shown: String = other.chars().take(32).collect();
            Err(ProtocolError::new(ErrorCode::BadMessage, None, format!("unknown message type {shown:?}")))
        }
    }
}

/// An optional string field (`null` counts as absent).
fn optional_string<'a>(
    raw: Option<&'a RawValue>,
    kind: &'static str,
    name: &str,
) -> Result<Option<Cow<'a, str>>, ProtocolError> {
    match raw {
        None => Ok(None),
        Some(raw) if raw.get() == "null" => Ok(None),
        Some(raw) => Ok(Some(string(raw).ok_or_else(|| mistyped(kind, name, "a string"))?)),
    }
}

/// An optional boolean field (`null` counts as absent).
fn optional_bool(
    raw: Option<&RawValue>,
    kind: &'static str,
    name: &str,
) -> Result<Option<bool>, ProtocolError> {
    match raw {
        None => Ok(None),
        Some(raw) if raw.get() == "null" => Ok(None),
        Some(raw) => serde_json::from_str::<bool>(raw.get())
            .map(Some)
            .map_err(|_| mistyped(kind, name, "true or false")),
    }
}

/// The `peer` field of a host action: an id that cannot exist names
/// nobody, the same answer as a well-formed id of nobody.
fn peer_field(raw: Option<&RawValue>, kind: &'static str) -> Result<PeerId, ProtocolError> {
    let raw = required(raw, kind, "peer")?;
    let peer = string(raw).ok_or_else(|| mistyped(kind, "peer", "a peer id string"))?;
    PeerId::parse(&peer)
        .ok_or_else(|| ProtocolError::new(ErrorCode::UnknownPeer, Some(kind), "no such peer in your room"))
}

/// A room password: 1 to [`MAX_PASSWORD`] characters.
fn check_password(p: &str, kind: &'static str) -> Result<(), ProtocolError> {
    if p.is_empty() || p.chars().count() > MAX_PASSWORD {
        return Err(ProtocolError::new(
            ErrorCode::BadPassword,
            Some(kind),
            format!("a room password has 1 to {MAX_PASSWORD} characters"),
        ));
    }
    Ok(())
}

/// A JSON string's value, borrowed when it has no escapes.
fn string(raw: &RawValue) -> Option<Cow<'_, str>> {
    match serde_json::from_str::<&str>(raw.get()) {
        Ok(s) => Some(Cow::Borrowed(s)),
        Err(_) => serde_json::from_str::<String>(raw.get()).ok().map(Cow::Owned),
    }
}

fn required<'a>(
    field: Option<&'a RawValue>,
    kind: &'static str,
    name: &str,
) -> Result<&'a RawValue, ProtocolError> {
    field.ok_or_else(|| {
        ProtocolError::new(ErrorCode::BadMessage, Some(kind), format!("{kind} needs a field \"{name}\""))
    })
}

fn mistyped(kind: &'static str, name: &str, what: &str) -> ProtocolError {
    ProtocolError::new(ErrorCode::BadMessage, Some(kind), format!("{kind}.{name} must be {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Renders a parse result on one line, so cases read as a table.
    fn show(text: &str) -> String {
        match parse(text) {
            Ok(ClientMsg::Hello { version }) => format!("hello v{version}"),
            Ok(ClientMsg::Join { room, name, media, resume, token, password, create }) => {
                let m = |on: bool, c: char| if on { c } else { '-' };
                let flags: String =
                    [m(media.audio, 'a'), m(media.video, 'v'), m(media.screen, 's')].iter().collect();
                let mut line = match resume {
                    Some(r) => format!("join {room} as {name} {flags} resume {r}"),
                    None => format!("join {room} as {name} {flags}"),
                };
                if let Some(t) = token {
                    line.push_str(&format!(" token {t}"));
                }
                if let Some(p) = password {
                    line.push_str(&format!(" password {p:?}"));
                }
                if create {
                    line.push_str(" create");
                }
                line
            }
            Ok(ClientMsg::Admit { peer }) => format!("admit {peer}"),
            Ok(ClientMsg::Deny { peer }) => format!("deny {peer}"),
            Ok(ClientMsg::RoomSettings { locked, lobby, password }) => {
                format!("room-settings {locked:?} {lobby:?} {password:?}")
            }
            Ok(ClientMsg::Moderate { peer, action }) => format!("moderate {peer} {action:?}"),
            Ok(ClientMsg::EndCall) => "end-call".to_owned(),
            Ok(ClientMsg::Chat { text, id: None }) => format!("chat {:?}", text.as_str()),
            Ok(ClientMsg::Chat { text, id: Some(id) }) => {
                format!("chat {:?} id {}", text.as_str(), id.as_str())
            }
            Ok(ClientMsg::Media { audio, video, screen }) => format!("media {audio:?} {video:?} {screen:?}"),
            Ok(ClientMsg::Signal { to, data }) => format!("signal to {to} data {}", data.get()),
            Ok(ClientMsg::Sfu { kind, sdp, sources }) => format!("sfu {kind:?} {sdp:?} {sources:?}"),
            Ok(ClientMsg::SfuLayout { tiles }) => {
                let tiles: Vec<String> = tiles.iter().map(|(p, h)| format!("{p}@{h}")).collect();
                format!("sfu-layout {}", tiles.join(" "))
            }
            Ok(ClientMsg::Peek { room }) => format!("peek {room}"),
            Ok(ClientMsg::Leave) => "leave".to_owned(),
            Ok(ClientMsg::Ping) => "ping".to_owned(),
            Err(e) => format!("error {} {:?}: {}", e.code.as_str(), e.request, e.message),
        }
    }

    #[test]
    fn parses_every_message_and_refuses_bad_ones() {
        let cases = [
            (r#"{"type":"hello","version":1}"#, "hello v1"),
            (r#"{"version":7,"type":"hello","extra":[1,2]}"#, "hello v7"),
            (
                r#"{"type":"hello","version":"1"}"#,
                "error bad-message Some(\"hello\"): hello.version must be a non-negative integer",
            ),
            (
                r#"{"type":"hello","version":-1}"#,
                "error bad-message Some(\"hello\"): hello.version must be a non-negative integer",
            ),
            (r#"{"type":"hello"}"#, "error bad-message Some(\"hello\"): hello needs a field \"version\""),
            (r#"{"type":"join","room":"Tea-Party","name":" Minji "}"#, "join tea-party as Minji av-"),
            (r#"{"type":"join","room":"tea"}"#, "join tea as Guest av-"),
            (
                r#"{"type":"join","room":"tea","create":true,"password":"blue kettle","token":"v1.a.b"}"#,
                "join tea as Guest av- token v1.a.b password \"blue kettle\" create",
            ),
            (
                r#"{"type":"join","room":"tea","password":""}"#,
                "error bad-password Some(\"join\"): a room password has 1 to 128 characters",
            ),
            (
                r#"{"type":"join","room":"tea","create":"yes"}"#,
                "error bad-message Some(\"join\"): join.create must be true or false",
            ),
            (r#"{"type":"admit","peer":"00000000000000ff"}"#, "admit 00000000000000ff"),
            (r#"{"type":"deny","peer":"00000000000000ff"}"#, "deny 00000000000000ff"),
            (
                r#"{"type":"deny","peer":"nobody"}"#,
                "error unknown-peer Some(\"deny\"): no such peer in your room",
            ),
            (r#"{"type":"room-settings","locked":true}"#, "room-settings Some(true) None None"),
            (
                r#"{"type":"room-settings","lobby":false,"password":""}"#,
                "room-settings None Some(false) Some(\"\")",
            ),
            (
                r#"{"type":"moderate","peer":"00000000000000ff","action":"remove","bar":true}"#,
                "moderate 00000000000000ff Remove { bar: true }",
            ),
            (
                r#"{"type":"moderate","peer":"00000000000000ff","action":"mute"}"#,
                "moderate 00000000000000ff Mute",
            ),
            (
                r#"{"type":"moderate","peer":"00000000000000ff","action":"unmute"}"#,
                "error bad-message Some(\"moderate\"): moderate.action must be one of mute, stop-video, stop-screen, ask-unmute, make-host, remove",
            ),
            (r#"{"type":"end-call"}"#, "end-call"),
            (r#"{"type":"join","room":"tea","name":null}"#, "join tea as Guest av-"),
            (r#"{"type":"join","room":"t\u0065a","name":"\uc548\ub155"}"#, "join tea as 안녕 av-"),
            (
                r#"{"type":"join","room":"a/b"}"#,
                "error bad-room Some(\"join\"): the room name contains the character '/'",
            ),
            (r#"{"type":"join","room":""}"#, "error bad-room Some(\"join\"): the room name is empty"),
            (r#"{"type":"peek","room":""}"#, "error bad-room Some(\"peek\"): the room name is empty"),
            (r#"{"type":"join","room":5}"#, "error bad-message Some(\"join\"): join.room must be a string"),
            (
                r#"{"type":"join","room":"tea","name":"  "}"#,
                "error bad-name Some(\"join\"): the name is empty",
            ),
            (
                r#"{"type":"join","room":"tea","name":"a\nb"}"#,
                "error bad-name Some(\"join\"): the name contains the character '\\n'",
            ),
            (
                r#"{"type":"signal","to":"00000000000000ff","data":{"sdp":"v=0\r\n"}}"#,
                r#"signal to 00000000000000ff data {"sdp":"v=0\r\n"}"#,
            ),
            (
                r#"{"type":"signal","to":"00000000000000ff","data":null}"#,
                "error bad-message Some(\"signal\"): signal needs a field \"data\"",
            ),
            (
                r#"{"type":"signal","to":"nobody","data":{}}"#,
                "error unknown-peer Some(\"signal\"): no such peer in your room",
            ),
            (
                r#"{"type":"signal","to":"00000000000000ff"}"#,
                "error bad-message Some(\"signal\"): signal needs a field \"data\"",
            ),
            (
                r#"{"type":"signal","data":{}}"#,
                "error bad-message Some(\"signal\"): signal needs a field \"to\"",
            ),
            (
                r#"{"type":"join","room":"r","media":{"video":false,"screen":true},"resume":"tok"}"#,
                "join r as Guest a-s resume tok",
            ),
            (
                r#"{"type":"join","room":"r","media":{"video":"off"}}"#,
                "error bad-message Some(\"join\"): join.media must be an object of booleans audio, video, screen",
            ),
            (
                r#"{"type":"join","room":"r","resume":7}"#,
                "error bad-message Some(\"join\"): join.resume must be a string",
            ),
            (r#"{"type":"chat","text":"<b>hi</b>\nthere"}"#, "chat \"<b>hi</b>\\nthere\""),
            (r#"{"type":"chat","text":"   "}"#, "error bad-chat Some(\"chat\"): the message is empty"),
            (
                r#"{"type":"chat","text":"\u0007"}"#,
                "error bad-chat Some(\"chat\"): the message contains the character '\\u{7}'",
            ),
            (r#"{"type":"chat"}"#, "error bad-message Some(\"chat\"): chat needs a field \"text\""),
            (r#"{"type":"chat","text":"hi","id":"q3Zt9x-_1"}"#, "chat \"hi\" id q3Zt9x-_1"),
            (r#"{"type":"chat","text":"hi","id":null}"#, "chat \"hi\""),
            (
                r#"{"type":"chat","text":"hi","id":7}"#,
                "error bad-message Some(\"chat\"): chat.id must be a string",
            ),
            (
                r#"{"type":"chat","text":"hi","id":"a b"}"#,
                "error bad-chat Some(\"chat\"): the message id contains the character ' '",
            ),
            (
                r#"{"type":"chat","text":"hi","id":""}"#,
                "error bad-chat Some(\"chat\"): the message id is empty",
            ),
            (r#"{"type":"media","audio":false}"#, "media Some(false) None None"),
            (
                r#"{"type":"media","video":1}"#,
                "error bad-message Some(\"media\"): media.video must be true or false",
            ),
            (r#"{"type":"leave"}"#, "leave"),
            (r#"{"type":"peek","room":"Tea-Party"}"#, "peek tea-party"),
            (r#"{"type":"peek"}"#, "error bad-message Some(\"peek\"): peek needs a field \"room\""),
            (r#"{"type":"peek","room":7}"#, "error bad-message Some(\"peek\"): peek.room must be a string"),
            (r#"{"type":"ping","seq":3}"#, "ping"),
            (r#"{"type":"PING"}"#, "error bad-message None: unknown message type \"PING\""),
            (
                r#"{"type":"sfu","description":{"type":"offer","sdp":"v=0\r\n"},"sources":{"0":"audio","1":"camera","2":"screen"}}"#,
                r#"sfu Offer "v=0\r\n" [("0", Audio), ("1", Camera), ("2", Screen)]"#,
            ),
            (r#"{"type":"sfu","description":{"type":"answer","sdp":""}}"#, r#"sfu Answer "" []"#),
            (r#"{"type":"sfu"}"#, "error bad-message Some(\"sfu\"): sfu needs a field \"description\""),
            (
                r#"{"type":"sfu","description":{"type":"pranswer","sdp":""}}"#,
                "error bad-message Some(\"sfu\"): sfu.description must be an object with \"type\" offer or answer and a string \"sdp\"",
            ),
            (
                r#"{"type":"sfu","description":{"type":"offer","sdp":""},"sources":{"0":"video"}}"#,
                "error bad-message Some(\"sfu\"): sfu.sources must be an object of mid to audio, camera or screen",
            ),
            (
                r#"{"type":"sfu","description":{"type":"offer","sdp":""},"sources":{"0":"audio","1":"audio","2":"audio","3":"audio"}}"#,
                "error bad-sdp Some(\"sfu\"): at most 3 sources: audio, camera, screen",
            ),
            (
                r#"{"type":"sfu-layout","tiles":[{"peer":"00000000000000ff","height":180},{"peer":"x","height":0}]}"#,
                "sfu-layout 00000000000000ff@180",
            ),
            (
                r#"{"type":"sfu-layout","tiles":[{"peer":"00000000000000ff","height":-1}]}"#,
                "error bad-message Some(\"sfu-layout\"): sfu-layout.tiles must be a list of {peer, height}",
            ),
            (r#"{"type":7}"#, "error bad-message None: the field \"type\" must be a string"),
            (r#"{"room":"tea"}"#, "error bad-message None: a message needs a string field \"type\""),
            (r#"[1,2]"#, "error bad-message None: a message must be a JSON object with a \"type\""),
            (r#""hello""#, "error bad-message None: a message must be a JSON object with a \"type\""),
            (
                r#"{"type":"ping","type":"leave"}"#,
                "error bad-message None: a message must be a JSON object with a \"type\"",
            ),
            (
                r#"{"type":"join","room":"tea""#,
                "error bad-json None: not valid JSON: EOF while parsing an object at line 1 column 27",
            ),
            ("", "error bad-json None: not valid JSON: EOF while parsing a value at line 1 column 0"),
            (
                "<script>alert(1)</script>",
                "error bad-json None: not valid JSON: expected value at line 1 column 1",
            ),
        ];
        for (input, expect) in cases {
            assert_eq!(show(input), expect, "input: {input}");
        }
    }

    #[test]
    fn chat_over_the_limit_is_refused() {
        let long = format!(r#"{{"type":"chat","text":"{}"}}"#, "가".repeat(1001));
        let err = parse(&long).expect_err("too long");
        assert_eq!(
            (err.code, err.message.as_str()),
            (ErrorCode::BadChat, "the message is longer than 1000 characters")
        );
    }

    /// The fast path for `signal` answers exactly as the general parser
    /// does, for inputs it takes and inputs it passes on.
    #[test]
    fn the_signal_fast_path_agrees_with_the_general_parser() {
        let inputs = [
            r#"{"type":"signal","to":"00000000000000ff","data":{"sdp":"v=0"}}"#,
            r#"{"type":"signal","to":"00000000000000ff","data":[1,2,{"a":null}]}"#,
            r#"{"type":"signal","to":"00000000000000ff","data": "x" }"#,
            r#"{"type":"signal","to":"00000000000000ff","data":null}"#,
            r#"{"type":"signal","to":"00000000000000ff","data":{"a":1},"data":2}"#,
            r#"{"type":"signal","to":"00000000000000ff","data":1,"to":"0000000000000001"}"#,
            r#"{"type":"signal","to":"00000000000000FF","data":{}}"#,
            r#"{"type":"signal","to":"00000000000000ff","data":{}"#,
            r#"{"type":"signal","to":"00000000000000ff","data":{}} "#,
            r#"{"type":"signal","to":"00000000000000ff","data":}"#,
            r#"{"type":"signal","to":"00000000000000ff","data":1e999}"#,
        ];
        for input in inputs {
            let fast = parse_signal_fast(input).map(|m| match m {
                ClientMsg::Signal { to, data } => (to, data.get().to_owned()),
                _ => unreachable!("the fast path only makes signals"),
            });
            let general = match parse_any(input) {
                Ok(ClientMsg::Signal { to, data }) => Ok((to, data.get().to_owned())),
                Ok(other) => panic!("{input}: {other:?}"),
                Err(e) => Err(e),
            };
            if let Some(fast) = fast {
                assert_eq!(Ok(fast), general, "{input}");
            }
            assert_eq!(
                show(input),
                match &general {
                    Ok((to, data)) => format!("signal to {to} data {data}"),
                    Err(e) => format!("error {} {:?}: {}", e.code.as_str(), e.request, e.message),
                },
                "{input}"
            );
        }
    }

    #[test]
    fn unknown_type_is_shown_shortened() {
        let long = format!(r#"{{"type":"{}"}}"#, "x".repeat(1000));
        let err = parse(&long).expect_err("unknown type");
        assert_eq!(err.code, ErrorCode::BadMessage);
        assert!(err.message.len() < 80, "{}", err.message);
    }

    #[test]
    fn deeply_nested_data_is_skipped_without_recursion() {
        // The payload is only scanned, never built, so depth cannot blow the
        // stack; the receiving browser's JSON.parse is the one to refuse it.
        let deep = format!(
            r#"{{"type":"signal","to":"00000000000000ff","data":{}{}}}"#,
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        assert!(matches!(parse(&deep), Ok(ClientMsg::Signal { .. })));
        let deep_envelope = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert_eq!(parse(&deep_envelope).map(|m| m.kind()).map_err(|e| e.code), Err(ErrorCode::BadMessage));
    }
}
