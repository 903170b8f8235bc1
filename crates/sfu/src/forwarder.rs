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
    /// (what the client's encodings are set to), until the layer's real
    /// rate has been measured from its frames.
    pub layer_bitrates: [u64; MAX_LAYERS as usize],
    /// The tile height (CSS pixels) each layer is enough for, lowest first:
    /// a subscriber gets the lowest layer whose height covers its tile.
    pub layer_heights: [u32; MAX_LAYERS as usize],
    /// Bits per second kept aside for each audio track a subscriber
    /// receives, before video layers are chosen.
    pub audio_bitrate: u64,
    /// A video track that sent no frame for this long, though some of its
    /// layers are wanted, is off at its source (camera off, no screen
    /// shared): it takes no place in last-N and no bandwidth until frames
    /// come again.
    pub silent_after_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_video: 16,
            keyframe_interval_ms: 500,
            layer_bitrates: [150_000, 500_000, 1_500_000],
            layer_heights: [180, 360, 720],
            audio_bitrate: 40_000,
            silent_after_ms: 2_000,
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
    /// When its last frame arrived.
    last_frame_ms: Option<u64>,
    /// When each layer's last frame arrived.
    layer_frame_ms: [Option<u64>; MAX_LAYERS as usize],
    /// Each layer's measured bitrate.
    rates: [LayerRate; MAX_LAYERS as usize],
    /// Whether it counted as sending at the last choice of layers.
    sending: bool,
}

/// How fast one layer arrives, measured over windows of a second.
#[derive(Debug, Default, Clone, Copy)]
struct LayerRate {
    window_start_ms: u64,
    bytes: u64,
    /// Bits per second over the last whole window, and when it ended.
    measured: Option<(u64, u64)>,
}

/// A measurement older than this no longer stands for the layer.
const RATE_STALE_MS: u64 = 3_000;

/// A layer whose last frame is older than this is not flowing (paused at
/// the publisher, or not encoded at all).
const FLOWING_MS: u64 = 1_000;

impl LayerRate {
    fn add(&mut self, now_ms: u64, bytes: usize) {
        let elapsed = now_ms.saturating_sub(self.window_start_ms);
        if elapsed >= 1_000 {
            if self.bytes > 0 {
                self.measured = Some((self.bytes * 8 * 1_000 / elapsed, now_ms));
            }
            self.window_start_ms = now_ms;
            self.bytes = 0;
        }
        self.bytes = self.bytes.saturating_add(bytes as u64);
    }

    fn bps(&self, now_ms: u64) -> Option<u64> {
        self.measured.filter(|(_, at)| now_ms.saturating_sub(*at) < RATE_STALE_MS).map(|(bps, _)| bps)
    }
}

#[derive(Debug)]
struct Subscription {
    track: TrackKey,
    /// The layer being forwarded now.
    current: Option<Layer>,
    /// The layer this subscriber should get; forwarding moves from
    /// `current` to it at the next keyframe of that layer.
    target: Option<Layer>,
    /// Whether the subscriber's side can take frames (its m-line is
    /// negotiated and its session connected): until then nothing is sent,
    /// and no keyframe is asked for on its behalf.
    ready: bool,
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
    /// What the chosen layers cost, and what the wanted ones would, in
    /// bits per second (see [`Forwarder::bitrates`]).
    bitrates: (u64, u64),
}

#[derive(Debug, Default)]
struct Room {
    /// Members, most recent speaker first, then in order of joining.
    order: Vec<ParticipantId>,
    speaker: SpeakerDetector,
    /// The speaker last announced to the room.
    announced: Option<ParticipantId>,
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
        let room_key = room.clone();
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
                bitrates: (0, 0),
            },
        );
        for track in tracks {
            self.subscribe(participant, track);
        }
        self.choose_layers(now_ms, participant);
        // A newcomer learns who is speaking (the others hear it again).
        if let Some(speaker) = self.rooms.get(&room_key).and_then(|r| r.announced) {
            self.outputs.push_back(Output::Speaker { room: room_key, speaker });
        }
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
            if room.announced == Some(participant) {
                room.announced = None;
            }
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
        p.tracks[source.index()] = Some(Track {
            layers,
            active: all_layers(layers),
            last_keyframe_request: [None; 3],
            last_frame_ms: None,
            layer_frame_ms: [None; 3],
            rates: [LayerRate::default(); 3],
            sending: false,
        });
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
        // Announced when it changes: the first member to join is first in
        // the order before anyone spoke, and must still be announced.
        if r.announced == Some(speaker) {
            return;
        }
        r.announced = Some(speaker);
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

    /// A frame of `track`'s `layer` arrived, `bytes` long: the subscribers
    /// to send it to.
    /// A subscriber waiting to move to `layer` moves at its keyframes; while
    /// one waits, the publisher is asked for a keyframe again (rate-limited),
    /// since an earlier request may have been lost.
    pub fn forward(
        &mut self,
        now_ms: u64,
        track: TrackKey,
        layer: Layer,
        keyframe: bool,
        bytes: usize,
    ) -> &[ParticipantId] {
        self.scratch.clear();
        // A video track that starts sending again competes for last-N and
        // bandwidth from now on.
        let woke = self.track_mut(track).is_some_and(|t| {
            t.last_frame_ms = Some(now_ms);
            if let Some(at) = t.layer_frame_ms.get_mut(usize::from(layer.0)) {
                *at = Some(now_ms);
            }
            if let Some(rate) = t.rates.get_mut(usize::from(layer.0)) {
                rate.add(now_ms, bytes);
            }
            !t.sending && track.source.is_video()
        });
        if woke {
            for sub in self.subscribers.get(&track).cloned().unwrap_or_default() {
                self.choose_layers(now_ms, sub);
            }
        }
        let Some(subs) = self.subscribers.get(&track) else { return &self.scratch };
        let mut waiting = false;
        for who in subs {
            let Some(p) = self.participants.get_mut(who) else { continue };
            let Some(sub) = p.subscriptions.iter_mut().find(|s| s.track == track) else { continue };
            if !sub.ready {
                continue;
            }
            // Nothing shown yet: a keyframe of a lower layer starts the
            // picture now; the target's keyframe brings the right size.
            if keyframe && sub.current.is_none() && sub.target.is_some_and(|t| layer < t) {
                sub.current = Some(layer);
            }
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

    /// `subscriber` can now take `track`'s frames (its m-line is
    /// negotiated and its session connected): the publisher is asked for a
    /// keyframe of the chosen layer.
    pub fn set_ready(&mut self, now_ms: u64, subscriber: ParticipantId, track: TrackKey) {
        let Some(p) = self.participants.get_mut(&subscriber) else { return };
        let Some(sub) = p.subscriptions.iter_mut().find(|s| s.track == track) else { return };
        if sub.ready {
            return;
        }
        sub.ready = true;
        let (true, Some(layer)) = (track.source.is_video(), sub.target) else { return };
        self.request_keyframe(now_ms, track, layer);
        // The chosen layer may be paused at the publisher (nobody got it
        // until now) and take a while to come: the best lower layer that
        // is flowing starts the picture sooner.
        let flowing = |t: &Track, l: u8| {
            t.layer_frame_ms[usize::from(l)].is_some_and(|at| now_ms.saturating_sub(at) < FLOWING_MS)
        };
        let Some(t) =
            self.participants.get(&track.publisher).and_then(|p| p.tracks[track.source.index()].as_ref())
        else {
            return;
        };
        if !flowing(t, layer.0)
            && let Some(lower) = (0..layer.0).rev().find(|l| flowing(t, *l))
        {
            self.request_keyframe(now_ms, track, Layer(lower));
        }
    }

    /// A keyframe request could not be sent (the publisher's session was
    /// not connected yet): the next one may go at once.
    pub fn keyframe_request_failed(&mut self, track: TrackKey, layer: Layer) {
        if let Some(t) = self.track_mut(track)
            && let Some(last) = t.last_keyframe_request.get_mut(usize::from(layer.0))
        {
            *last = None;
        }
    }

    /// What the layers chosen for `subscriber` cost, and what the layers
    /// it would want with unlimited bandwidth would, in bits per second:
    /// the IO shell has its bandwidth estimator probe towards the latter.
    pub fn bitrates(&self, subscriber: ParticipantId) -> Option<(u64, u64)> {
        self.participants.get(&subscriber).map(|p| p.bitrates)
    }

    /// Moves time on: video tracks that stopped sending free their place
    /// (see [`Config::silent_after_ms`]), and each room's speaker window
    /// ends. Call every few hundred milliseconds.
    pub fn tick(&mut self, now_ms: u64) {
        let silent_after = self.config.silent_after_ms;
        let mut fell_silent = Vec::new();
        for (id, p) in &self.participants {
            for source in Source::ALL {
                let Some(t) = &p.tracks[source.index()] else { continue };
                if t.sending && !is_sending(t, now_ms, silent_after) {
                    fell_silent.push(TrackKey { publisher: *id, source });
                }
            }
        }
        for track in fell_silent {
            for sub in self.subscribers.get(&track).cloned().unwrap_or_default() {
                self.choose_layers(now_ms, sub);
            }
        }
        let changed: Vec<ParticipantId> =
            self.rooms.values_mut().filter_map(|r| r.speaker.window()).collect();
        for speaker in changed {
            self.set_speaker(now_ms, speaker);
        }
    }

    fn track_mut(&mut self, track: TrackKey) -> Option<&mut Track> {
        self.participants.get_mut(&track.publisher).and_then(|p| p.tracks[track.source.index()].as_mut())
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
        p.subscriptions.push(Subscription { track, current: layer, target: layer, ready: false });
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
    /// Video that is off at its source (see [`Config::silent_after_ms`])
    /// takes no place and no bandwidth, but keeps the layer its tile wants,
    /// so its first frames flow when it comes on.
    fn choose_layers(&mut self, now_ms: u64, subscriber: ParticipantId) {
        let Some(p) = self.participants.get(&subscriber) else { return };
        let order = self.members(&p.room);
        let silent_after = self.config.silent_after_ms;
        let rank = |t: &TrackKey, on: bool| {
            let speaker_rank = order.iter().position(|m| *m == t.publisher).unwrap_or(usize::MAX);
            (!on, t.source != Source::Screen, speaker_rank)
        };
        // (track, its layer count, whether it is sending), and what each
        // layer costs: as measured, or as configured until measured.
        let mut costs: Vec<(TrackKey, [u64; MAX_LAYERS as usize])> = Vec::new();
        let mut video: Vec<(TrackKey, u8, bool)> = p
            .subscriptions
            .iter()
            .filter(|s| s.track.source.is_video())
            .filter_map(|s| {
                let t = self.participants.get(&s.track.publisher)?.tracks[s.track.source.index()].as_ref()?;
                let mut cost = self.config.layer_bitrates;
                for (c, rate) in cost.iter_mut().zip(&t.rates) {
                    *c = rate.bps(now_ms).unwrap_or(*c);
                }
                costs.push((s.track, cost));
                Some((s.track, t.layers, is_sending(t, now_ms, silent_after)))
            })
            .collect();
        video.sort_by_key(|(t, _, on)| rank(t, *on));
        let audio = self.config.audio_bitrate * (p.subscriptions.len() - video.len()) as u64;
        let budget = p.bandwidth.map_or(u64::MAX, |b| b.saturating_sub(audio));

        // The wanted layer of each, by tile size; None for tiles not shown
        // and for sending tracks beyond last-N.
        let mut wanted: Vec<(TrackKey, Option<u8>, bool)> = video
            .iter()
            .enumerate()
            .map(|(i, &(track, layers, on))| {
                if on && i >= self.config.max_video {
                    return (track, None, on);
                }
                let height = p.tiles.iter().find(|(who, _)| *who == track.publisher).map(|(_, h)| *h);
                let layer = match height {
                    Some(0) => return (track, None, on),
                    // Not reported: as good as we can afford.
                    None => layers - 1,
                    Some(h) => {
                        let fit = self.config.layer_heights.iter().position(|lh| *lh >= h);
                        fit.map_or(layers - 1, |l| u8::try_from(l).unwrap_or(0).min(layers - 1))
                    }
                };
                (track, Some(layer), on)
            })
            .collect();

        // Lower the least important first until the sum fits, down to
        // layer 0 of each: a video is never stopped for bandwidth alone
        // (estimates dip on a busy host, and a frozen tile is worse than a
        // blurred one); last-N and tile sizes bound how many are sent.
        let layer_cost = |track: TrackKey, layer: u8| -> u64 {
            let costs = costs.iter().find(|(t, _)| *t == track).map(|(_, c)| c);
            costs.and_then(|c| c.get(usize::from(layer)).copied()).unwrap_or(0)
        };
        let cost = |w: &[(TrackKey, Option<u8>, bool)]| -> u64 {
            w.iter().filter(|x| x.2).filter_map(|x| x.1.map(|l| layer_cost(x.0, l))).sum()
        };
        let wanted_cost = cost(&wanted) + audio;
        while cost(&wanted) > budget {
            let at_least = |w: &(TrackKey, Option<u8>, bool), min: u8| w.2 && w.1.is_some_and(|l| l >= min);
            let Some(slot) = wanted.iter_mut().rev().find(|w| at_least(w, 1)) else { break };
            slot.1 = slot.1.map(|l| l - 1);
        }
        let chosen_cost = cost(&wanted) + audio;

        let mut requests = Vec::new();
        let mut changed = Vec::new();
        if let Some(p) = self.participants.get_mut(&subscriber) {
            p.bitrates = (chosen_cost, wanted_cost);
            for &(track, layer, _) in &wanted {
                let Some(sub) = p.subscriptions.iter_mut().find(|s| s.track == track) else { continue };
                let target = layer.map(Layer);
                if sub.target == target {
                    continue;
                }
                sub.target = target;
                changed.push(track);
                match target {
                    None => sub.current = None,
                    Some(l) if sub.current != Some(l) && sub.ready => requests.push((track, l)),
                    Some(_) => {}
                }
            }
        }
        for &(track, _, on) in &video {
            if let Some(t) = self.track_mut(track) {
                t.sending = on;
            }
        }
        for track in changed {
            self.update_active(track);
        }
        for (track, layer) in requests {
            self.request_keyframe(now_ms, track, layer);
        }
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

/// Whether `t` counts as sending: it had a frame lately, or the forwarder
/// itself paused it (so silence is expected, and its place is kept).
fn is_sending(t: &Track, now_ms: u64, silent_after_ms: u64) -> bool {
    t.active == 0 || t.last_frame_ms.is_some_and(|at| now_ms.saturating_sub(at) < silent_after_ms)
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
    /// <pub> <height>`, `pli <sub> <track>`, `frame <track> L<n> [key] [bytes=<n>]`
    /// (outputs the receivers as `-> a b`, or `-> nobody`), `speak <p>`,
    /// `ready <sub> <track>` (its m-line is negotiated), `tick`, `t <ms>`
    /// sets the clock.
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
                ["ready", s, t] => f.set_ready(now, pid(s), track(t)),
                ["tick"] => f.tick(now),
                ["frame", t, l, rest @ ..] => {
                    let layer = Layer(l.trim_start_matches('L').parse().expect("L<n>"));
                    let bytes = rest
                        .iter()
                        .find_map(|w| w.strip_prefix("bytes="))
                        .map_or(100, |b| b.parse().expect("bytes"));
                    let to: Vec<String> = f
                        .forward(now, track(t), layer, rest.contains(&"key"), bytes)
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
            > frame a.a L0
            -> nobody
            > ready b a.a
            > ready b a.c
            keyframe a.c L0
            > publish b c
            a +b.c
            > ready a b.c
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
            c +a.s
            > ready b a.s
            keyframe a.s L0
            > ready c a.s
            > unpublish a s
            b -a.s
            c -a.s
            > publish a s
            b +a.s
            c +a.s
            > ready b a.s
            keyframe a.s L0
            > ready c a.s
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
            > ready b a.c
            keyframe a.c L0
            > join c r
            c +a.c
            > ready c a.c
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
    fn nothing_is_sent_or_asked_for_before_the_subscriber_is_ready_and_waiting_asks_again() {
        check(
            Config::default(),
            "
            > join a r
            > publish a c
            layers a.c 000
            > join b r
            b +a.c
            layers a.c 001
            > t 100
            > frame a.c L0 key
            -> nobody
            > ready b a.c
            keyframe a.c L0
            > frame a.c L0
            -> nobody
            > t 600
            > frame a.c L0
            -> nobody
            keyframe a.c L0
            > frame a.c L0 key
            -> b
            > t 1000
            > frame a.c L0
            -> b
            ",
        );
    }

    #[test]
    fn a_newcomer_starts_on_a_flowing_lower_layer_then_moves_to_its_own() {
        // b watches a small tile (L0); a's L2 is paused, as nobody got it.
        // c wants L2: it is asked for, and so is L0, which flows, so c's
        // picture starts at L0's next keyframe and moves to L2 at its own.
        check(
            Config::default(),
            "
            > join a r
            > publish a c 3
            layers a.c 000
            > join b r
            b +a.c
            layers a.c 100
            > tile b a 120
            layers a.c 001
            > ready b a.c
            keyframe a.c L0
            > frame a.c L0 key
            -> b
            > t 600
            > frame a.c L0
            -> b
            > join c r
            c +a.c
            layers a.c 101
            > ready c a.c
            keyframe a.c L2
            keyframe a.c L0
            > frame a.c L0
            -> b
            > frame a.c L0 key
            -> b c
            > frame a.c L2
            -> nobody
            > frame a.c L0
            -> b c
            > frame a.c L2 key
            -> c
            > frame a.c L0
            -> b
            ",
        );
    }

    #[test]
    fn the_speaker_is_announced_when_it_changes_and_to_newcomers() {
        // a joined first, so it leads the order before anyone spoke: its
        // first turn as the speaker is announced all the same.
        check(
            Config::default(),
            "
            > join a r
            > join b r
            > speak a
            speaker r a
            > speak a
            > join c r
            speaker r a
            > speak b
            speaker r b
            > leave b
            > join d r
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
            > ready b a.c
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
    fn low_bandwidth_lowers_the_least_important_first_down_to_layer_0() {
        check(
            Config::default(),
            "
            > join a r
            > join b r
            > join c r
            > publish a c 3
            b +a.c
            layers a.c 100
            c +a.c
            > publish b c 3
            a +b.c
            layers b.c 100
            c +b.c
            > ready c a.c
            keyframe a.c L2
            > ready c b.c
            keyframe b.c L2
            > ready b a.c
            > ready a b.c
            > frame a.c L2 key
            -> b c
            > frame b.c L2 key
            -> a c
            > t 500
            > bw c 2000000
            layers b.c 110
            keyframe b.c L1
            > frame b.c L1 key
            -> c
            > t 1000
            > bw c 700000
            layers a.c 110
            layers b.c 111
            keyframe a.c L1
            keyframe b.c L0
            > t 1200
            > speak b
            speaker r b
            layers b.c 110
            layers a.c 101
            keyframe a.c L0
            > bw c 200000
            layers b.c 111
            > t 1400
            > bw c 10000000
            layers b.c 110
            layers a.c 100
            keyframe b.c L2
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
            c +a.c
            > publish b c
            a +b.c
            c +b.c
            > ready c a.c
            keyframe a.c L0
            > ready c b.c
            keyframe b.c L0
            > frame a.c L0 key
            -> c
            > frame b.c L0 key
            -> nobody
            > t 1000
            > speak b
            speaker r b
            keyframe b.c L0
            > frame b.c L0 key
            -> c
            > t 1500
            > publish a s
            b +a.s
            c +a.s
            > ready c a.s
            keyframe a.s L0
            > frame a.s L0 key
            -> c
            layers a.c 000
            > frame b.c L0
            -> nobody
            ",
        );
    }

    #[test]
    fn measured_rates_replace_the_assumed_ones() {
        check(
            Config::default(),
            "
            > join a r
            > join b r
            > join c r
            > publish a c 3
            b +a.c
            layers a.c 100
            c +a.c
            > publish b c 3
            a +b.c
            layers b.c 100
            c +b.c
            > ready c a.c
            keyframe a.c L2
            > ready c b.c
            keyframe b.c L2
            > frame a.c L2 key bytes=500
            -> c
            > frame b.c L2 key bytes=500
            -> c
            > t 500
            > bw c 600000
            layers a.c 101
            layers b.c 101
            keyframe a.c L0
            keyframe b.c L0
            > t 1000
            > frame a.c L2 bytes=500
            -> c
            > frame b.c L2 bytes=500
            -> c
            > bw c 610000
            layers a.c 100
            layers b.c 100
            ",
        );
    }

    #[test]
    fn a_camera_that_goes_off_gives_its_place_and_takes_it_back() {
        check(
            Config { max_video: 1, ..Config::default() },
            "
            > join a r
            > join b r
            > join c r
            > publish a c
            b +a.c
            c +a.c
            > publish b c
            a +b.c
            c +b.c
            > publish b s
            a +b.s
            c +b.s
            > ready c a.c
            keyframe a.c L0
            > ready c b.c
            keyframe b.c L0
            > ready c b.s
            keyframe b.s L0
            > frame a.c L0 key
            -> c
            > frame b.c L0
            -> nobody
            > t 1900
            > frame b.c L0
            -> nobody
            > tick
            > t 2100
            > tick
            keyframe b.c L0
            > frame b.c L0 key
            -> c
            > t 3000
            > frame a.c L0 key
            -> c
            ",
        );
    }
}
