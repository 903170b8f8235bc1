//! The web client, embedded in the binary at build time: no files to
//! install next to it, and the page and server can never be out of step.

/// One embedded file.
#[derive(Debug)]
pub struct Asset {
    /// File name under `/assets/`.
    pub name: &'static str,
    /// `Content-Type` to serve it with.
    pub mime: &'static str,
    /// Its bytes.
    pub body: &'static [u8],
}

macro_rules! web {
    ($name:literal, $mime:literal) => {
        Asset { name: $name, mime: $mime, body: include_bytes!(concat!("../../../web/", $name)) }
    };
}

/// The home page: start a call or type a room name.
pub const HOME_PAGE: Asset = web!("index.html", "text/html; charset=utf-8");
/// The call page, served for every `/r/<room>`.
pub const ROOM_PAGE: Asset = web!("room.html", "text/html; charset=utf-8");
/// `/diagnose`: checks camera, microphone, WebSocket, STUN and TURN.
pub const DIAGNOSE_PAGE: Asset = web!("diagnose.html", "text/html; charset=utf-8");
/// Shown for unknown paths and invalid room names.
pub const NOT_FOUND_PAGE: Asset = web!("404.html", "text/html; charset=utf-8");

/// Files under `/assets/`.
pub const ASSETS: &[Asset] = &[
    web!("style.css", "text/css; charset=utf-8"),
    web!("protocol.js", "text/javascript; charset=utf-8"),
    web!("call.js", "text/javascript; charset=utf-8"),
    web!("ui.js", "text/javascript; charset=utf-8"),
    web!("sfu.js", "text/javascript; charset=utf-8"),
    web!("chat.js", "text/javascript; charset=utf-8"),
    web!("controls.js", "text/javascript; charset=utf-8"),
    web!("quality.js", "text/javascript; charset=utf-8"),
    web!("home.js", "text/javascript; charset=utf-8"),
    web!("diagnose.js", "text/javascript; charset=utf-8"),
    web!("i18n.js", "text/javascript; charset=utf-8"),
    web!("level.js", "text/javascript; charset=utf-8"),
    web!("people.js", "text/javascript; charset=utf-8"),
    web!("icon.svg", "image/svg+xml"),
];

/// The asset called `name`, if there is one.
pub fn asset(name: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.name == name)
}
