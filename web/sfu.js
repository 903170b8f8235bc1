// A group call's media through the server (docs/protocol.md, "Group calls:
// the SFU"): one RTCPeerConnection to the server's SFU, which receives our
// microphone, camera and screen once and forwards everyone else's. No DOM
// here beyond media objects.

/**
 * @typedef {import('./call.js').LocalMedia} LocalMedia
 * @typedef {import('./protocol.js').SfuSource} SfuSource
 * @typedef {import('./protocol.js').SfuTrack} SfuTrack
 * @typedef {import('./protocol.js').SfuMessage} SfuMessage
 * @typedef {{audio: MediaStreamTrack | null, camera: MediaStreamTrack | null,
 *            screen: MediaStreamTrack | null}} PeerTracks one peer's tracks
 *   as they reach us through the SFU (null: not forwarded to us)
 * @typedef {{mid: string, peer: string, source: SfuSource, track: MediaStreamTrack}} RemoteTrack
 */

/** What we send, in the order of our m-lines (the protocol fixes it). */
const SOURCES = /** @type {const} */ (['audio', 'camera', 'screen']);

/**
 * The camera's simulcast layers, lowest first (the order the server counts
 * them in): a quarter, half and full size, at the bitrates the server's
 * forwarder assumes for each layer. The server forwards each subscriber the
 * one that fits the tile it shows us in.
 *
 * Browsers encode fewer layers for small pictures (Chrome: one below
 * 480x270 pixels, two below 960x540), keeping the lowest, so a small
 * camera gets fewer layers here: one half and full size, or no simulcast.
 *
 * @param {MediaStreamTrack | null} camera
 * @returns {RTCRtpEncodingParameters[] | undefined}
 */
function cameraLayers(camera) {
  const { width = 1280, height = 720 } = camera?.getSettings() ?? {};
  const pixels = width * height;
  if (pixels >= 960 * 540) {
    return [
      { rid: 'l', scaleResolutionDownBy: 4, maxBitrate: 150_000 },
      { rid: 'm', scaleResolutionDownBy: 2, maxBitrate: 500_000 },
      { rid: 'h', scaleResolutionDownBy: 1, maxBitrate: 1_500_000 },
    ];
  }
  if (pixels >= 480 * 270) {
    return [
      { rid: 'l', scaleResolutionDownBy: 2, maxBitrate: 150_000 },
      { rid: 'h', scaleResolutionDownBy: 1, maxBitrate: 500_000 },
    ];
  }
  return undefined;
}

/** A random id telling one SFU session from the next (for logs and tests). */
function newId() {
  return Array.from(crypto.getRandomValues(new Uint8Array(8)), (b) => b.toString(16).padStart(2, '0')).join('');
}

/**
 * The session with the server's SFU.
 *
 * We offer once, with three `sendonly` transceivers (microphone, camera,
 * screen, each with its track or none); the server answers, and from then
 * on it is the server that offers, whenever what we receive changes, with
 * the whole list of its tracks (`mid` -> peer and source). Our own media
 * changes (mute, camera off, screen share, another device) are
 * `replaceTrack`s on the right sender, never a new offer.
 *
 * The camera goes out as simulcast layers (three for a camera of 960x540
 * or more); the server says which of them anybody receives (`sfu-layers`),
 * and we encode only those.
 *
 * Events (CustomEvent, payload in `detail`):
 * - `established` the server answered our offer
 * - `track`       RemoteTrack: a peer's source reaches us (again, or on
 *                 another track)
 * - `track-ended` {mid, peer, source}: it no longer does
 * - `state`       the RTCPeerConnection's connectionState
 */
export class SfuLink extends EventTarget {
  /**
   * @param {object} opts
   * @param {RTCIceServer[]} opts.iceServers from `joined`
   * @param {boolean} [opts.relayOnly] reach the server only through TURN
   * @param {LocalMedia} opts.media our microphone, camera, screen
   * @param {(msg: {description: RTCSessionDescriptionInit, sources?: Record<string, SfuSource>}) => void} opts.send
   *   delivers an `sfu` message to the server
   */
  constructor({ iceServers, relayOnly = false, media, send }) {
    super();
    this.id = newId();
    /** When this session was made (performance.now()). */
    this.created = performance.now();
    /** What happened when (performance.now()), for people and tests
     *  reading where the time to the first frame goes. Bounded.
     *  @type {[number, string][]} */
    this.timeline = [];
    this.mark('created');
    this.media = media;
    this.sendRaw = send;
    this.closed = false;
    // One transport for everything: the server bundles, and an ICE-lite
    // server has one candidate anyway.
    this.pc = new RTCPeerConnection({
      iceServers,
      iceTransportPolicy: relayOnly ? 'relay' : 'all',
      bundlePolicy: 'max-bundle',
    });
    /** @type {Map<string, {peer: string, source: SfuSource}>} what the server's
     *  latest offer says it sends us, by mid */
    this.tracks = new Map();
    /** @type {Map<string, RemoteTrack>} what we told our owner arrived, by mid */
    this.remote = new Map();
    /** Server messages are applied one at a time, in order. */
    this.queue = Promise.resolve();
    /** Sender changes, one at a time, so the last one wins. */
    this.senderQueue = Promise.resolve();
    /** Our offers (exactly one per session) and our answers to the server's. */
    this.offers = 0;
    this.answers = 0;
    /** Whether the server answered our offer. */
    this.established = false;

    /** @type {Record<SfuSource, RTCRtpTransceiver>} */
    this.transceivers = {
      audio: this.pc.addTransceiver(media.audioTrack ?? 'audio', { direction: 'sendonly' }),
      camera: this.pc.addTransceiver(media.cameraTrack ?? 'video', {
        direction: 'sendonly',
        sendEncodings: cameraLayers(media.camera),
      }),
      screen: this.pc.addTransceiver(media.screen ?? 'video', { direction: 'sendonly' }),
    };
    this.pc.ontrack = ({ transceiver }) => this.announce(transceiver);
    this.pc.oniceconnectionstatechange = () => this.mark(`ice ${this.pc.iceConnectionState}`);
    this.pc.onconnectionstatechange = () => {
      this.mark(`connection ${this.pc.connectionState}`);
      this.dispatchEvent(new CustomEvent('state', { detail: this.pc.connectionState }));
    };
    this.onMediaChange = () => this.updateSenders();
    media.addEventListener('change', this.onMediaChange);
  }

  /** @param {string} what */
  mark(what) {
    if (this.timeline.length < 200) this.timeline.push([Math.round(performance.now()), what]);
  }

  /** The first (and only) offer of this session. */
  start() {
    this.queue = this.queue.then(async () => {
      if (this.closed) return;
      await this.pc.setLocalDescription();
      /** @type {Record<string, SfuSource>} */
      const sources = {};
      for (const source of SOURCES) {
        const mid = this.transceivers[source].mid;
        if (mid !== null) sources[mid] = source;
      }
      this.offers++;
      const description = /** @type {RTCSessionDescriptionInit} */ (this.pc.localDescription?.toJSON());
      this.sendRaw({ description, sources });
      this.mark('offer sent');
    }).catch((err) => {
      console.warn('webconf: could not make the SFU offer', err);
    });
    return this.queue;
  }

  /**
   * Applies an `sfu` message from the server, in order.
   * @param {SfuMessage} msg
   */
  handle(msg) {
    this.queue = this.queue.then(() => this.apply(msg)).catch((err) => {
      console.warn('webconf: could not apply an SFU message', err);
    });
    return this.queue;
  }

  /** @param {SfuMessage} msg */
  async apply({ description, tracks }) {
    if (this.closed || !description || typeof description !== 'object') return;
    if (description.type === 'answer') {
      if (this.pc.signalingState !== 'have-local-offer') {
        console.warn('webconf: an SFU answer with no offer of ours pending');
        return;
      }
      this.mark('answer received');
      await this.pc.setRemoteDescription(description);
      this.established = true;
      this.dispatchEvent(new Event('established'));
      return;
    }
    if (description.type !== 'offer') return;
    if (this.pc.signalingState !== 'stable') {
      // The server never offers before answering ours; if it did, ours wins.
      console.warn('webconf: an SFU offer while ours is pending');
      return;
    }
    this.mark(`server offer (${Array.isArray(tracks) ? tracks.length : 0} tracks)`);
    // Known before the description is applied, so `ontrack` can tell whose
    // each track is.
    this.tracks = new Map();
    for (const t of Array.isArray(tracks) ? tracks : []) {
      if (t && typeof t.mid === 'string' && typeof t.peer === 'string' && SOURCES.includes(t.source)) {
        this.tracks.set(t.mid, { peer: t.peer, source: t.source });
      }
    }
    await this.pc.setRemoteDescription(description);
    await this.pc.setLocalDescription();
    this.answers++;
    const answer = /** @type {RTCSessionDescriptionInit} */ (this.pc.localDescription?.toJSON());
    this.sendRaw({ description: answer });
    this.mark('answer sent');
    this.reconcile();
  }

  /**
   * Tells our owner about the track on `transceiver` if the server says
   * whose it is, unless it already knows.
   * @param {RTCRtpTransceiver} transceiver
   */
  announce(transceiver) {
    const mid = transceiver.mid;
    if (this.closed || mid === null) return;
    const owner = this.tracks.get(mid);
    if (!owner) return;
    const track = transceiver.receiver.track;
    const known = this.remote.get(mid);
    if (known && known.peer === owner.peer && known.source === owner.source && known.track === track) return;
    if (known) this.ended(mid, known);
    /** @type {RemoteTrack} */
    const remote = { mid, peer: owner.peer, source: owner.source, track };
    this.remote.set(mid, remote);
    this.dispatchEvent(new CustomEvent('track', { detail: remote }));
  }

  /**
   * After each server offer: every listed mid is announced (`ontrack`
   * fires only when an m-line starts receiving, not when the server gives
   * one that already does to another peer), every unlisted one has ended.
   */
  reconcile() {
    for (const [mid, known] of [...this.remote]) {
      if (!this.tracks.has(mid)) this.ended(mid, known);
    }
    for (const tr of this.pc.getTransceivers()) {
      if (tr.mid !== null && this.tracks.has(tr.mid) && tr.currentDirection !== 'stopped') this.announce(tr);
    }
  }

  /**
   * @param {string} mid
   * @param {RemoteTrack} known
   */
  ended(mid, known) {
    this.remote.delete(mid);
    this.dispatchEvent(new CustomEvent('track-ended', { detail: { mid, peer: known.peer, source: known.source } }));
  }

  /**
   * One peer's tracks as they reach us now.
   * @param {string} peer
   * @returns {PeerTracks}
   */
  tracksOf(peer) {
    /** @type {PeerTracks} */
    const out = { audio: null, camera: null, screen: null };
    for (const r of this.remote.values()) {
      if (r.peer === peer) out[r.source] = r.track;
    }
    return out;
  }

  /**
   * The mids (and their receivers' track ids) that carry `peer`'s media,
   * to pick its share out of getStats().
   * @param {string} peer
   */
  midsOf(peer) {
    /** @type {Set<string>} */
    const mids = new Set();
    /** @type {Set<string>} */
    const trackIds = new Set();
    for (const [mid, owner] of this.tracks) {
      if (owner.peer !== peer) continue;
      mids.add(mid);
      const track = this.remote.get(mid)?.track;
      if (track) trackIds.add(track.id);
    }
    return { mids, trackIds };
  }

  /**
   * Puts our current tracks on the three senders: after a mute, the camera
   * turned off or on, a screen share started or stopped, another device.
   */
  updateSenders() {
    this.senderQueue = this.senderQueue.then(async () => {
      if (this.closed) return;
      /** @type {Record<SfuSource, MediaStreamTrack | null>} */
      const want = { audio: this.media.audioTrack, camera: this.media.cameraTrack, screen: this.media.screen };
      for (const source of SOURCES) {
        const sender = this.transceivers[source].sender;
        if (sender.track !== want[source]) await sender.replaceTrack(want[source]);
      }
    }).catch((err) => {
      console.warn('webconf: could not update the SFU senders', err);
    });
    return this.senderQueue;
  }

  /**
   * Encodes only the `active` layers of `source` (indexes, lowest first):
   * the others reach nobody (dynacast). Empty: nobody receives it at all.
   * @param {SfuSource} source
   * @param {number[]} active
   */
  setActiveLayers(source, active) {
    const transceiver = this.transceivers[source];
    if (!transceiver || !Array.isArray(active)) return this.senderQueue;
    this.senderQueue = this.senderQueue.then(async () => {
      if (this.closed) return;
      const params = transceiver.sender.getParameters();
      if (!params.encodings?.length) return;
      let changed = false;
      params.encodings.forEach((encoding, i) => {
        const on = active.includes(i);
        if (encoding.active !== on) changed = true;
        encoding.active = on;
      });
      if (changed) await transceiver.sender.setParameters(params);
    }).catch((err) => {
      console.warn('webconf: could not change the layers we send', err);
    });
    return this.senderQueue;
  }

  /** The tracks we send now, by source (for tests). */
  get sending() {
    return Object.fromEntries(SOURCES.map((s) => [s, this.transceivers[s].sender.track?.id ?? null]));
  }

  close() {
    if (this.closed) return;
    this.closed = true;
    this.media.removeEventListener('change', this.onMediaChange);
    this.pc.close();
    for (const r of this.remote.values()) r.track.stop();
  }
}
