//! Names of things in the room core: peers, rooms, display names.
//!
//! Room and display names come from peers, so they are validated here once,
//! and the rest of the code only ever sees the checked newtypes.

use std::fmt;

/// A connection's identity, chosen by the IO shell (random, so it says
/// nothing about how many connections the server has seen).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct PeerId(pub u64);

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// Hashes a [`PeerId`] by itself. Ids are random 64-bit numbers chosen by
/// the server (a resume token only returns one the server signed), so they
/// are already uniformly spread and a client cannot pick colliding ones:
/// SipHash's defence against chosen keys buys nothing here.
#[derive(Default, Clone, Copy, Debug)]
pub struct PeerIdHasher(u64);

impl std::hash::Hasher for PeerIdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used for a PeerId; anything else still hashes.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// A map keyed by peer id, with [`PeerIdHasher`].
pub type PeerMap<V> = std::collections::HashMap<PeerId, V, std::hash::BuildHasherDefault<PeerIdHasher>>;

impl PeerId {
    /// Parses the wire form: exactly 16 lowercase hex digits.
    pub fn parse(s: &str) -> Option<PeerId> {
        if s.len() != 16 {
            return None;
        }
        // By hand: this runs for every signal relayed.
        let mut n = 0u64;
        for b in s.bytes() {
            let digit = match b {
                b'0'..=b'9' => b - b'0',
                b'a'..=b'f' => b - b'a' + 10,
                _ => return None,
            };
            n = n << 4 | u64::from(digit);
        }
        Some(PeerId(n))
    }
}

/// Why a room or display name was refused.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum NameError {
    /// Empty, or only white space for display names.
    Empty,
    /// More characters than allowed.
    TooLong {
        /// The limit, in characters.
        max: usize,
    },
    /// A character that is not allowed here.
    BadChar(char),
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NameError::Empty => f.write_str("is empty"),
            NameError::TooLong { max } => write!(f, "is longer than {max} characters"),
            NameError::BadChar(c) => write!(f, "contains the character {c:?}"),
        }
    }
}

/// Checks that `s` has at most `max` characters, all `allowed`; the first
/// problem found, reading from the start, is the answer.
/// Whether `c` is a format character (Unicode general category Cf, as of
/// Unicode 15.1): bidi controls, zero-width and invisible characters, and
/// the like. Three are let through, since real names and emoji need them
/// and they show nothing on their own: the zero-width joiner and
/// non-joiner (Persian, Indic scripts, emoji sequences), and the tag
/// characters of subdivision flags.
pub fn is_format(c: char) -> bool {
    matches!(c,
        '\u{00AD}'
        | '\u{0600}'..='\u{0605}'
        | '\u{061C}'
        | '\u{06DD}'
        | '\u{070F}'
        | '\u{0890}'..='\u{0891}'
        | '\u{08E2}'
        | '\u{180E}'
        | '\u{200B}'
        | '\u{200E}'..='\u{200F}'
        | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{2064}'
        | '\u{2066}'..='\u{206F}'
        | '\u{FEFF}'
        | '\u{FFF9}'..='\u{FFFB}'
        | '\u{110BD}'
        | '\u{110CD}'
        | '\u{13430}'..='\u{1343F}'
        | '\u{1BCA0}'..='\u{1BCA3}'
        | '\u{1D173}'..='\u{1D17A}'
        | '\u{E0001}')
}

fn check_chars(s: &str, max: usize, allowed: impl Fn(char) -> bool) -> Result<(), NameError> {
    for (i, c) in s.chars().enumerate() {
        if i == max {
            return Err(NameError::TooLong { max });
        }
        if !allowed(c) {
            return Err(NameError::BadChar(c));
        }
    }
    Ok(())
}

/// A room's canonical name: 1 to [`RoomId::MAX_CHARS`] letters, digits, `-`,
/// `_` or `.`, case-folded so that `Tea-Party` and `tea-party` meet.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct RoomId(String);

impl RoomId {
    /// Longest room name, in characters.
    pub const MAX_CHARS: usize = 64;

    /// Validates and case-folds a room name.
    pub fn parse(raw: &str) -> Result<RoomId, NameError> {
        if raw.is_empty() {
            return Err(NameError::Empty);
        }
        check_chars(raw, Self::MAX_CHARS, |c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.'))?;
        let folded = raw.to_lowercase();
        // Lowercasing can change a name's length (a few characters fold to
        // two), so the limit is checked again on the canonical form.
        if folded.chars().count() > Self::MAX_CHARS {
            return Err(NameError::TooLong { max: Self::MAX_CHARS });
        }
        Ok(RoomId(folded))
    }

    /// The canonical name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RoomId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A name people see next to a peer: 1 to [`DisplayName::MAX_CHARS`]
/// characters after trimming, no control characters.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct DisplayName(String);

impl DisplayName {
    /// Longest display name, in characters.
    pub const MAX_CHARS: usize = 40;

    /// Validates a display name, trimming white space at both ends.
    pub fn parse(raw: &str) -> Result<DisplayName, NameError> {
        let name = raw.trim();
        if name.is_empty() {
            return Err(NameError::Empty);
        }
        // Bidi controls let a name rewrite what is shown after it, and
        // invisible characters let two names look alike: control and
        // format characters are refused.
        check_chars(name, Self::MAX_CHARS, |c| !(c.is_control() || is_format(c)))?;
        Ok(DisplayName(name.to_owned()))
    }

    /// The name given when a peer chose none.
    pub fn guest() -> DisplayName {
        DisplayName("Guest".to_owned())
    }

    /// The name as shown.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DisplayName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A chat message's text: 1 to [`ChatText::MAX_CHARS`] characters, not only
/// white space, no control characters but newline and tab. Shared, since
/// one message goes to every member and into the history.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct ChatText(std::sync::Arc<str>);

impl ChatText {
    /// Longest chat message, in characters.
    pub const MAX_CHARS: usize = 1000;

    /// Validates a chat message.
    pub fn parse(raw: &str) -> Result<ChatText, NameError> {
        if raw.trim().is_empty() {
            return Err(NameError::Empty);
        }
        check_chars(raw, Self::MAX_CHARS, |c| !c.is_control() || c == '\n' || c == '\t')?;
        Ok(ChatText(raw.into()))
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A chat message's id, chosen by its sender: 1 to [`ChatId::MAX_CHARS`]
/// ASCII letters, digits, `-` or `_`. The core only keeps it with the
/// message; receiving clients use it to show a message sent twice (before
/// and after a dropped connection) once.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct ChatId(std::sync::Arc<str>);

impl ChatId {
    /// Longest id, in characters.
    pub const MAX_CHARS: usize = 64;

    /// Validates an id.
    pub fn parse(raw: &str) -> Result<ChatId, NameError> {
        if raw.is_empty() {
            return Err(NameError::Empty);
        }
        check_chars(raw, Self::MAX_CHARS, |c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))?;
        Ok(ChatId(raw.into()))
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What a peer says it sends: microphone, camera, screen share.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct MediaState {
    /// Microphone on.
    pub audio: bool,
    /// Camera on.
    pub video: bool,
    /// Sharing its screen.
    pub screen: bool,
}

impl Default for MediaState {
    /// A peer that said nothing has its microphone and camera on.
    fn default() -> Self {
        MediaState { audio: true, video: true, screen: false }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_names() {
        let cases: &[(&str, Result<&str, NameError>)] = &[
            ("tea-party", Ok("tea-party")),
            ("Tea_Party.2", Ok("tea_party.2")),
            ("회의실", Ok("회의실")),
            ("", Err(NameError::Empty)),
            ("a b", Err(NameError::BadChar(' '))),
            ("a/b", Err(NameError::BadChar('/'))),
            ("<script>", Err(NameError::BadChar('<'))),
            ("%2e", Err(NameError::BadChar('%'))),
        ];
        for (raw, expect) in cases {
            let got = RoomId::parse(raw);
            assert_eq!(got.as_ref().map(RoomId::as_str), expect.as_ref().copied(), "{raw:?}");
        }
        assert!(RoomId::parse(&"x".repeat(64)).is_ok());
        assert_eq!(RoomId::parse(&"x".repeat(65)), Err(NameError::TooLong { max: 64 }));
        // U+0130 lowercases to two characters: the folded form is checked too.
        assert_eq!(RoomId::parse(&"\u{130}".repeat(40)), Err(NameError::TooLong { max: 64 }));
    }

    #[test]
    fn display_names() {
        assert_eq!(DisplayName::parse("  Minji ").map(|n| n.0), Ok("Minji".to_owned()));
        assert_eq!(DisplayName::parse(" \t "), Err(NameError::Empty));
        assert_eq!(DisplayName::parse("a\u{7}b"), Err(NameError::BadChar('\u{7}')));
        assert_eq!(DisplayName::parse("a\u{202E}b"), Err(NameError::BadChar('\u{202E}')));
        // Issue 10, finding 9: invisible and other format characters.
        for c in [
            '\u{200B}',
            '\u{200E}',
            '\u{200F}',
            '\u{2060}',
            '\u{FEFF}',
            '\u{00AD}',
            '\u{061C}',
            '\u{2066}',
            '\u{E0001}',
        ] {
            let name = format!("Min{c}ji");
            assert_eq!(DisplayName::parse(&name), Err(NameError::BadChar(c)), "U+{:04X}", u32::from(c));
        }
        // Joiners and flag tags stay: real names and emoji need them.
        for name in [
            "\u{0645}\u{06CC}\u{200C}\u{062E}\u{0648}\u{0627}\u{0645}",
            "\u{1F469}\u{200D}\u{1F4BB} Ara",
            "\u{1F3F4}\u{E0067}\u{E0062}\u{E0065}\u{E006E}\u{E0067}\u{E007F}",
        ] {
            assert!(DisplayName::parse(name).is_ok(), "{name:?}");
        }
        assert!(DisplayName::parse(&"가".repeat(40)).is_ok());
        assert_eq!(DisplayName::parse(&"가".repeat(41)), Err(NameError::TooLong { max: 40 }));
        assert_eq!(DisplayName::parse("<b>hi</b>").map(|n| n.0), Ok("<b>hi</b>".to_owned()));
    }

    #[test]
    fn chat_texts() {
        assert_eq!(
            ChatText::parse("hi\n\tthere").map(|t| t.as_str().to_owned()),
            Ok("hi\n\tthere".to_owned())
        );
        assert_eq!(ChatText::parse("<script>alert(1)</script>").map(|t| t.0.len()), Ok(25));
        assert_eq!(ChatText::parse(" \n "), Err(NameError::Empty));
        assert_eq!(ChatText::parse("a\u{1b}[31m"), Err(NameError::BadChar('\u{1b}')));
        assert!(ChatText::parse(&"가".repeat(1000)).is_ok());
        assert_eq!(ChatText::parse(&"a".repeat(1001)), Err(NameError::TooLong { max: 1000 }));
    }

    #[test]
    fn chat_ids_are_short_and_plain() {
        assert_eq!(
            ChatId::parse("q3Zt9xKd0b1w7LmA-_").map(|i| i.as_str().to_owned()),
            Ok("q3Zt9xKd0b1w7LmA-_".into())
        );
        assert_eq!(ChatId::parse(""), Err(NameError::Empty));
        assert_eq!(ChatId::parse("a b"), Err(NameError::BadChar(' ')));
        assert_eq!(ChatId::parse("가"), Err(NameError::BadChar('가')));
        assert!(ChatId::parse(&"x".repeat(64)).is_ok());
        assert_eq!(ChatId::parse(&"x".repeat(65)), Err(NameError::TooLong { max: 64 }));
    }

    #[test]
    fn peer_ids_round_trip() {
        let id = PeerId(0x3f9a_0c21_d4e5_b678);
        assert_eq!(id.to_string(), "3f9a0c21d4e5b678");
        assert_eq!(PeerId::parse("3f9a0c21d4e5b678"), Some(id));
        for bad in ["", "3F9A0C21D4E5B678", "3f9a0c21d4e5b67", "+f9a0c21d4e5b678", "3f9a0c21d4e5b6789"] {
            assert_eq!(PeerId::parse(bad), None, "{bad:?}");
        }
    }
}
