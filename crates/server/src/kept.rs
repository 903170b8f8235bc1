//! A single node's memory of what rooms' hosts set (lock, lobby, password
//! hash, bars, removals, holds), kept in the state directory so that a
//! restart, or a moment when every member's connection dropped, does not
//! reopen a locked room: cluster mode keeps the same in Redis. The room
//! core says what to keep (`Rooms::access`, `Rooms::poll_closed`) and
//! continues a room with it (`Admission::access`); this is only storage.
//!
//! A room's entry stays while the room lives; when it ends on purpose it
//! goes; when its members only lost their connections (or the server
//! restarted) it stays as long as their resume tokens could bring them
//! back. At most [`MAX_ROOMS`] rooms are kept; the file is rewritten (to
//! a temporary file, then renamed) at most every [`WRITE_EVERY`] after a
//! change, and once more at shutdown.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use room::{Closing, RoomAccess, RoomId};

/// Most rooms whose access state is kept (past it a new one is not, and
/// that is logged): bounded like everything a peer can make us hold.
pub(crate) const MAX_ROOMS: usize = 10_000;
/// A file larger than this is not read (it was not written by us).
const MAX_FILE_BYTES: u64 = 64 * 1024 * 1024;
/// How long after a change the file is written.
const WRITE_EVERY: Duration = Duration::from_millis(200);

struct Entry {
    access: RoomAccess,
    /// Since when (unix ms) nobody is in the room; `None` while it lives.
    idle_since: Option<u64>,
}

/// One room as the file keeps it.
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredRoom {
    #[serde(flatten)]
    access: StoredAccess,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    idle_since: Option<u64>,
}

/// The rooms' access state, and where it is written.
pub(crate) struct KeptRooms {
    path: PathBuf,
    /// How long an idle room's state is kept: a resume token's lifetime.
    keep_idle_ms: u64,
    rooms: Mutex<HashMap<RoomId, Entry>>,
    changed: tokio::sync::Notify,
    /// Logged once: the table is full.
    full_logged: std::sync::atomic::AtomicBool,
}

fn now_ms() -> u64 {
    u64::try_from(crate::unix_now().as_millis()).unwrap_or(u64::MAX)
}

impl KeptRooms {
    /// What `path` kept from the last run: every room in it counts as
    /// idle from now (the restart emptied it). A missing file is an empty
    /// one; an unreadable one is logged and ignored.
    pub(crate) fn open(path: PathBuf, keep_idle: Duration) -> Arc<KeptRooms> {
        let now = now_ms();
        let mut rooms = HashMap::new();
        match read(&path) {
            Ok(Some(stored)) => {
                for (name, room) in stored.into_iter().take(MAX_ROOMS) {
                    let Ok(id) = RoomId::parse(&name) else { continue };
                    rooms.insert(id, Entry { access: room.access.access(), idle_since: Some(now) });
                }
                tracing::info!(rooms = rooms.len(), path = %path.display(), "rooms' locks, passwords and bars kept from the last run");
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(path = %path.display(), "not reading the rooms' kept settings: {e}"),
        }
        Arc::new(KeptRooms {
            path,
            keep_idle_ms: u64::try_from(keep_idle.as_millis()).unwrap_or(u64::MAX),
            rooms: Mutex::new(rooms),
            changed: tokio::sync::Notify::new(),
            full_logged: std::sync::atomic::AtomicBool::new(false),
        })
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<RoomId, Entry>> {
        self.rooms.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// What `room` kept, for a join that may start it again (the room core
    /// ignores it if the room is there already).
    pub(crate) fn carried(&self, room: &RoomId) -> RoomAccess {
        let now = now_ms();
        match self.lock().get(room) {
            Some(e) if e.idle_since.is_none_or(|t| now.saturating_sub(t) <= self.keep_idle_ms) => {
                e.access.clone()
            }
            _ => RoomAccess::default(),
        }
    }

    /// `room` lives with `access` (after a host changed it, or the room
    /// started again with it).
    pub(crate) fn save(&self, room: &RoomId, access: &RoomAccess) {
        {
            let mut rooms = self.lock();
            if access.is_open() {
                rooms.remove(room);
            } else if rooms.len() >= MAX_ROOMS && !rooms.contains_key(room) {
                if !self.full_logged.swap(true, std::sync::atomic::Ordering::Relaxed) {
                    tracing::warn!(
                        "{MAX_ROOMS} rooms' settings kept already: a restart will reopen newer ones"
                    );
                }
                return;
            } else {
                rooms.insert(room.clone(), Entry { access: access.clone(), idle_since: None });
            }
        }
        self.changed.notify_one();
    }

    /// `room` ended: on purpose, its state goes; by lost connections, it
    /// stays for those who may come back.
    pub(crate) fn closed(&self, room: &RoomId, how: Closing) {
        {
            let mut rooms = self.lock();
            match how {
                Closing::Ended => {
                    if rooms.remove(room).is_none() {
                        return;
                    }
                }
                Closing::Emptied => match rooms.get_mut(room) {
                    Some(e) => e.idle_since = Some(now_ms()),
                    None => return,
                },
            }
        }
        self.changed.notify_one();
    }

    /// Writes the file a moment after each change, until `stop`; then once
    /// more.
    pub(crate) async fn run_writer(self: Arc<Self>, stop: tokio_util::sync::CancellationToken) {
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                () = self.changed.notified() => {}
            }
            tokio::time::sleep(WRITE_EVERY).await;
            let this = self.clone();
            let _ = tokio::task::spawn_blocking(move || this.write()).await;
        }
    }

    /// Writes the file now (the rooms not yet expired).
    pub(crate) fn write(&self) {
        let now = now_ms();
        let stored: HashMap<String, StoredRoom> = {
            let mut rooms = self.lock();
            rooms.retain(|_, e| e.idle_since.is_none_or(|t| now.saturating_sub(t) <= self.keep_idle_ms));
            rooms
                .iter()
                .map(|(id, e)| {
                    let room = StoredRoom { access: StoredAccess::of(&e.access), idle_since: e.idle_since };
                    (id.as_str().to_owned(), room)
                })
                .collect()
        };
        if let Err(e) = write(&self.path, &stored) {
            tracing::warn!(path = %self.path.display(), "could not keep the rooms' settings: {e}");
        }
    }
}

fn read(path: &Path) -> std::io::Result<Option<HashMap<String, StoredRoom>>> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    if file.metadata()?.len() > MAX_FILE_BYTES {
        return Err(std::io::Error::other(format!("larger than {MAX_FILE_BYTES} bytes")));
    }
    serde_json::from_reader(std::io::BufReader::new(file)).map(Some).map_err(std::io::Error::other)
}

/// Writes `rooms` to `path` through a temporary file, readable by its
/// owner only (it holds password hashes).
fn write(path: &Path, rooms: &HashMap<String, StoredRoom>) -> std::io::Result<()> {
    let tmp = path.with_extension("json.tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = std::io::BufWriter::new(options.open(&tmp)?);
    serde_json::to_writer(&mut file, rooms).map_err(std::io::Error::other)?;
    file.flush()?;
    file.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// A room's access state as kept outside the process (in Redis, or in
/// the state directory).
#[derive(serde::Serialize, serde::Deserialize, Default)]
pub(crate) struct StoredAccess {
    #[serde(default)]
    locked: bool,
    #[serde(default)]
    lobby: bool,
    /// Salt and hash, 96 hex digits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    password: Option<String>,
    #[serde(default)]
    barred_ids: Vec<String>,
    #[serde(default)]
    barred_addrs: Vec<std::net::IpAddr>,
    #[serde(default)]
    removed: Vec<String>,
    /// Peer, and whether its microphone, camera and screen are held off.
    #[serde(default)]
    holds: Vec<(String, bool, bool, bool)>,
}

impl StoredAccess {
    pub(crate) fn of(a: &room::RoomAccess) -> StoredAccess {
        let ids = |v: &[room::PeerId]| v.iter().map(ToString::to_string).collect();
        StoredAccess {
            locked: a.locked,
            lobby: a.lobby,
            password: a.password.as_ref().map(|p| {
                let (salt, hash) = p.to_parts();
                salt.iter().chain(hash.iter()).map(|b| format!("{b:02x}")).collect()
            }),
            barred_ids: ids(&a.barred_ids),
            barred_addrs: a.barred_addrs.clone(),
            removed: ids(&a.removed),
            holds: a.holds.iter().map(|(p, h)| (p.to_string(), h.audio, h.video, h.screen)).collect(),
        }
    }

    /// Back to access state, checked (Redis is shared; what is in it is
    /// not taken on trust). Anything unreadable keeps the room closed
    /// rather than open: a password that does not parse locks the room.
    pub(crate) fn access(&self) -> room::RoomAccess {
        let ids =
            |v: &[String]| v.iter().filter_map(|s| room::PeerId::parse(s)).take(room::BARRED_MAX).collect();
        let password = self.password.as_deref().map(|hex| {
            let bytes: Option<Vec<u8>> =
                (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok()).collect();
            bytes.filter(|b| b.len() == 48).map(|b| {
                let mut salt = [0; 16];
                let mut hash = [0; 32];
                salt.copy_from_slice(&b[..16]);
                hash.copy_from_slice(&b[16..]);
                room::PasswordHash::from_parts(salt, hash)
            })
        });
        room::RoomAccess {
            locked: self.locked || matches!(password, Some(None)),
            lobby: self.lobby,
            password: password.flatten(),
            barred_ids: ids(&self.barred_ids),
            barred_addrs: self.barred_addrs.iter().copied().take(room::BARRED_MAX).collect(),
            removed: ids(&self.removed),
            holds: self
                .holds
                .iter()
                .filter_map(|(p, audio, video, screen)| {
                    let held = room::MediaState { audio: *audio, video: *video, screen: *screen };
                    Some((room::PeerId::parse(p)?, held))
                })
                .take(room::BARRED_MAX)
                .collect(),
        }
    }
}
