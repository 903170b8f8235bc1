//! Who may join and who runs the call, over real WebSockets: hosts, the
//! lobby, bars, passwords and join tokens (docs/protocol.md, "Hosts, the
//! lobby and moderation"; docs/tokens.md). Each refusal is checked from
//! the outside: the answer the client gets, and that nobody else heard
//! anything.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{Client, TestServer};

/// Long enough for a wrongly delivered message to have arrived.
const QUIET: Duration = Duration::from_millis(300);

async fn server(capacity: usize) -> TestServer {
    TestServer::start(server::Config { room_capacity: capacity, ..server::Config::default() }).await
}

/// Connects from `source`, says hello and sends `join`; the answer.
async fn knock(server: &TestServer, source: &str, join: Value) -> (Client, Value) {
    let mut c = Client::connect_from(server, source).await;
    c.hello().await;
    c.send(join).await;
    let answer = c.recv().await;
    if let Some(id) = answer["you"].as_str() {
        c.id = id.to_owned();
    }
    (c, answer)
}

/// A host (the room's creator) and a guest in `room`.
async fn host_and_guest(server: &TestServer, room: &str) -> (Client, Client) {
    let (mut host, joined) =
        Client::join_with(server, json!({"type": "join", "room": room, "name": "Host", "create": true}))
            .await;
    assert_eq!(joined["role"], "host", "the creator of a new room runs it: {joined}");
    let (mut guest, joined) =
        knock(server, "127.0.0.2", json!({"type": "join", "room": room, "name": "Guest"})).await;
    assert_eq!(joined["type"], "joined", "{joined}");
    assert_eq!(joined["role"], "guest");
    assert_eq!(joined["peers"][0]["role"], "host");
    assert_eq!(host.recv().await["type"], "peer-joined");
    guest.expect_silence(Duration::ZERO).await;
    (host, guest)
}

#[tokio::test]
async fn a_guests_forged_host_actions_are_refused_and_nobody_hears_of_them() {
    let server = server(5).await;
    let (mut host, mut guest) = host_and_guest(&server, "forged").await;
    // `create` on an existing room makes nobody a host.
    let (mut late, joined) =
        Client::join_with(&server, json!({"type": "join", "room": "forged", "name": "Late", "create": true}))
            .await;
    assert_eq!(joined["role"], "guest", "{joined}");
    for c in [&mut host, &mut guest] {
        assert_eq!(c.recv().await["type"], "peer-joined");
    }
    let h = host.id.clone();
    let forged = [
        json!({"type": "moderate", "peer": h, "action": "mute"}),
        json!({"type": "moderate", "peer": h, "action": "remove", "bar": true}),
        json!({"type": "moderate", "peer": guest.id, "action": "make-host"}),
        json!({"type": "room-settings", "locked": true, "lobby": true, "password": "mine now"}),
        json!({"type": "admit", "peer": h}),
        json!({"type": "deny", "peer": h}),
        json!({"type": "end-call"}),
    ];
    for msg in forged {
        guest.send(msg.clone()).await;
        let err = guest.expect_error("not-host").await;
        assert_eq!(err["request"], msg["type"], "{err}");
    }
    host.expect_silence(QUIET).await;
    late.expect_silence(Duration::ZERO).await;
    // The room is as it was: open, the host unmuted and still in it.
    let (_d, joined) = Client::join(&server, "forged", "D").await;
    assert_eq!(joined["settings"], json!({"locked": false, "lobby": false, "password": false}));
    let host_seen = joined["peers"].as_array().expect("peers").iter().find(|p| p["id"] == h).cloned();
    assert_eq!(host_seen.expect("host still there")["media"]["audio"], true);
}

#[tokio::test]
async fn knock_admit_and_deny_through_the_lobby() {
    let server = server(5).await;
    let (mut host, mut guest) = host_and_guest(&server, "lobby").await;
    host.send(json!({"type": "room-settings", "lobby": true})).await;
    let on = json!({"type": "room-settings", "locked": false, "lobby": true, "password": false});
    assert_eq!(host.recv().await, on);
    assert_eq!(guest.recv().await, on);

    let (mut ara, answer) =
        knock(&server, "127.0.0.3", json!({"type": "join", "room": "lobby", "name": "Ara"})).await;
    assert_eq!(answer, json!({"type": "waiting", "room": "lobby"}));
    let k = host.recv().await;
    assert_eq!(k["type"], "knock", "{k}");
    assert_eq!(k["name"], "Ara");
    let ara_id = k["peer"].as_str().expect("peer").to_owned();
    guest.expect_silence(QUIET).await; // Guests do not see the lobby.
    // While waiting, nothing but leave and ping.
    ara.send(json!({"type": "chat", "text": "let me in"})).await;
    ara.expect_error("not-joined").await;
    ara.signal(&host.id, json!({"x": 1})).await;
    ara.expect_error("not-joined").await;
    host.expect_silence(QUIET).await;

    // A guest cannot admit.
    guest.send(json!({"type": "admit", "peer": ara_id})).await;
    guest.expect_error("not-host").await;
    host.send(json!({"type": "admit", "peer": ara_id})).await;
    assert_eq!(host.recv().await, json!({"type": "knock-gone", "peer": ara_id, "reason": "admitted"}));
    assert_eq!(host.recv().await["type"], "peer-joined");
    assert_eq!(guest.recv().await["type"], "peer-joined");
    let joined = ara.recv().await;
    assert_eq!(joined["type"], "joined", "{joined}");
    assert_eq!(joined["you"], ara_id);
    ara.id = ara_id;
    // Admitted means a member: signals flow both ways.
    ara.signal(&host.id, json!({"hi": 1})).await;
    assert_eq!(host.recv().await["from"], ara.id);

    // Someone else is turned away and is told so.
    let (mut bo, answer) =
        knock(&server, "127.0.0.4", json!({"type": "join", "room": "lobby", "name": "Bo"})).await;
    assert_eq!(answer["type"], "waiting");
    let bo_id = host.recv().await["peer"].as_str().expect("peer").to_owned();
    host.send(json!({"type": "deny", "peer": bo_id})).await;
    assert_eq!(host.recv().await["reason"], "denied");
    let err = bo.expect_error("denied").await;
    assert_eq!(err["request"], "join");
    bo.ping().await; // Still connected, outside any room.
    // One who gives up waiting is gone from the hosts' list.
    let (mut cy, _) =
        knock(&server, "127.0.0.5", json!({"type": "join", "room": "lobby", "name": "Cy"})).await;
    let cy_id = host.recv().await["peer"].as_str().expect("peer").to_owned();
    cy.send(json!({"type": "leave"})).await;
    assert_eq!(cy.recv().await, json!({"type": "left", "room": "lobby"}));
    assert_eq!(host.recv().await, json!({"type": "knock-gone", "peer": cy_id, "reason": "left"}));
    // An admit for someone no longer waiting names nobody.
    host.send(json!({"type": "admit", "peer": cy_id})).await;
    host.expect_error("unknown-peer").await;
    guest.expect_silence(QUIET).await;
}

#[tokio::test]
async fn a_removed_and_barred_peer_cannot_come_back_by_a_new_connection_or_its_resume_token() {
    let server = server(5).await;
    let (mut host, mut guest) = host_and_guest(&server, "bar").await;
    let resume = guest.ping().await["resume"].as_str().expect("token").to_owned();
    host.send(json!({"type": "moderate", "peer": guest.id, "action": "remove", "bar": true})).await;
    assert_eq!(
        guest.recv().await,
        json!({"type": "removed", "room": "bar", "reason": "removed", "by": host.id})
    );
    assert_eq!(host.recv().await, json!({"type": "peer-left", "peer": guest.id, "reason": "removed"}));
    // Out of the room: signals to the host no longer go.
    guest.signal(&host.id, json!({"x": 1})).await;
    guest.expect_error("not-joined").await;
    // The same connection, a new one from the same address, and the resume
    // token from another address: all refused.
    guest.send(json!({"type": "join", "room": "bar", "name": "Guest"})).await;
    guest.expect_error("barred").await;
    let (_, answer) =
        knock(&server, "127.0.0.2", json!({"type": "join", "room": "bar", "name": "Other name"})).await;
    assert_eq!(answer["code"], "barred", "{answer}");
    let (_, answer) = knock(
        &server,
        "127.0.0.9",
        json!({"type": "join", "room": "bar", "name": "Guest", "resume": resume}),
    )
    .await;
    assert_eq!(answer["code"], "barred", "{answer}");
    host.expect_silence(QUIET).await;
    // Others still get in.
    let (_, answer) =
        knock(&server, "127.0.0.3", json!({"type": "join", "room": "bar", "name": "Fine"})).await;
    assert_eq!(answer["type"], "joined", "{answer}");
}

#[tokio::test]
async fn a_host_mute_is_held_and_the_role_survives_a_resume() {
    let server = server(5).await;
    let (mut host, mut guest) = host_and_guest(&server, "mute").await;
    host.send(json!({"type": "moderate", "peer": guest.id, "action": "mute"})).await;
    let m = guest.recv().await;
    assert_eq!(m["type"], "moderated", "{m}");
    assert_eq!((m["action"].clone(), m["by"].clone()), (json!("mute"), json!(host.id)));
    assert_eq!(m["held"], json!({"audio": true, "video": false, "screen": false}));
    let seen = host.recv().await;
    assert_eq!(seen["media"]["audio"], false, "{seen}");
    // The guest cannot turn it back on...
    guest.send(json!({"type": "media", "audio": true})).await;
    guest.expect_error("held").await;
    host.expect_silence(QUIET).await;
    // ...until the host asks, and then only by itself.
    host.send(json!({"type": "moderate", "peer": guest.id, "action": "ask-unmute"})).await;
    assert_eq!(guest.recv().await["action"], "ask-unmute");
    host.expect_silence(QUIET).await;
    guest.send(json!({"type": "media", "audio": true})).await;
    assert_eq!(host.recv().await["media"]["audio"], true);

    // The host's connection drops; its resume token brings back the role.
    host.send(json!({"type": "moderate", "peer": guest.id, "action": "make-host"})).await;
    assert_eq!(host.recv().await, json!({"type": "peer-role", "peer": guest.id, "role": "host"}));
    assert_eq!(guest.recv().await, json!({"type": "peer-role", "peer": guest.id, "role": "host"}));
    let token = guest.ping().await["resume"].as_str().expect("token").to_owned();
    drop(guest);
    assert_eq!(host.recv().await["reason"], "disconnected");
    let (back, joined) =
        Client::join_with(&server, json!({"type": "join", "room": "mute", "name": "Guest", "resume": token}))
            .await;
    assert_eq!(joined["role"], "host", "{joined}");
    assert_eq!(back.id, joined["you"].as_str().expect("you"));
}

#[tokio::test]
async fn a_password_room_refuses_wrong_passwords_and_limits_them_per_address() {
    let server = server(5).await;
    let (mut host, _guest) = host_and_guest(&server, "pw").await;
    host.send(json!({"type": "room-settings", "password": "blue kettle"})).await;
    assert_eq!(host.recv().await["password"], true);
    let join = |pw: Option<&str>| {
        let mut j = json!({"type": "join", "room": "pw", "name": "Ara"});
        if let Some(pw) = pw {
            j["password"] = json!(pw);
        }
        j
    };
    let mut ara = Client::connect_from(&server, "127.0.0.3").await;
    ara.hello().await;
    // A `peek` says a password is needed before anyone tries.
    ara.send(json!({"type": "peek", "room": "pw"})).await;
    let state = ara.recv().await;
    assert_eq!(state["settings"], json!({"locked": false, "lobby": false, "password": true}), "{state}");
    ara.send(join(None)).await;
    ara.expect_error("password-required").await;
    for _ in 0..room::PASSWORD_ATTEMPTS {
        ara.send(join(Some("red kettle"))).await;
        ara.expect_error("bad-password").await;
    }
    ara.send(join(Some("blue kettle"))).await;
    ara.expect_error("too-many-attempts").await;
    host.expect_silence(QUIET).await;
    // Another address with the right password is in.
    let (_, answer) = knock(&server, "127.0.0.4", join(Some("blue kettle"))).await;
    assert_eq!(answer["type"], "joined", "{answer}");
    assert_eq!(answer["settings"]["password"], true);
}

#[tokio::test]
async fn ending_the_call_takes_everyone_out_and_turns_away_who_waits() {
    let server = server(5).await;
    let (mut host, mut guest) = host_and_guest(&server, "end").await;
    host.send(json!({"type": "room-settings", "lobby": true})).await;
    host.recv().await;
    guest.recv().await;
    let (mut ara, _) =
        knock(&server, "127.0.0.3", json!({"type": "join", "room": "end", "name": "Ara"})).await;
    host.recv().await; // knock
    host.send(json!({"type": "end-call"})).await;
    let ended = json!({"type": "removed", "room": "end", "reason": "ended", "by": host.id});
    assert_eq!(host.recv().await, ended);
    assert_eq!(guest.recv().await, ended);
    ara.expect_error("denied").await;
    // Nobody is in a room any more: a chat goes nowhere.
    guest.send(json!({"type": "chat", "text": "hello?"})).await;
    guest.expect_error("not-joined").await;
    // The room is gone with its settings: the next one in finds it new.
    let (_, joined) = Client::join(&server, "end", "New").await;
    assert_eq!(joined["peers"], json!([]));
    assert_eq!(joined["settings"]["lobby"], false);
}

#[tokio::test]
async fn join_tokens_expired_for_another_room_or_tampered_with_are_refused() {
    let key = server::jointoken::JoinKey::new(b"a join secret for tests").expect("long enough");
    let config = server::Config {
        room_capacity: 5,
        join_key: Some(key.clone()),
        require_token: true,
        ..server::Config::default()
    };
    let server = TestServer::start(config).await;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs();
    let room = |r: &str| room::RoomId::parse(r).expect("valid");
    let name = |n: &str| room::DisplayName::parse(n).expect("valid");
    let all = room::Grants::default();
    let join = |token: Option<String>| {
        let mut j = json!({"type": "join", "room": "class", "name": "Anyone"});
        if let Some(t) = token {
            j["token"] = json!(t);
        }
        j
    };
    let mut c = Client::connect(&server).await;
    c.hello().await;
    c.send(join(None)).await;
    c.expect_error("token-required").await;
    c.send(join(Some(key.mint(&room("class"), &name("Old"), now - 1, false, all)))).await;
    let err = c.expect_error("bad-token").await;
    assert!(err["message"].as_str().is_some_and(|m| m.contains("expired")), "{err}");
    c.send(join(Some(key.mint(&room("other"), &name("Lost"), now + 60, false, all)))).await;
    let err = c.expect_error("bad-token").await;
    assert!(err["message"].as_str().is_some_and(|m| m.contains("another room")), "{err}");
    let other_key = server::jointoken::JoinKey::new(b"somebody else's secret").expect("long");
    c.send(join(Some(other_key.mint(&room("class"), &name("Forger"), now + 60, true, all)))).await;
    c.expect_error("bad-token").await;
    let guest = key.mint(&room("class"), &name("Student"), now + 60, false, all);
    let tampered = guest.replacen('.', ".x", 2);
    c.send(join(Some(tampered))).await;
    c.expect_error("bad-token").await;

    // A valid host token: its name, not the one the client asked for.
    let (mut teacher, joined) = Client::join_with(
        &server,
        join(Some(key.mint(&room("class"), &name("Teacher"), now + 60, true, all))),
    )
    .await;
    assert_eq!((joined["name"].clone(), joined["role"].clone()), (json!("Teacher"), json!("host")));
    // A guest whose token does not grant chat or a camera.
    let quiet = room::Grants { publish: false, screen: true, chat: false };
    let mut join_quiet = join(Some(key.mint(&room("class"), &name("Listener"), now + 60, false, quiet)));
    join_quiet["media"] = json!({"audio": true, "video": true});
    let (mut listener, joined) = Client::join_with(&server, join_quiet).await;
    assert_eq!(joined["grants"], json!({"publish": false, "screen": true, "chat": false}));
    let seen = teacher.recv().await;
    assert_eq!(seen["peer"]["media"], json!({"audio": false, "video": false, "screen": false}), "{seen}");
    listener.send(json!({"type": "chat", "text": "hi"})).await;
    listener.expect_error("not-allowed").await;
    listener.send(json!({"type": "media", "audio": true})).await;
    listener.expect_error("not-allowed").await;
    teacher.expect_silence(QUIET).await;
}

/// The code block after "```{lang}" in docs/tokens.md.
fn doc_example(lang: &str) -> String {
    let doc = include_str!("../../../../docs/tokens.md");
    let start =
        doc.find(&format!("```{lang}\n")).unwrap_or_else(|| panic!("a {lang} example")) + lang.len() + 4;
    let len = doc[start..].find("```").expect("the example ends");
    doc[start..start + len].to_owned()
}

#[tokio::test]
async fn the_documented_python_and_shell_recipes_make_tokens_the_server_accepts() {
    let secret = "a long random secret, shared with the app";
    let key = server::jointoken::JoinKey::new(secret.as_bytes()).expect("long enough");
    let config = server::Config {
        room_capacity: 5,
        join_key: Some(key),
        require_token: true,
        ..server::Config::default()
    };
    let server = TestServer::start(config).await;
    let run = |program: &str, script: String| {
        let out = std::process::Command::new(program)
            .arg("-c")
            .arg(script)
            .output()
            .unwrap_or_else(|e| panic!("run {program}: {e}"));
        assert!(out.status.success(), "{program}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).expect("utf8").trim().to_owned()
    };
    let student = run("python3", doc_example("python"));
    let teacher = run("sh", doc_example("sh"));
    let (_t, joined) = Client::join_with(
        &server,
        json!({"type": "join", "room": "class-7b", "name": "x", "token": teacher}),
    )
    .await;
    assert_eq!(
        (joined["name"].clone(), joined["role"].clone()),
        (json!("Ms Kim"), json!("host")),
        "{joined}"
    );
    let (_s, joined) = Client::join_with(
        &server,
        json!({"type": "join", "room": "Class-7B", "name": "y", "token": student}),
    )
    .await;
    assert_eq!(joined["name"], "Minji");
    assert_eq!(joined["grants"], json!({"publish": false, "screen": true, "chat": true}));
}

#[tokio::test]
async fn a_host_is_a_host_again_after_a_server_restart() {
    let key = server::resume::ResumeKey::new([5; 32]);
    let config = || server::Config { room_capacity: 5, resume_key: key.clone(), ..server::Config::default() };
    let first = TestServer::start(config()).await;
    let (mut host, joined) =
        Client::join_with(&first, json!({"type": "join", "room": "kept", "name": "Host", "create": true}))
            .await;
    assert_eq!(joined["role"], "host");
    let token = host.ping().await["resume"].as_str().expect("token").to_owned();
    first.shutdown().await;
    // The same secret (as `--state-dir` keeps it): the room is gone, and
    // whoever comes back first is not its host unless its token says so.
    let second = TestServer::start(config()).await;
    let (_guest, joined) = Client::join(&second, "kept", "Guest").await;
    assert_eq!(joined["role"], "guest");
    let (back, joined) =
        Client::join_with(&second, json!({"type": "join", "room": "kept", "name": "Host", "resume": token}))
            .await;
    assert_eq!((joined["role"].clone(), joined["resumed"].clone()), (json!("host"), json!(true)), "{joined}");
    assert_eq!(back.id, host.id);
}

/// Turning the lobby off lets everyone waiting in at once: each is
/// seated and told `joined` before anything else, even while a member
/// signals every newcomer the moment it hears of it; and each gets that
/// signal.
#[tokio::test]
async fn turning_the_lobby_off_lets_everyone_in_each_told_joined_first() {
    let server = server(12).await;
    let (mut host, mut guest) = host_and_guest(&server, "open-up").await;
    for round in 0..3 {
        host.send(json!({"type": "room-settings", "lobby": true})).await;
        assert_eq!(host.recv().await["lobby"], true);
        assert_eq!(guest.recv().await["lobby"], true);
        let mut waiting = Vec::new();
        for i in 0..4 {
            let source = format!("127.0.0.{}", 10 + round * 4 + i);
            let join = json!({"type": "join", "room": "open-up", "name": format!("K{round}{i}")});
            let (k, answer) = knock(&server, &source, join).await;
            assert_eq!(answer["type"], "waiting", "{answer}");
            assert_eq!(host.recv().await["type"], "knock");
            waiting.push(k);
        }
        host.send(json!({"type": "room-settings", "lobby": false})).await;
        // The guest signals each newcomer as soon as it hears of it.
        let mut newcomers = Vec::new();
        while newcomers.len() < 4 {
            let m = guest.recv().await;
            if m["type"] == "peer-joined" {
                let id = m["peer"]["id"].as_str().expect("id").to_owned();
                guest.signal(&id, json!({"hello": id})).await;
                newcomers.push(id);
            }
        }
        for k in &mut waiting {
            let first = k.recv().await;
            assert_eq!(first["type"], "joined", "joined comes first: {first}");
            k.id = first["you"].as_str().expect("you").to_owned();
            assert!(newcomers.contains(&k.id));
            let s = loop {
                let m = k.recv().await;
                if m["type"] == "signal" {
                    break m;
                }
            };
            assert_eq!((&s["from"], &s["data"]["hello"]), (&json!(guest.id), &json!(k.id)));
        }
        for mut k in waiting {
            k.send(json!({"type": "leave"})).await;
            loop {
                if k.recv().await["type"] == "left" {
                    break;
                }
            }
        }
        // Everyone else hears them go (and of the lobby's closing).
        for who in [&mut host, &mut guest] {
            let mut gone = 0;
            while gone < 4 {
                if who.recv().await["type"] == "peer-left" {
                    gone += 1;
                }
            }
        }
    }
}

/// A single node keeps what a room's hosts set across a restart (in the
/// state directory's `rooms.json`, readable by its owner only): the room
/// comes back locked, with its password, its bar and its hold, and its
/// host is host again; a call that ends on purpose leaves nothing behind.
#[tokio::test]
async fn a_rooms_lock_password_bars_and_holds_survive_a_restart() {
    let dir = std::env::temp_dir().join(format!("webconf-kept-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a scratch folder");
    let file = dir.join("rooms.json");
    let _ = std::fs::remove_file(&file);
    let key = server::resume::ResumeKey::new([6; 32]);
    let config = || server::Config {
        room_capacity: 5,
        resume_key: key.clone(),
        rooms_file: Some(file.clone()),
        ..server::Config::default()
    };
    let kept = |file: &std::path::Path| std::fs::read_to_string(file).unwrap_or_default();

    let first = TestServer::start(config()).await;
    let (mut host, mut guest) = host_and_guest(&first, "kept").await;
    let (mut pest, _) =
        knock(&first, "127.0.0.3", json!({"type": "join", "room": "kept", "name": "Pest"})).await;
    host.recv().await; // peer-joined
    guest.recv().await;
    host.send(json!({"type": "moderate", "peer": guest.id, "action": "mute"})).await;
    host.send(json!({"type": "moderate", "peer": pest.id, "action": "remove", "bar": true})).await;
    while pest.recv().await["type"] != "removed" {}
    host.send(json!({"type": "room-settings", "locked": true, "password": "blue kettle"})).await;
    wait_for_file(&file, "the settings written", |s| {
        s.contains("\"locked\":true") && s.contains("127.0.0.3")
    })
    .await;
    assert!(!kept(&file).contains("blue kettle"), "only the hash is kept");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).expect("the file").permissions().mode();
        assert_eq!(mode & 0o077, 0, "readable by its owner only: {mode:o}");
    }
    let mut tokens = Vec::new();
    for c in [&mut host, &mut guest] {
        c.send(json!({"type": "ping"})).await;
        let pong = loop {
            let m = c.recv().await;
            if m["type"] == "pong" {
                break m;
            }
        };
        tokens.push(pong["resume"].as_str().expect("token").to_owned());
    }
    drop((host, guest, pest));
    first.shutdown().await;

    let second = TestServer::start(config()).await;
    let (_, answer) = knock(
        &second,
        "127.0.0.4",
        json!({"type": "join", "room": "kept", "name": "Stranger", "password": "blue kettle"}),
    )
    .await;
    assert_eq!(answer["code"], "room-locked", "still locked after the restart: {answer}");
    let (_, answer) =
        knock(&second, "127.0.0.3", json!({"type": "join", "room": "kept", "name": "Pest"})).await;
    assert_eq!(answer["code"], "barred", "still barred after the restart: {answer}");
    let (mut host, joined) = Client::join_with(
        &second,
        json!({"type": "join", "room": "kept", "name": "Host", "resume": tokens[0]}),
    )
    .await;
    assert_eq!(joined["role"], "host", "{joined}");
    assert_eq!(joined["settings"], json!({"locked": true, "lobby": false, "password": true}));
    let (mut guest, joined) = knock(
        &second,
        "127.0.0.2",
        json!({"type": "join", "room": "kept", "name": "Guest", "resume": tokens[1]}),
    )
    .await;
    assert_eq!(joined["type"], "joined", "{joined}");
    guest.send(json!({"type": "media", "audio": true})).await;
    assert_eq!(guest.recv().await["code"], "held", "the hold holds");

    // The call ends on purpose: nothing is kept for the next one.
    host.send(json!({"type": "end-call"})).await;
    while host.recv().await["type"] != "removed" {}
    wait_for_file(&file, "the ended room forgotten", |s| !s.contains("kept")).await;
    drop(guest);
    let (_, answer) =
        knock(&second, "127.0.0.5", json!({"type": "join", "room": "kept", "name": "Next"})).await;
    assert_eq!(answer["settings"], json!({"locked": false, "lobby": false, "password": false}), "{answer}");
    second.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// Waits (up to 3 s) until the text of `file` satisfies `ok`.
async fn wait_for_file(file: &std::path::Path, what: &str, ok: impl Fn(&str) -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    loop {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        if ok(&text) {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{what}: {text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
