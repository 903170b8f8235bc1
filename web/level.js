// How loud an audio track is, now: for the lobby's microphone meter and
// the speaking ring in a call of two (a group call's speaker comes from
// the server). One AudioContext for the page; an AnalyserNode per track.
// No DOM here.

/** How often levels are read. */
const TICK_MS = 100;
/** Above this level (0..1, RMS) someone is speaking... */
const SPEAKING = 0.02;
/** ...and counts as speaking until this long after the last loud tick. */
const HOLD_MS = 400;

/** @type {AudioContext | null} */
let context = null;

/** The page's AudioContext, made on first use; null where there is none. */
function audioContext() {
  if (context) return context;
  const Ctor = window.AudioContext ?? /** @type {any} */ (window).webkitAudioContext;
  if (!Ctor) return null;
  context = /** @type {AudioContext} */ (new Ctor());
  // Browsers may hold a context until the person interacts with the page.
  const resume = () => {
    if (context?.state === 'suspended') context.resume().catch(() => {});
  };
  for (const ev of ['pointerdown', 'keydown']) document.addEventListener(ev, resume, { capture: true });
  resume();
  return context;
}

/** The AudioContext's state, for tests and diagnostics. */
export function audioState() {
  return context?.state ?? 'none';
}

/**
 * Follows one audio track's loudness. `onChange(level, speaking)` is called
 * every tick while a track is set.
 */
export class LevelMeter {
  /** @param {(level: number, speaking: boolean) => void} onChange */
  constructor(onChange) {
    this.onChange = onChange;
    /** @type {MediaStreamTrack | null} */
    this.track = null;
    /** @type {MediaStreamAudioSourceNode | null} */
    this.source = null;
    /** @type {AnalyserNode | null} */
    this.analyser = null;
    /** @type {Float32Array<ArrayBuffer> | null} */
    this.samples = null;
    /** @type {ReturnType<typeof setInterval> | undefined} */
    this.timer = undefined;
    this.level = 0;
    this.lastLoud = -Infinity;
  }

  get speaking() {
    return performance.now() - this.lastLoud < HOLD_MS;
  }

  /**
   * Measures `track` from now on (null: nothing, level 0).
   * @param {MediaStreamTrack | null} track
   */
  setTrack(track) {
    if (track === this.track) return;
    this.stop();
    this.track = track;
    if (!track) return;
    const ctx = audioContext();
    if (!ctx) return;
    try {
      this.source = ctx.createMediaStreamSource(new MediaStream([track]));
      this.analyser = ctx.createAnalyser();
      this.analyser.fftSize = 512;
      this.samples = new Float32Array(this.analyser.fftSize);
      this.source.connect(this.analyser);
    } catch (err) {
      console.warn('webconf: cannot measure audio', err);
      this.stop();
      return;
    }
    this.timer = setInterval(() => this.tick(), TICK_MS);
  }

  tick() {
    if (!this.analyser || !this.samples) return;
    this.analyser.getFloatTimeDomainData(this.samples);
    let sum = 0;
    for (const s of this.samples) sum += s * s;
    const rms = Math.sqrt(sum / this.samples.length);
    // A disabled (muted) track plays silence: level 0, as it should.
    this.level = this.track?.enabled === false ? 0 : Math.min(1, rms);
    if (this.level > SPEAKING) this.lastLoud = performance.now();
    this.onChange(this.level, this.speaking);
  }

  stop() {
    clearInterval(this.timer);
    this.timer = undefined;
    this.source?.disconnect();
    this.source = null;
    this.analyser = null;
    this.samples = null;
    this.track = null;
    this.level = 0;
    this.lastLoud = -Infinity;
    this.onChange(0, false);
  }
}
