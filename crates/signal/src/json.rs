//! A signal's payload: one JSON value the server passes on untouched.
//!
//! [`compact`] checks the form browsers send (`JSON.stringify`: no white
//! space outside strings) in one pass with no allocation, for the fast path
//! of [`crate::parse`]. It is conservative: what it accepts, serde_json
//! accepts with the same span; anything unusual (white space, a `\u`
//! escape of a surrogate, deep nesting) it leaves to serde_json.

/// The text of one well-formed JSON value, borrowed from the frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawJson<'a>(&'a str);

impl<'a> RawJson<'a> {
    /// The value's text, exactly as the client wrote it.
    pub fn get(&self) -> &'a str {
        self.0
    }

    /// Wraps text serde_json has already checked to be one JSON value.
    pub(crate) fn checked(text: &'a str) -> RawJson<'a> {
        RawJson(text)
    }
}

/// Deeper nesting is left to serde_json (whose own limit is 128).
const MAX_DEPTH: usize = 32;

/// `text` as one compact JSON value, or `None` when it is not one or takes
/// more than this quick check (then serde_json decides).
pub(crate) fn compact(text: &str) -> Option<RawJson<'_>> {
    let b = text.as_bytes();
    (value(b, 0, 0)? == b.len()).then_some(RawJson(text))
}

/// Checks the value at `i`; returns where it ends.
fn value(b: &[u8], i: usize, depth: usize) -> Option<usize> {
    match *b.get(i)? {
        b'"' => string(b, i),
        b'{' => {
            if depth == MAX_DEPTH {
                return None;
            }
            let mut i = i + 1;
            if b.get(i) == Some(&b'}') {
                return Some(i + 1);
            }
            loop {
                i = string(b, i)?;
                if b.get(i) != Some(&b':') {
                    return None;
                }
                i = value(b, i + 1, depth + 1)?;
                match b.get(i)? {
                    b',' => i += 1,
                    b'}' => return Some(i + 1),
                    _ => return None,
                }
            }
        }
        b'[' => {
            if depth == MAX_DEPTH {
                return None;
            }
            let mut i = i + 1;
            if b.get(i) == Some(&b']') {
                return Some(i + 1);
            }
            loop {
                i = value(b, i, depth + 1)?;
                match b.get(i)? {
                    b',' => i += 1,
                    b']' => return Some(i + 1),
                    _ => return None,
                }
            }
        }
        b't' => literal(b, i, b"true"),
        b'f' => literal(b, i, b"false"),
        b'n' => literal(b, i, b"null"),
        b'-' | b'0'..=b'9' => number(b, i),
        _ => None,
    }
}

fn literal(b: &[u8], i: usize, word: &[u8]) -> Option<usize> {
    b.get(i..i + word.len()).filter(|w| *w == word).map(|_| i + word.len())
}

/// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`
fn number(b: &[u8], mut i: usize) -> Option<usize> {
    let digits = |mut i: usize| {
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        (i > start).then_some(i)
    };
    if b.get(i) == Some(&b'-') {
        i += 1;
    }
    i = match b.get(i)? {
        b'0' => i + 1,
        b'1'..=b'9' => digits(i)?,
        _ => return None,
    };
    if b.get(i) == Some(&b'.') {
        i = digits(i + 1)?;
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        i = digits(i)?;
    }
    Some(i)
}

/// A string starting at `i` (its opening quote); returns where it ends.
/// The text is UTF-8 already, so only quotes, escapes and control
/// characters need a look.
fn string(b: &[u8], i: usize) -> Option<usize> {
    if b.get(i) != Some(&b'"') {
        return None;
    }
    let mut i = i + 1;
    loop {
        // Eight plain bytes at a time.
        while let Some(chunk) = b.get(i..i + 8) {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            if needs_look(u64::from_le_bytes(word)) {
                break;
            }
            i += 8;
        }
        match *b.get(i)? {
            b'"' => return Some(i + 1),
            b'\\' => match *b.get(i + 1)? {
                b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => i += 2,
                b'u' => {
                    let hex = std::str::from_utf8(b.get(i + 2..i + 6)?).ok()?;
                    if !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
                        return None;
                    }
                    let unit = u16::from_str_radix(hex, 16).ok()?;
                    if (0xD800..=0xDFFF).contains(&unit) {
                        return None; // Surrogates: serde_json's call.
                    }
                    i += 6;
                }
                _ => return None,
            },
            0..0x20 => return None,
            _ => i += 1,
        }
    }
}

/// Whether any of the eight bytes is `"`, `\` or a control character.
fn needs_look(word: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let zero_byte = |x: u64| x.wrapping_sub(ONES) & !x & HIGHS;
    let quote = zero_byte(word ^ (ONES * u64::from(b'"')));
    let backslash = zero_byte(word ^ (ONES * u64::from(b'\\')));
    // Bytes under 0x20 (bytes from 0x80 up have their high bit set and are
    // masked out by `!word`).
    let control = word.wrapping_sub(ONES * 0x20) & !word & HIGHS;
    quote | backslash | control != 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::value::RawValue;

    fn serde_says(text: &str) -> bool {
        serde_json::from_str::<&RawValue>(text).is_ok_and(|v| v.get() == text)
    }

    #[test]
    fn accepts_only_what_serde_json_accepts() {
        let cases = [
            r#"{"t":1,"c":0,"p":"0123456789abcdefghijklmnopqrstuvwxyz"}"#,
            r#"{"description":{"type":"offer","sdp":"v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\n"}}"#,
            r#"{"candidate":{"candidate":"candidate:1 1 udp 2122260223 10.0.0.1 50000 typ host","sdpMid":"0","sdpMLineIndex":0,"usernameFragment":null}}"#,
            r#"[]"#,
            r#"{}"#,
            r#"[1,-0,0.5,-1.25e+10,3E-2,1e999,true,false,null,"é😀","\u00e9\"\\\/\b\f\n\r\t"]"#,
            r#""x""#,
            "12",
            r#""\ud83d\ude00""#,
            r#""\ud800""#,
            r#"{"a":1 }"#,
            r#"[1,]"#,
            r#"{"a":1,}"#,
            r#"{"a"}"#,
            r#"{1:2}"#,
            r#"01"#,
            r#"1."#,
            r#".5"#,
            r#"-"#,
            r#"1e"#,
            r#""\x""#,
            r#""\u12g4""#,
            "\"tab\there\"",
            r#""unterminated"#,
            r#"[1]]"#,
            r#"tru"#,
            r#"nul"#,
            "",
            &"[".repeat(40),
            &("[".repeat(40) + &"]".repeat(40)),
            &("[".repeat(20) + &"]".repeat(20)),
        ];
        for text in cases {
            let mine = compact(text).is_some();
            assert!(!mine || serde_says(text), "accepted what serde_json refuses: {text:?}");
            // Compact JSON (no white space between tokens) without
            // surrogate escapes or deep nesting takes the fast path.
            let plain = !text.contains("\\ud") && !text.contains(&"[".repeat(33)) && !text.contains(" }");
            if plain && serde_says(text) {
                assert!(mine, "refused plain compact JSON: {text:?}");
            }
        }
    }

    #[test]
    fn every_byte_that_needs_a_look_is_found_at_every_position() {
        for special in [b'"', b'\\', 0x00, 0x1F] {
            for at in 0..8 {
                let mut word = *b"abcdefgh";
                word[at] = special;
                assert!(needs_look(u64::from_le_bytes(word)), "{special:#x} at {at}");
            }
        }
        for plain in [*b"abcdefgh", *b"        ", [0x80, 0xFF, 0xC3, 0xA9, 0x20, 0x7E, 0x21, 0x23]] {
            assert!(!needs_look(u64::from_le_bytes(plain)), "{plain:?}");
        }
    }
}
