// Peer connections: local media, and one RTCPeerConnection per remote peer
// using the "perfect negotiation" pattern (W3C WebRTC spec, section 10.7),
// so offers crossing in flight (glare) can never wedge a call. No DOM here
// beyond the media objects themselves.

/**
 * Asks for camera and microphone; falls back to whichever one works.
 * @returns {Promise<{stream: MediaStream, problem: string | null}>} problem
 *   is null when both work, else "denied", "missing", "busy", "insecure" or
 *   "failed"; the stream then holds what did work (maybe nothing).
 */
export async function openLocalMedia() {
  if (!navigator.mediaDevices?.getUserMedia) {
    return { stream: new MediaStream(), problem: window.isSecureContext ? 'failed' : 'insecure' };
  }
  const video = { width: { ideal: 1280 }, height: { ideal: 720 } };
  const attempts = [{ audio: true, video }, { audio: true, video: false }, { audio: false, video }];
  /** @type {any} */
  let firstError = null;
  for (const constraints of attempts) {
    try {
      const stream = await navigator.mediaDevices.getUserMedia(constraints);
      return { stream, problem: firstError ? mediaProblem(firstError) : null };
    } catch (/** @type {any} */ err) {
      firstError ??= err;
      // Denied is denied for every device: do not ask again.
      if (err?.name === 'NotAllowedError' || err?.name === 'SecurityError') break;
    }
  }
  return { stream: new MediaStream(), problem: mediaProblem(firstError) };
}

/** @param {any} err */
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

/**
 * The link to one remote peer.
 *
 * The polite side (the newcomer, see docs/protocol.md) creates the
 * transceivers and makes the first offer; the other side attaches its
 * tracks to the transceivers the offer brought, so one offer/answer sets up
 * media both ways.
 */
export class PeerLink extends EventTarget {
  /**
   * @param {object} opts
   * @param {string} opts.id remote peer id
   * @param {string} opts.name remote display name
   * @param {boolean} opts.polite our role towards this peer
   * @param {RTCIceServer[]} opts.iceServers
   * @param {MediaStream} opts.local our camera/microphone
   * @param {(data: any) => void} opts.send delivers a signal to the peer
   */
  constructor({ id, name, polite, iceServers, local, send }) {
    super();
    this.id = id;
    this.name = name;
    this.polite = polite;
    this.local = local;
    this.send = send;
    /** The remote tracks, as one stream for a <video> element. */
    this.remote = new MediaStream();
    this.pc = new RTCPeerConnection({ iceServers });
    this.makingOffer = false;
    this.ignoreOffer = false;
    this.settingRemoteAnswer = false;
    /** Signals are applied one at a time, in order. */
    this.queue = Promise.resolve();
    this.closed = false;

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
    if (polite) {
      // One transceiver per kind, even without a local track of that
      // kind, so we still receive it (and can send it later).
      for (const kind of ['audio', 'video']) {
        const track = local.getTracks().find((t) => t.kind === kind);
        this.pc.addTransceiver(track ?? kind, { direction: 'sendrecv', streams: [local] });
      }
    }
  }

  async negotiate() {
    try {
      this.makingOffer = true;
      await this.pc.setLocalDescription();
      this.send({ description: this.pc.localDescription?.toJSON() });
    } catch (err) {
      console.warn('webconf: negotiation failed', err);
    } finally {
      this.makingOffer = false;
    }
  }

  /**
   * Applies a signal from the remote peer.
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
        await this.attachLocalTracks();
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

  /** Puts our tracks on the transceivers a remote offer created. */
  async attachLocalTracks() {
    for (const tr of this.pc.getTransceivers()) {
      const kind = tr.receiver.track.kind;
      if (tr.sender.track || tr.currentDirection === 'stopped') continue;
      const track = this.local.getTracks().find((t) => t.kind === kind);
      if (track) {
        await tr.sender.replaceTrack(track);
        tr.sender.setStreams?.(this.local);
      }
      tr.direction = 'sendrecv';
    }
  }

  close() {
    this.closed = true;
    this.pc.close();
    for (const t of this.remote.getTracks()) t.stop();
  }
}
