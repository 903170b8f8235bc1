// Call quality from getStats(): bitrates, loss, round trip, resolution,
// frame rate, codecs and the kind of network path. No DOM here.

/**
 * @typedef {object} Quality
 * @property {number} bitrateIn kbit/s received (audio + video)
 * @property {number} bitrateOut kbit/s sent
 * @property {number} lossPercent packets lost of packets expected, inbound
 * @property {number | null} rttMs round trip of the selected candidate pair
 * @property {number} width decoded width of the remote video
 * @property {number} height
 * @property {number} fps decoded frames per second
 * @property {string} videoCodec e.g. "VP8"
 * @property {string} audioCodec e.g. "opus"
 * @property {string | null} path local/remote candidate types, e.g. "host/host"
 * @property {string | null} relayProtocol how we reach our TURN server
 *   ("udp", "tcp", "tls") when our side of the path is a relay
 * @property {number} framesDecoded total so far
 * @property {number} audioPacketsReceived total so far
 * @property {number} audioLevel 0..1, last received
 */

/**
 * Samples one RTCPeerConnection; rates are per second since the previous
 * sample, so call it on a steady timer.
 */
export class QualityMeter {
  /**
   * @param {RTCPeerConnection} pc
   * @param {(stat: any) => boolean} [inbound] which inbound-rtp streams to
   *   count (all by default): one peer's share of an SFU session
   */
  constructor(pc, inbound = () => true) {
    this.pc = pc;
    this.inbound = inbound;
    /** @type {{at: number, bytesIn: number, bytesOut: number, frames: number} | null} */
    this.prev = null;
  }

  /** @returns {Promise<Quality>} */
  async sample() {
    const report = await this.pc.getStats();
    /** @type {Map<string, any>} */
    const byId = new Map();
    report.forEach((s) => byId.set(s.id, s));
    let bytesIn = 0, bytesOut = 0, lost = 0, received = 0, frames = 0;
    const q = /** @type {Quality} */ ({
      bitrateIn: 0, bitrateOut: 0, lossPercent: 0, rttMs: null, width: 0, height: 0, fps: 0,
      videoCodec: '', audioCodec: '', path: null, relayProtocol: null, framesDecoded: 0, audioPacketsReceived: 0, audioLevel: 0,
    });
    const codec = (/** @type {any} */ s) => byId.get(s.codecId)?.mimeType?.split('/')[1] ?? '';
    for (const s of byId.values()) {
      if (s.type === 'inbound-rtp') {
        if (!this.inbound(s)) continue;
        bytesIn += s.bytesReceived ?? 0;
        lost += Math.max(0, s.packetsLost ?? 0);
        received += s.packetsReceived ?? 0;
        if (s.kind === 'video') {
          frames += s.framesDecoded ?? 0;
          q.width = Math.max(q.width, s.frameWidth ?? 0);
          q.height = Math.max(q.height, s.frameHeight ?? 0);
          q.videoCodec ||= codec(s);
        } else if (s.kind === 'audio') {
          q.audioPacketsReceived += s.packetsReceived ?? 0;
          q.audioLevel = s.audioLevel ?? q.audioLevel;
          q.audioCodec ||= codec(s);
        }
      } else if (s.type === 'outbound-rtp') {
        bytesOut += s.bytesSent ?? 0;
      } else if (s.type === 'transport' && s.selectedCandidatePairId) {
        const pair = byId.get(s.selectedCandidatePairId);
        const local = pair && byId.get(pair.localCandidateId);
        const remote = pair && byId.get(pair.remoteCandidateId);
        if (local && remote) q.path = `${local.candidateType}/${remote.candidateType}`;
        if (local?.candidateType === 'relay') q.relayProtocol = local.relayProtocol ?? null;
        if (pair?.currentRoundTripTime !== undefined) q.rttMs = pair.currentRoundTripTime * 1000;
      }
    }
    q.framesDecoded = frames;
    q.lossPercent = lost + received > 0 ? (100 * lost) / (lost + received) : 0;
    const now = performance.now();
    if (this.prev) {
      const seconds = (now - this.prev.at) / 1000;
      if (seconds > 0) {
        q.bitrateIn = ((bytesIn - this.prev.bytesIn) * 8) / 1000 / seconds;
        q.bitrateOut = ((bytesOut - this.prev.bytesOut) * 8) / 1000 / seconds;
        q.fps = (frames - this.prev.frames) / seconds;
      }
    }
    this.prev = { at: now, bytesIn, bytesOut, frames };
    return q;
  }
}
