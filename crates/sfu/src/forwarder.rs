//! Who receives what: subscriptions, layers, keyframes, paused layers.

use std::collections::HashMap;
use std::hash::Hash;

use crate::SpeakerDetector;

/// One participant's session with the SFU, as the IO shell numbers them.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct ParticipantId(pub u64);

/// What a track carries. A participant publishes each at most once.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub enum Source {
    /// The microphone.
    Audio,
    /// The camera.
    Camera,
    /// A screen share.
    Screen,
}

impl Source {
    /// All sources, in the order a publisher's tracks are kept.
    pub const ALL: [Source; 3] = [Source::Audio, Source::Camera, Source::Screen];

    fn index(self) -> usize {
        match self {
            Source::Audio => 0,
            Source::Camera => 1,
            Source::Screen => 2,
        }
    }

    /// Whether this source is video (and so has layers worth choosing).
    pub fn is_video(self) -> bool {
        self != Source::Audio
    }
}

/// One published track: whose, and which source.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct TrackKey {
    /// The participant that publishes it.
    pub publisher: ParticipantId,
    /// What it carries.
    pub source: Source,
}

/// A simulcast layer, 0 the lowest. A track without simulcast has one
/// layer, 0.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct Layer(pub u8);

/// The most simulcast layers a track may have.
pub const MAX_LAYERS: u8 = 3;

/// What the forwarder needs to know of the world.
#[derive(Clone, Debug)]
pub struct Config {
    /// The most video tracks one subscriber receives at once (last-N):
    /// screen shares first, then the most recent speakers. Video beyond it
    /// is not forwarded at all.
    pub max_video: usize,
    /// The shortest time between two keyframe requests for one layer of one
    /// track, however many subscribers ask.
    pub keyframe_interval_ms: u64,
    /// The bitrate assumed for each layer, lowest first, in bits per second
    /// (what the client's encodings are set to).
    pub layer_bitrates: [u64; MAX_LAYERS as usize],
    /// The tile height (CSS pixels) each layer is enough for, lowest first:
    /// a subscriber gets the lowest layer whose height covers its tile.
    pub layer_heights: [u32; MAX_LAYERS as usize],
    /// Bits per second kept aside for each audio track a subscriber
    /// receives, before video layers are chosen.
    pub audio_bitrate: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_video: 16,
            keyframe_interval_ms: 500,
            layer_bitrates: [150_000, 500_000, 1_500_000],
            layer_heights: [180, 360, 720],
            audio_bitrate: 40_000,
        }
    }
}

/// What the IO shell must do.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Output<R> {
    /// `subscriber` must start receiving `track` (add a sending m-line to
    /// its session).
    Subscribe {
        /// Who.
        subscriber: ParticipantId,
        /// What.
        track: TrackKey,
    },
    /// `subscriber` stops receiving `track` (stop its m-line).
    Unsubscribe {
        /// Who.
        subscriber: ParticipantId,
        /// What.
        track: TrackKey,
    },
    /// Ask the publisher of `track` for a keyframe on `layer`.
    RequestKeyframe {
        /// Which track.
        track: TrackKey,
        /// Which of its layers.
        layer: Layer,
    },
    /// Tell the publisher which layers of `track` anybody receives; the
    /// others should be paused at the encoder (dynacast). Bit `n` of
    /// `active` is layer `n`.
    SetLayers {
        /// Which track.
        track: TrackKey,
        /// The layers in use, as a bit set.
        active: u8,
    },
    /// The loudest participant of `room` changed.
    Speaker {
        /// Which room.
        room: R,
        /// Who speaks now.
        speaker: ParticipantId,
    },
}

#[derive(Debug)]
struct Track {
    /// How many layers it has (1 without simulcast).
    layers: u8,
    /// The layers last announced with [`Output::SetLayers`].
    active: u8,
    /// When a keyframe was last requested, per layer.
    last_keyframe_request: [Option<u64>; MAX_LAYERS as usize],
}

#[derive(Debug)]
struct Subscription {
    track: TrackKey,
    /// The layer being forwarded now.
    current: Option<Layer>,
    /// The layer this subscriber should get; forwarding moves from
    /// `current` to it at the next keyframe of that layer.
    target: Option<Layer>,
}

#[derive(Debug)]
struct Participant<R> {
    room: R,
    tracks: [Option<Track>; 3],
    subscriptions: Vec<Subscription>,
    /// The estimated bandwidth towards this participant, if known.
    bandwidth: Option<u64>,
    /// Tile heights this participant shows publishers at (0: not shown).
    tiles: Vec<(ParticipantId, u32)>,
}

#[derive(Debug, Default)]
struct Room {
    /// Members, most recent speaker first, then in order of joining.
    order: Vec<ParticipantId>,
    speaker: SpeakerDetector,
}

/// The SFU's forwarding decisions, for every room. See the crate docs.
#[derive(Debug)]
pub struct Forwarder<R> {
    config: Config,
    participants: HashMap<ParticipantId, Participant<R>>,
    rooms: HashMap<R, Room>,
    /// Who subscribes to each track: the fast path's index.
    subscribers: HashMap<TrackKey, Vec<ParticipantId>>,
    /// What [`Forwarder::forward`] returns; reused.
    scratch: Vec<ParticipantId>,
    outputs: std::collections::VecDeque<Output<R>>,
}

impl<R: Clone + Eq + Hash + std::fmt::Debug> Forwarder<R> {
    /// An empty forwarder.
    pub fn new(config: Config) -> Self {
        Forwarder {
            config,
            participants: HashMap::new(),
            rooms: HashMap::new(),
            subscribers: HashMap::new(),
            scratch: Vec::new(),
            outputs: std::collections::VecDeque::new(),
        }
    }

    /// The next thing to do, if any. Drain after every input.
    pub fn poll_output(&mut self) -> Option<Output<R>> {
        self.outputs.pop_front()
    }

    /// Participants in all rooms.
    pub fn participant_count(&self) -> usize {
        self.participants.len()
    }

    /// Rooms with at least one participant.
    pub fn room_count(&self) -> usize {
        self.rooms.len()
    }

    /// The room `participant` is in.
    pub fn room_of(&self, participant: ParticipantId) -> Option<&R> {
        self.participants.get(&participant).map(|p| &p.room)
    }

    /// Members of `room`, most recent speaker first.
    pub fn members(&self, room: &R) -> &[ParticipantId] {
        self.rooms.get(room).map_or(&[], |r| &r.order)
    }

    /// `participant` joins `room`; it subscribes to every track published
    /// there. Joining again (another room, or the same) leaves first.
    pub fn join(&mut self, now_ms: u64, participant: ParticipantId, room: R) {
        self.leave(participant);
        self.rooms.entry(room.clone()).or_default().order.push(participant);
        let tracks: Vec<TrackKey> = self.rooms[&room]
            .order
            .iter()
            .filter(|p| **p != participant)
            .flat_map(|p| self.published(*p))
            .collect();
        self.participants.insert(
            participant,
            Participant {
                room,
                tracks: [None, None, None],
                subscriptions: Vec::new(),
                bandwidth: None,
                tiles: Vec::new(),
            },
        );
        for track in tracks {
            self.subscribe(participant, track);
        }
        self.choose_layers(now_ms, participant);
    }

    /// `participant` leaves its room: its tracks stop for everyone.
    pub fn leave(&mut self, participant: ParticipantId) {
        let Some(p) = self.participants.remove(&participant) else { return };
        for sub in &p.subscriptions {
            self.unindex(sub.track, participant);
        }
        let mut published = Vec::new();
        for source in Source::ALL {
            if p.tracks[source.index()].is_some() {
                published.push(TrackKey { publisher: participant, source });
            }
        }
        for track in published {
            self.drop_track(track);
        }
        if let Some(room) = self.rooms.get_mut(&p.room) {
            room.order.retain(|m| *m != participant);
            room.speaker.remove(participant);
            if room.order.is_empty() {
                self.rooms.remove(&p.room);
            }
        }
    }

    /// `participant` publishes `source` with `layers` simulcast layers
    /// (1 without simulcast); everyone else in its room subscribes.
    /// Publishing a source again replaces the track.
    pub fn publish(&mut self, now_ms: u64, participant: ParticipantId, source: Source, layers: u8) {
        let Some(p) = self.participants.get_mut(&participant) else { return };
        let layers = layers.clamp(1, MAX_LAYERS);
        let track = TrackKey { publisher: participant, source };
        let had = p.tracks[source.index()].is_some();
        p.tracks[source.index()] =
            Some(Track { layers, active: all_layers(layers), last_keyframe_request: [None; 3] });
        let room = p.room.clone();
        if had {
            // Subscribers keep their m-line; only layers are chosen again.
            for sub in self.subscribers.get(&track).cloned().unwrap_or_default() {
                self.choose_layers(now_ms, sub);
            }
            return;
        }
        let others: Vec<ParticipantId> =
            self.members(&room).iter().copied().filter(|m| *m != participant).collect();
        for other in others {
            self.subscribe(other, track);
            self.choose_layers(now_ms, other);
        }
        self.update_active(track);
    }

    /// `participant` stops publishing `source`.
    pub fn unpublish(&mut self, participant: ParticipantId, source: Source) {
        let Some(p) = self.participants.get_mut(&participant) else { return };
        if p.tracks[source.index()].take().is_some() {
            self.drop_track(TrackKey { publisher: participant, source });
        }
    }

    /// A bandwidth estimate towards `subscriber` (bits per second).
    pub fn set_bandwidth(&mut self, now_ms: u64, subscriber: ParticipantId, bps: u64) {
        let Some(p) = self.participants.get_mut(&subscriber) else { return };
        if p.bandwidth == Some(bps) {
            return;
        }
        p.bandwidth = Some(bps);
        self.choose_layers(now_ms, subscriber);
    }

    /// The height `subscriber` shows `publisher`'s video at, in CSS pixels
    /// (0: not shown, so not sent).
    pub fn set_tile(
        &mut self,
        now_ms: u64,
        subscriber: ParticipantId,
        publisher: ParticipantId,
        height: u32,
    ) {
        let Some(p) = self.participants.get_mut(&subscriber) else { return };
        match p.tiles.iter_mut().find(|(who, _)| *who == publisher) {
            Some((_, h)) if *h == height => return,
            Some((_, h)) => *h = height,
            None => p.tiles.push((publisher, height)),
        }
        self.choose_layers(now_ms, subscriber);
    }

    /// `speaker` became the loudest in its room: it moves to the front of
    /// the last-N order, and the room hears of it.
    pub fn set_speaker(&mut self, now_ms: u64, speaker: ParticipantId) {
        let Some(room) = self.room_of(speaker).cloned() else { return };
        let Some(r) = self.rooms.get_mut(&room) else { return };
        if r.order.first() == Some(&speaker) {
            return;
        }
        r.order.retain(|m| *m != speaker);
        r.order.insert(0, speaker);
        let members = r.order.clone();
        self.outputs.push_back(Output::Speaker { room, speaker });
        for member in members {
            self.choose_layers(now_ms, member);
        }
    }

    /// One audio packet of `participant`'s, with its level (RFC 6464:
    /// 0 loudest, 127 silence).
    pub fn audio_level(&mut self, participant: ParticipantId, level: u8) {
        let Some(room) = self.participants.get(&participant).map(|p| &p.room) else { return };
        if let Some(r) = self.rooms.get_mut(room) {
            r.speaker.level(participant, level);
        }
    }

    /// Ends a speaker-detection window in every room (call every few
    /// hundred milliseconds); new speakers are announced.
    pub fn speaker_window(&mut self, now_ms: u64) {
        let changed: Vec<ParticipantId> =
            self.rooms.values_mut().filter_map(|r| r.speaker.window()).collect();
        for speaker in changed {
            self.set_speaker(now_ms, speaker);
        }
    }

    /// A subscriber asked for a keyframe of `track` (a PLI or FIR on its
    /// m-line): asked of the publisher for the layer it gets, at most once
    /// per [`Config::keyframe_interval_ms`] and layer.
    pub fn keyframe_requested(&mut self, now_ms: u64, subscriber: ParticipantId, track: TrackKey) {
        let layer = self
            .participants
            .get(&subscriber)
            .and_then(|p| p.subscriptions.iter().find(|s| s.track == track))
            .and_then(|s| s.target.or(s.current));
        if let Some(layer) = layer {
            self.request_keyframe(now_ms, track, layer);
        }
    }

    /// A frame of `track`'s `layer` arrived: the subscribers to send it to.
    /// A subscriber waiting to move to `layer` moves at its keyframes; while
    /// one waits, the publisher is asked for a keyframe again (rate-limited),
    /// since an earlier request may have been lost.
    pub fn forward(
        &mut self,
        now_ms: u64,
        track: TrackKey,
        layer: Layer,
        keyframe: bool,
    ) -> &[ParticipantId] {
        self.scratch.clear();
        let Some(subs) = self.subscribers.get(&track) else { return &self.scratch };
        let mut waiting = false;
        for who in subs {
            let Some(p) = self.participants.get_mut(who) else { continue };
            let Some(sub) = p.subscriptions.iter_mut().find(|s| s.track == track) else { continue };
            if sub.target == Some(layer) && sub.current != Some(layer) {
                if keyframe {
                    sub.current = Some(layer);
                } else {
                    waiting = true;
                }
            }
            if sub.current == Some(layer) {
                self.scratch.push(*who);
            }
        }
        if waiting {
            self.request_keyframe(now_ms, track, layer);
        }
        &self.scratch
    }

    /// The layer `subscriber` receives of `track` now, if any.
    pub fn current_layer(&self, subscriber: ParticipantId, track: TrackKey) -> Option<Layer> {
        self.participants.get(&subscriber)?.subscriptions.iter().find(|s| s.track == track)?.current
    }

    /// The tracks `participant` publishes.
    fn published(&self, participant: ParticipantId) -> Vec<TrackKey> {
        let Some(p) = self.participants.get(&participant) else { return Vec::new() };
        Source::ALL
            .into_iter()
            .filter(|s| p.tracks[s.index()].is_some())
            .map(|source| TrackKey { publisher: participant, source })
            .collect()
    }

    fn subscribe(&mut self, subscriber: ParticipantId, track: TrackKey) {
        let Some(p) = self.participants.get_mut(&subscriber) else { return };
        if p.subscriptions.iter().any(|s| s.track == track) {
            return;
        }
        let audio = !track.source.is_video();
        // Audio is always forwarded, from its first packet; video waits for
        // a keyframe of the layer chosen for it.
        let layer = audio.then_some(Layer(0));
        p.subscriptions.push(Subscription { track, current: layer, target: layer });
        self.subscribers.entry(track).or_default().push(subscriber);
        self.outputs.push_back(Output::Subscribe { subscriber, track });
    }

    fn unindex(&mut self, track: TrackKey, subscriber: ParticipantId) {
        if let Some(subs) = self.subscribers.get_mut(&track) {
            subs.retain(|s| *s != subscriber);
            if subs.is_empty() {
                self.subscribers.remove(&track);
            }
        }
        self.update_active(track);
    }

    /// Everyone stops receiving `track`, which is gone.
    fn drop_track(&mut self, track: TrackKey) {
        for subscriber in self.subscribers.remove(&track).unwrap_or_default() {
            if let Some(p) = self.participants.get_mut(&subscriber) {
                p.subscriptions.retain(|s| s.track != track);
            }
            self.outputs.push_back(Output::Unsubscribe { subscriber, track });
        }
    }

    /// Chooses the layer of every video track `subscriber` receives: at
    /// most [`Config::max_video`] of them (screens first, then recent
    /// speakers), each the lowest layer that covers its tile, then lowered
    /// (least important first) until they fit the bandwidth estimate.
    fn choose_layers(&mut self, now_ms: u64, subscriber: ParticipantId) {
        let Some(p) = self.participants.get(&subscriber) else { return };
        let order = self.members(&p.room);
        let rank = |t: &TrackKey| {
            let speaker_rank = order.iter().position(|m| *m == t.publisher).unwrap_or(usize::MAX);
            (t.source != Source::Screen, speaker_rank)
        };
        let mut video: Vec<(TrackKey, u8)> = p
            .subscriptions
            .iter()
            .filter(|s| s.track.source.is_video())
            .map(|s| (s.track, self.layers_of(s.track)))
            .collect();
        video.sort_by_key(|(t, _)| rank(t));
        let audio_tracks = p.subscriptions.len() - video.len();
        let budget = p
            .bandwidth
            .map_or(u64::MAX, |b| b.saturating_sub(self.config.audio_bitrate * audio_tracks as u64));

        // The wanted layer of each, by tile size; None for tiles not shown
        // and for tracks beyond last-N.
        let mut wanted: Vec<(TrackKey, Option<u8>)> = video
            .iter()
            .enumerate()
            .map(|(i, &(track, layers))| {
                if i >= self.config.max_video {
                    return (track, None);
                }
                let height = p.tiles.iter().find(|(who, _)| *who == track.publisher).map(|(_, h)| *h);
                let layer = match height {
                    Some(0) => return (track, None),
                    // Not reported: as good as we can afford.
                    None => layers - 1,
                    Some(h) => {
                        let fit = self.config.layer_heights.iter().position(|lh| *lh >= h);
                        fit.map_or(layers - 1, |l| u8::try_from(l).unwrap_or(0).min(layers - 1))
                    }
                };
                (track, Some(layer))
            })
            .collect();

        // Lower the least important first until the sum fits; a track that
        // no longer fits even at layer 0 is not sent at all.
        let cost = |w: &[(TrackKey, Option<u8>)]| -> u64 {
            w.iter().filter_map(|(_, l)| l.map(|l| self.config.layer_bitrates[usize::from(l)])).sum()
        };
        while cost(&wanted) > budget {
            if let Some(slot) = wanted.iter_mut().rev().find(|(_, l)| matches!(l, Some(l) if *l > 0)) {
                slot.1 = slot.1.map(|l| l - 1);
            } else if let Some(slot) = wanted.iter_mut().rev().find(|(_, l)| l.is_some()) {
                slot.1 = None;
            } else {
                break;
            }
        }

        let mut requests = Vec::new();
        let mut changed = Vec::new();
        if let Some(p) = self.participants.get_mut(&subscriber) {
            for (track, layer) in wanted {
                let Some(sub) = p.subscriptions.iter_mut().find(|s| s.track == track) else { continue };
                let target = layer.map(Layer);
                if sub.target == target {
                    continue;
                }
                sub.target = target;
                changed.push(track);
                match target {
                    None => sub.current = None,
                    Some(l) if sub.current != Some(l) => requests.push((track, l)),
                    Some(_) => {}
                }
            }
        }
        for track in changed {
            self.update_active(track);
        }
        for (track, layer) in requests {
            self.request_keyframe(now_ms, track, layer);
        }
    }

    fn layers_of(&self, track: TrackKey) -> u8 {
        self.participants
            .get(&track.publisher)
            .and_then(|p| p.tracks[track.source.index()].as_ref())
            .map_or(1, |t| t.layers)
    }

    /// Asks the publisher of `track` for a keyframe of `layer` (frames
    /// were lost on the way in), at most once per
    /// [`Config::keyframe_interval_ms`].
    pub fn request_keyframe(&mut self, now_ms: u64, track: TrackKey, layer: Layer) {
        let interval = self.config.keyframe_interval_ms;
        let Some(t) =
            self.participants.get_mut(&track.publisher).and_then(|p| p.tracks[track.source.index()].as_mut())
        else {
            return;
        };
        let Some(last) = t.last_keyframe_request.get_mut(usize::from(layer.0)) else { return };
        if last.is_some_and(|at| now_ms.saturating_sub(at) < interval) {
            return;
        }
        *last = Some(now_ms);
        self.outputs.push_back(Output::RequestKeyframe { track, layer });
    }

    /// Announces the layers of `track` that some subscriber targets or
    /// still receives, when that set changed.
    fn update_active(&mut self, track: TrackKey) {
        if !track.source.is_video() {
            return;
        }
        let mut active = 0u8;
        for who in self.subscribers.get(&track).map_or(&[][..], Vec::as_slice) {
            let Some(sub) =
                self.participants.get(who).and_then(|p| p.subscriptions.iter().find(|s| s.track == track))
            else {
                continue;
            };
            for layer in [sub.current, sub.target].into_iter().flatten() {
                active |= 1 << layer.0;
            }
        }
        let Some(t) =
            self.participants.get_mut(&track.publisher).and_then(|p| p.tracks[track.source.index()].as_mut())
        else {
            return;
        };
        if t.active != active {
            t.active = active;
            self.outputs.push_back(Output::SetLayers { track, active });
        }
    }

    /// Checks the forwarder's own bookkeeping; for tests.
    #[doc(hidden)]
    pub fn check_invariants(&self) {
        for (track, subs) in &self.subscribers {
            assert!(!subs.is_empty(), "empty subscriber list kept for {track:?}");
            let publisher = self.participants.get(&track.publisher).expect("publisher of a subscribed track");
            assert!(publisher.tracks[track.source.index()].is_some(), "{track:?} is published");
            for s in subs {
                let p = self.participants.get(s).expect("subscriber exists");
                assert_eq!(p.room, publisher.room, "subscriptions stay inside a room");
                assert!(p.subscriptions.iter().any(|x| x.track == *track));
            }
        }
        for (id, p) in &self.participants {
            assert!(self.rooms[&p.room].order.contains(id));
            for s in &p.subscriptions {
                assert_ne!(s.track.publisher, *id, "nobody receives their own tracks");
                assert!(self.subscribers[&s.track].contains(id));
            }
        }
    }
}

fn all_layers(layers: u8) -> u8 {
    (1u8 << layers) - 1
}

#[cfg(test)]
mod tests {
    //! Data-driven: a script of inputs (`> ` lines), each followed by
    //! exactly the outputs it must produce. Participants are letters, tracks
    //! `<letter>.<a|c|s>` (audio, camera, screen).

    use super::*;

    fn pid(s: &str) -> ParticipantId {
        ParticipantId(u64::from(s.as_bytes()[0]))
    }

    fn letter(p: ParticipantId) -> char {
        char::from(u8::try_from(p.0).expect("letter"))
    }

    fn source(s: &str) -> Source {
        match s {
            "a" => Source::Audio,
            "c" => Source::Camera,
            "s" => Source::Screen,
            _ => panic!("source {s}"),
        }
    }

    fn track(s: &str) -> TrackKey {
        let (p, src) = s.split_once('.').expect("<p>.<source>");
        TrackKey { publisher: pid(p), source: source(src) }
    }

    fn show(t: TrackKey) -> String {
        let s = match t.source {
            Source::Audio => 'a',
            Source::Camera => 'c',
            Source::Screen => 's',
        };
        format!("{}.{s}", letter(t.publisher))
    }

    fn render(o: Output<&'static str>) -> String {
        match o {
            Output::Subscribe { subscriber, track } => format!("{} +{}", letter(subscriber), show(track)),
            Output::Unsubscribe { subscriber, track } => format!("{} -{}", letter(subscriber), show(track)),
            Output::RequestKeyframe { track, layer } => format!("keyframe {} L{}", show(track), layer.0),
            Output::SetLayers { track, active } => format!("layers {} {active:03b}", show(track)),
            Output::Speaker { room, speaker } => format!("speaker {room} {}", letter(speaker)),
        }
    }

    /// Script lines: `join <p> <room>`, `leave <p>`, `publish <p> <a|c|s>
    /// [layers]`, `unpublish <p> <a|c|s>`, `bw <p> <bps>`, `tile <sub>
    /// <pub> <height>`, `pli <sub> <track>`, `frame <track> L<n> [key]`
    /// (outputs the receivers as `-> a b`, or `-> nobody`), `speak <p>`, `t=<ms>` sets the
    /// clock.
    fn check(config: Config, script: &str) {
        let mut f: Forwarder<&'static str> = Forwarder::new(config);
        let mut now = 0;
        let mut transcript = String::new();
        let lines: Vec<&str> = script.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
        for line in &lines {
            let Some(input) = line.strip_prefix("> ") else { continue };
            transcript.push_str(line);
            transcript.push('\n');
            let w: Vec<&str> = input.split_whitespace().collect();
            match w.as_slice() {
                ["t", ms] => now = ms.parse().expect("ms"),
                ["join", p, room] => f.join(now, pid(p), if *room == "r" { "r" } else { "s" }),
                ["leave", p] => f.leave(pid(p)),
                ["publish", p, s] => f.publish(now, pid(p), source(s), 1),
                ["publish", p, s, n] => f.publish(now, pid(p), source(s), n.parse().expect("layers")),
                ["unpublish", p, s] => f.unpublish(pid(p), source(s)),
                ["bw", p, bps] => f.set_bandwidth(now, pid(p), bps.parse().expect("bps")),
                ["tile", s, p, h] => f.set_tile(now, pid(s), pid(p), h.parse().expect("height")),
                ["pli", s, t] => f.keyframe_requested(now, pid(s), track(t)),
                ["speak", p] => f.set_speaker(now, pid(p)),
                ["frame", t, l, rest @ ..] => {
                    let layer = Layer(l.trim_start_matches('L').parse().expect("L<n>"));
                    let to: Vec<String> = f
                        .forward(now, track(t), layer, rest == ["key"])
                        .iter()
                        .map(|p| letter(*p).to_string())
                        .collect();
                    let to = if to.is_empty() { "nobody".to_owned() } else { to.join(" ") };
                    transcript.push_str(&format!("-> {to}\n"));
                }
                _ => panic!("bad line {line}"),
            }
            while let Some(o) = f.poll_output() {
                transcript.push_str(&render(o));
                transcript.push('\n');
            }
            f.check_invariants();
        }
        let expected: String = lines.iter().map(|l| format!("{l}\n")).collect();
        assert_eq!(transcript, expected);
    }

    #[test]
    fn everyone_gets_everyone_elses_tracks_and_only_in_their_room() {
        check(
            Config::default(),
            "
            > join a r
            > publish a a
            > publish a c
            layers a.c 000
            > join b r
            b +a.a
            b +a.c
            layers a.c 001
            keyframe a.c L0
            > publish b c
            a +b.c
            keyframe b.c L0
            > join x s
            > publish x c
            layers x.c 000
            > frame a.a L0
            -> b
            > frame a.c L0
            -> nobody
            > frame a.c L0 key
            -> b
            > frame a.c L0
            -> b
            > frame x.c L0 key
            -> nobody
            > leave a
            layers b.c 000
            b -a.a
            b -a.c
            ",
        );
    }

    #[test]
    fn tracks_start_and_stop_with_their_publisher() {
        check(
            Config::default(),
            "
            > join a r
            > join b r
            > join c r
            > publish a s
            b +a.s
            keyframe a.s L0
            c +a.s
            > unpublish a s
            b -a.s
            c -a.s
            > publish a s
            b +a.s
            keyframe a.s L0
            c +a.s
            > frame a.s L0 key
            -> b c
            > leave c
            ",
        );
    }

    #[test]
    fn keyframe_requests_are_rate_limited_per_layer() {
        check(
            Config::default(),
            "
            > join a r
            > publish a c
            layers a.c 000
            > join b r
            b +a.c
            layers a.c 001
            keyframe a.c L0
            > join c r
            c +a.c
            > pli b a.c
            > t 499
            > pli c a.c
            > t 500
            > pli c a.c
            keyframe a.c L0
            > pli c b.c
            ",
        );
    }

    #[test]
    fn a_subscriber_waiting_for_a_keyframe_asks_again_when_frames_come_without_one() {
        check(
            Config::default(),
            "
            > join a r
            > publish a c
            layers a.c 000
            > join b r
            b +a.c
            layers a.c 001
            keyframe a.c L0
            > t 100
            > frame a.c L0
            -> nobody
            > t 600
            > frame a.c L0
            -> nobody
            keyframe a.c L0
            > frame a.c L0 key
            -> b
            > t 2000
            > frame a.c L0
            -> b
            ",
        );
    }

    #[test]
    fn layers_follow_tile_size_and_switch_at_a_keyframe() {
        check(
            Config::default(),
            "
            > join a r
            > publish a c 3
            layers a.c 000
            > join b r
            b +a.c
            layers a.c 100
            keyframe a.c L2
            > frame a.c L2 key
            -> b
            > tile b a 120
            layers a.c 101
            keyframe a.c L0
            > frame a.c L2
            -> b
            > frame a.c L0
            -> nobody
            > frame a.c L0 key
            -> b
            > frame a.c L2
            -> nobody
            > tile b a 0
            layers a.c 000
            > frame a.c L0 key
            -> nobody
            > t 1000
            > tile b a 300
            layers a.c 010
            keyframe a.c L1
            ",
        );
    }

    #[test]
    fn low_bandwidth_lowers_the_least_important_first_and_then_drops_video() {
        check(
            Config::default(),
            "
            > join a r
            > join b r
            > join c r
            > publish a c 3
            b +a.c
            layers a.c 100
            keyframe a.c L2
            c +a.c
            > publish b c 3
            a +b.c
            layers b.c 100
            keyframe b.c L2
            c +b.c
            > t 1000
            > bw c 2000000
            layers b.c 110
            keyframe b.c L1
            > frame b.c L1 key
            -> c
            > t 2000
            > bw c 700000
            layers a.c 110
            layers b.c 111
            keyframe a.c L1
            keyframe b.c L0
            > t 3000
            > speak b
            speaker r b
            layers b.c 110
            layers a.c 101
            keyframe a.c L0
            > bw c 200000
            layers b.c 111
            layers a.c 100
            keyframe b.c L0
            > bw c 10000000
            layers b.c 110
            keyframe b.c L2
            keyframe a.c L2
            ",
        );
    }

    #[test]
    fn last_n_forwards_the_recent_speakers_video_and_screens_first() {
        check(
            Config { max_video: 1, ..Config::default() },
            "
            > join a r
            > join b r
            > join c r
            > publish a c
            b +a.c
            keyframe a.c L0
            c +a.c
            > publish b c
            a +b.c
            keyframe b.c L0
            c +b.c
            > t 1000
            > speak b
            speaker r b
            keyframe b.c L0
            > t 2000
            > publish a s
            b +a.s
            layers a.c 000
            keyframe a.s L0
            c +a.s
            ",
        );
    }
}
