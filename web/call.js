// Media and peer connections: the local camera, microphone and screen
// (LocalMedia), and one RTCPeerConnection per remote peer (PeerLink) using
// the "perfect negotiation" pattern (W3C WebRTC, section 10.7), so offers
// crossing in flight cannot wedge a call. No DOM here beyond media objects.

/**
 * @typedef {import('./protocol.js').MediaFlags} MediaFlags
 * @typedef {'denied' | 'missing' | 'busy' | 'insecure' | 'failed'} MediaProblem
 */

/** How long ICE may stay "disconnected" before we restart it. */
const ICE_RESTART_AFTER_MS = 3000;
/** At most one ICE restart this often, so a dead network is not flooded
 *  with renegotiations. */
const ICE_RESTART_EVERY_MS = 5000;

/** @param {any} err @returns {MediaProblem} */
function mediaProblem(err) {
  switch (err?.name) {
    case 'NotAllowedError':
    case 'SecurityError':
      return 'denied';
    case 'NotFoundError':
    case 'OverconstrainedError':
      return 'missing';
    case 'NotReadableError':
    case 'AbortError':
      return 'busy';
    default:
      return 'failed';
  }
}

const VIDEO = { width: { ideal: 1280 }, height: { ideal: 720 } };

/**
 * The local microphone, camera and screen share. Turning the camera off
 * stops it (its light goes off) rather than sending black; muting sends
 * nothing rather than silence. Fires `change` whenever the tracks to send
 * or the flags change.
 */
export class LocalMedia extends EventTarget {
  constructor() {
    super();
    /** @type {MediaStreamTrack | null} */
    this.mic = null;
    /** @type {MediaStreamTrack | null} */
    this.camera = null;
    /** @type {MediaStreamTrack | null} */
    this.screen = null;
    this.micOn = true;
    this.cameraOn = true;
    /** @type {MediaProblem | null} */
    this.problem = null;
    /** @type {string | undefined} */
    this.micId = undefined;
    /** @type {string | undefined} */
    this.cameraId = undefined;
    /** What the self view shows: the camera, or the shared screen. */
    this.preview = new MediaStream();
  }

  /** Asks for camera and microphone; falls back to whichever one works. */
  async open() {
    if (!navigator.mediaDevices?.getUserMedia) {
      this.problem = window.isSecureContext ? 'failed' : 'insecure';
      this.micOn = this.cameraOn = false;
      return;
    }
    const attempts = [{ audio: true, video: VIDEO }, { audio: true, video: false }, { audio: false, video: VIDEO }];
    /** @type {any} */
    let firstError = null;
    for (const constraints of attempts) {
      try {
        const stream = await navigator.mediaDevices.getUserMedia(constraints);
        this.mic = stream.getAudioTracks()[0] ?? null;
        this.camera = stream.getVideoTracks()[0] ?? null;
        break;
      } catch (/** @type {any} */ err) {
        firstError ??= err;
        // Denied is denied for every device: do not ask again.
        if (err?.name === 'NotAllowedError' || err?.name === 'SecurityError') break;
      }
    }
    this.problem = firstError && !(this.mic && this.camera) ? mediaProblem(firstError) : null;
    this.micOn = Boolean(this.mic);
    this.cameraOn = Boolean(this.camera);
    this.micId = this.mic?.getSettings().deviceId;
    this.cameraId = this.camera?.getSettings().deviceId;
    this.changed();
  }

  /** The track to send as audio: the microphone unless muted. */
  get audioTrack() {
    return this.micOn ? this.mic : null;
  }

  /** The track to send as video: the screen while sharing, else the camera. */
  get videoTrack() {
    return this.screen ?? (this.cameraOn ? this.camera : null);
  }

  /** The camera alone, unless it is off (an SFU session sends the screen
   *  share on a sender of its own, beside the camera). */
  get cameraTrack() {
    return this.cameraOn ? this.camera : null;
  }

  /** @returns {MediaFlags} */
  get flags() {
    return { audio: Boolean(this.audioTrack), video: Boolean(this.cameraOn && this.camera), screen: Boolean(this.screen) };
  }

  /** @param {boolean} on */
  async setMic(on) {
    if (on && !this.mic) await this.useMic(this.micId);
    this.micOn = on && Boolean(this.mic);
    if (this.mic) this.mic.enabled = this.micOn;
    this.changed();
  }

  /** @param {boolean} on */
  async setCamera(on) {
    if (on && !this.camera) {
      await this.useCamera(this.cameraId);
      return;
    }
    if (!on && this.camera) {
      this.camera.stop();
      this.camera = null;
    }
    this.cameraOn = on && Boolean(this.camera);
    this.changed();
  }

  /**
   * Switches to another microphone (or opens one).
   * @param {string | undefined} deviceId
   */
  async useMic(deviceId) {
    const stream = await navigator.mediaDevices.getUserMedia({
      audio: deviceId ? { deviceId: { exact: deviceId } } : true,
    });
    this.mic?.stop();
    this.mic = stream.getAudioTracks()[0] ?? null;
    this.micId = this.mic?.getSettings().deviceId;
    this.micOn = Boolean(this.mic);
    this.changed();
  }

  /**
   * Switches to another camera (or opens one).
   * @param {string | undefined} deviceId
   */
  async useCamera(deviceId) {
    const stream = await navigator.mediaDevices.getUserMedia({
      video: deviceId ? { ...VIDEO, deviceId: { exact: deviceId } } : VIDEO,
    });
    this.camera?.stop();
    this.camera = stream.getVideoTracks()[0] ?? null;
    this.cameraId = this.camera?.getSettings().deviceId;
    this.cameraOn = Boolean(this.camera);
    this.changed();
  }

  /** Starts sharing the screen in place of the camera. */
  async startScreen() {
    const stream = await navigator.mediaDevices.getDisplayMedia({ video: true, audio: false });
    const track = stream.getVideoTracks()[0];
    if (!track) return;
    this.screen?.stop();
    this.screen = track;
    // Stopping from the browser's own "stop sharing" bar ends the track.
    track.addEventListener('ended', () => {
      if (this.screen === track) this.stopScreen();
    });
    this.changed();
  }

  stopScreen() {
    this.screen?.stop();
    this.screen = null;
    this.changed();
  }

  /** Stops everything (hang-up): no camera light after the call. */
  stopAll() {
    for (const t of [this.mic, this.camera, this.screen]) t?.stop();
    this.mic = this.camera = this.screen = null;
    this.micOn = this.cameraOn = false;
    this.changed();
  }

  changed() {
    for (const t of this.preview.getTracks()) this.preview.removeTrack(t);
    const video = this.videoTrack;
    if (video) this.preview.addTrack(video);
    this.dispatchEvent(new Event('change'));
  }
}

/** A random id telling one RTCPeerConnection from the next. */
function newSession() {
  return Array.from(crypto.getRandomValues(new Uint8Array(8)), (b) => b.toString(16).padStart(2, '0')).join('');
}

/**
 * The link to one remote peer: one RTCPeerConnection.
 *
 * The initiator (the peer that joined later) creates one audio and one video
 * transceiver and makes the first offer; the other side attaches its tracks
 * to the transceivers that offer brought, so one offer/answer carries media
 * both ways, and later track changes are `replaceTrack`s that need no new
 * negotiation. Every signal carries this link's `session`, so messages from
 * an earlier connection of the same peer are told apart.
 */
export class PeerLink extends EventTarget {
  /**
   * @param {object} opts
   * @param {string} opts.id remote peer id
   * @param {string} opts.name remote display name
   * @param {boolean} opts.polite our role towards this peer
   * @param {boolean} opts.initiator whether we make the first offer
   * @param {RTCIceServer[]} opts.iceServers
   * @param {boolean} [opts.relayOnly] send everything through TURN, so the
   *   other side never learns our addresses
   * @param {LocalMedia} opts.media our microphone, camera, screen
   * @param {(data: any) => void} opts.send delivers a signal to the peer
   */
  constructor({ id, name, polite, initiator, iceServers, relayOnly = false, media, send }) {
    super();
    this.id = id;
    this.name = name;
    this.polite = polite;
    this.media = media;
    this.sendRaw = send;
    this.session = newSession();
    /** @type {string | null} the remote link's session, once heard */
    this.remoteSession = null;
    /** The remote tracks, as one stream for a <video> element. */
    this.remote = new MediaStream();
    this.pc = new RTCPeerConnection({ iceServers, iceTransportPolicy: relayOnly ? 'relay' : 'all' });
    this.makingOffer = false;
    this.ignoreOffer = false;
    this.settingRemoteAnswer = false;
    /** Signals are applied one at a time, in order. */
    this.queue = Promise.resolve();
    this.closed = false;
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    this.iceTimer = undefined;
    this.iceRestarts = 0;
    this.lastIceRestart = -Infinity;
    /** Offers this link has made (a track change must not add one). */
    this.offers = 0;

    this.pc.onnegotiationneeded = () => this.negotiate();
    this.pc.onicecandidate = ({ candidate }) => {
      if (candidate) this.send({ candidate: candidate.toJSON() });
    };
    this.pc.ontrack = ({ track }) => {
      this.remote.addTrack(track);
      this.dispatchEvent(new CustomEvent('track', { detail: track }));
    };
    this.pc.onconnectionstatechange = () => {
      this.dispatchEvent(new CustomEvent('state', { detail: this.pc.connectionState }));
    };
    this.pc.oniceconnectionstatechange = () => this.watchIce();
    this.onMediaChange = () => this.updateSenders();
    media.addEventListener('change', this.onMediaChange);
    if (initiator) {
      // One transceiver per kind, even without a local track of that kind,
      // so we still receive it and can send it later without renegotiating.
      this.pc.addTransceiver(media.audioTrack ?? 'audio', { direction: 'sendrecv' });
      this.pc.addTransceiver(media.videoTrack ?? 'video', { direction: 'sendrecv' });
    }
  }

  /** Connected, or on its way there: worth keeping across a reconnect. */
  get healthy() {
    return ['new', 'connecting', 'connected'].includes(this.pc.connectionState);
  }

  /** @param {object} data */
  send(data) {
    this.sendRaw({ session: this.session, ...data });
  }

  async negotiate() {
    try {
      this.makingOffer = true;
      await this.pc.setLocalDescription();
      if (this.pc.localDescription?.type === 'offer') this.offers++;
      this.send({ description: this.pc.localDescription?.toJSON() });
    } catch (err) {
      console.warn('webconf: negotiation failed', err);
    } finally {
      this.makingOffer = false;
    }
  }

  /**
   * Whether `data` (a signal from the peer) opens a new session: the peer
   * made a new RTCPeerConnection, so this one must be replaced.
   * @param {any} data
   */
  isNewSession(data) {
    return Boolean(
      this.remoteSession && data?.session && data.session !== this.remoteSession
        && data.description?.type === 'offer',
    );
  }

  /**
   * Applies a signal from the remote peer, in order.
   * @param {any} data
   */
  handle(data) {
    this.queue = this.queue.then(() => this.apply(data)).catch((err) => {
      console.warn('webconf: could not apply a signal', err);
    });
    return this.queue;
  }

  /** @param {any} data */
  async apply(data) {
    if (this.closed || !data || typeof data !== 'object') return;
    if (typeof data.session === 'string') {
      this.remoteSession ??= data.session;
      // Leftovers from the peer's previous connection.
      if (data.session !== this.remoteSession) return;
    }
    const { description, candidate } = data;
    if (description) {
      const ready = !this.makingOffer
        && (this.pc.signalingState === 'stable' || this.settingRemoteAnswer);
      const collision = description.type === 'offer' && !ready;
      this.ignoreOffer = !this.polite && collision;
      if (this.ignoreOffer) return;
      this.settingRemoteAnswer = description.type === 'answer';
      await this.pc.setRemoteDescription(description);
      this.settingRemoteAnswer = false;
      if (description.type === 'offer') {
        await this.updateSenders();
        await this.pc.setLocalDescription();
        this.send({ description: this.pc.localDescription?.toJSON() });
      }
    } else if (candidate) {
      try {
        await this.pc.addIceCandidate(candidate);
      } catch (err) {
        if (!this.ignoreOffer) throw err;
      }
    }
  }

  /**
   * Puts our current tracks on the senders: on the transceivers a remote
   * offer created, and again whenever we mute, turn the camera off, share
   * the screen or switch devices. `replaceTrack` needs no renegotiation.
   */
  async updateSenders() {
    if (this.closed) return;
    for (const tr of this.pc.getTransceivers()) {
      if (tr.currentDirection === 'stopped') continue;
      const kind = tr.receiver.track.kind;
      const track = kind === 'audio' ? this.media.audioTrack : this.media.videoTrack;
      if (tr.sender.track !== track) await tr.sender.replaceTrack(track);
      if (tr.direction !== 'sendrecv') tr.direction = 'sendrecv';
    }
  }

  /**
   * New STUN/TURN servers (fresh credentials after a reconnect), used from
   * the next ICE restart on.
   * @param {RTCIceServer[]} iceServers
   */
  setIceServers(iceServers) {
    try {
      this.pc.setConfiguration({ ...this.pc.getConfiguration(), iceServers });
    } catch (err) {
      console.warn('webconf: cannot update ICE servers', err);
    }
  }

  /** Restarts ICE when it failed, or stayed disconnected for a while. */
  watchIce() {
    const state = this.pc.iceConnectionState;
    clearTimeout(this.iceTimer);
    if (state === 'failed') this.restartIce();
    else if (state === 'disconnected') this.iceTimer = setTimeout(() => this.restartIce(), ICE_RESTART_AFTER_MS);
  }

  restartIce() {
    if (this.closed || !['disconnected', 'failed'].includes(this.pc.iceConnectionState)) return;
    const wait = this.lastIceRestart + ICE_RESTART_EVERY_MS - performance.now();
    if (wait > 0) {
      clearTimeout(this.iceTimer);
      this.iceTimer = setTimeout(() => this.restartIce(), wait);
      return;
    }
    this.lastIceRestart = performance.now();
    // Try again later if this one does not bring the connection back.
    this.iceTimer = setTimeout(() => this.restartIce(), ICE_RESTART_EVERY_MS);
    this.iceRestarts++;
    this.dispatchEvent(new CustomEvent('ice-restart', { detail: this.iceRestarts }));
    this.pc.restartIce();
  }

  close() {
    this.closed = true;
    clearTimeout(this.iceTimer);
    this.media.removeEventListener('change', this.onMediaChange);
    this.pc.close();
    for (const t of this.remote.getTracks()) t.stop();
  }
}
