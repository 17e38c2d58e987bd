// The audio engine. Two <audio> elements play the current track and load
// the next one. Gapless album runs play decoded on an AudioContext (see
// decoded.ts). When the streaming node stops responding, the stream moves
// to another node at the same position. React components read the state
// through `subscribe`.

import { streamUrl, type Track } from "../api";
import {
  DecodeCache,
  decodedPosition,
  fitsDecoding,
  SWITCH_FADE_SECONDS,
  switchPlan,
} from "./decoded";
import { chooseStreamOrigin, type StreamNode } from "./failover";
import {
  handoffDelayMs,
  insertAfter,
  move,
  nextIndex,
  prefetchPlan,
  previousAction,
  removeAt,
  type PrefetchPlan,
} from "./queue";

/** How often the node serving the stream is probed while playing. */
export const STREAM_PROBE_INTERVAL_MS = 2000;

/** A probe that takes longer than this counts as a failed node. */
export const STREAM_PROBE_TIMEOUT_MS = 1500;

/**
 * Time the element may wait for data before the node is probed. Loopback
 * and LAN nodes deliver the next bytes in milliseconds, so seconds of
 * waiting mean a stuck or dead peer.
 */
export const STALL_PROBE_DELAY_MS = 3000;

/** Seconds moved by the seek shortcuts and media keys. */
export const SEEK_STEP_SECONDS = 5;

export interface PlayerState {
  queue: Track[];
  index: number;
  playing: boolean;
  positionSeconds: number;
  durationSeconds: number;
  volume: number;
  muted: boolean;
  /** Node id the stream comes from, or null for the node of this page. */
  streamNode: string | null;
  /** Translation key of the last playback problem, or null. */
  problem: "no_node_reachable" | "playback_failed" | null;
}

type Listener = (state: PlayerState) => void;

/** How often the position is read from the context clock in decoded playback. */
const DECODED_TICK_MS = 250;

/** One decoded track placed on the context clock. */
interface Voice {
  fileId: string;
  buffer: AudioBuffer;
  source: AudioBufferSourceNode;
  gain: GainNode;
  /** Context time at which the track's first sample plays (or would have). */
  zero: number;
  stopped: boolean;
}

function defaultAudioContext(): AudioContext | null {
  return typeof AudioContext === "undefined" ? null : new AudioContext();
}

export class PlayerEngine {
  readonly elements: [HTMLAudioElement, HTMLAudioElement];
  private active = 0;
  private state: PlayerState;
  private listeners = new Set<Listener>();
  private nodes: StreamNode[] = [];
  private pageOrigin: string;
  /** Origin of the current stream; "" is this page's node. */
  private origin = "";
  private failedOrigins = new Set<string>();
  private prefetched: (PrefetchPlan & { origin: string }) | null = null;
  private probeTimer: number | undefined;
  private stallTimer: number | undefined;
  /** Timer that starts the buffered next track as the current one ends. */
  private handoffTimer: number | undefined;
  private failingOver = false;
  private resumeAt: number | null = null;
  private createContext: () => AudioContext | null;
  /**
   * Created for the first gapless pair, after a listener's click started
   * playback, so the browser lets it run; suspended while no decoded
   * track plays.
   */
  private context: AudioContext | null = null;
  private master: GainNode | null = null;
  private decodes = new DecodeCache();
  /** The current track, while it plays from its decoded copy. */
  private voice: Voice | null = null;
  /** The next track, scheduled to start where `voice` ends. */
  private queued: Voice | null = null;
  private ticker: number | undefined;

  constructor(
    pageOrigin: string,
    createAudio: () => HTMLAudioElement,
    createContext: () => AudioContext | null = defaultAudioContext,
  ) {
    this.pageOrigin = pageOrigin;
    this.createContext = createContext;
    this.elements = [createAudio(), createAudio()];
    this.state = {
      queue: [],
      index: -1,
      playing: false,
      positionSeconds: 0,
      durationSeconds: 0,
      volume: 1,
      muted: false,
      streamNode: null,
      problem: null,
    };
    this.elements.forEach((element, slot) => this.attach(element, slot));
    this.markActive();
  }

  subscribe(listener: Listener): () => void {
    this.listeners.add(listener);
    listener(this.state);
    return () => this.listeners.delete(listener);
  }

  snapshot(): PlayerState {
    return this.state;
  }

  get current(): Track | null {
    return this.state.queue[this.state.index] ?? null;
  }

  private get audio(): HTMLAudioElement {
    return this.elements[this.active];
  }

  private get standby(): HTMLAudioElement {
    return this.elements[1 - this.active];
  }

  private update(change: Partial<PlayerState>): void {
    this.state = { ...this.state, ...change };
    for (const listener of this.listeners) listener(this.state);
  }

  /** Updates the members the stream may move to, from /cluster/status. */
  setNodes(nodes: StreamNode[]): void {
    this.nodes = nodes;
    // A node reported up again may serve again.
    for (const node of nodes) {
      if (node.health === "up" && node.origin !== this.effectiveOrigin()) {
        this.failedOrigins.delete(node.origin);
      }
    }
  }

  // --- Queue ---

  playQueue(tracks: Track[], startIndex = 0): void {
    if (tracks.length === 0) return;
    this.update({ queue: [...tracks], index: -1 });
    this.load(Math.min(Math.max(startIndex, 0), tracks.length - 1), true);
  }

  enqueue(tracks: Track[]): void {
    if (this.state.index < 0) {
      this.playQueue(tracks);
      return;
    }
    this.update({ queue: [...this.state.queue, ...tracks] });
    this.prefetch();
  }

  playNext(tracks: Track[]): void {
    if (this.state.index < 0) {
      this.playQueue(tracks);
      return;
    }
    this.update({ queue: insertAfter(this.state.queue, this.state.index, tracks) });
    this.prefetch();
  }

  jump(index: number): void {
    if (index >= 0 && index < this.state.queue.length) this.load(index, true);
  }

  remove(index: number): void {
    const removingCurrent = index === this.state.index;
    const { queue, current } = removeAt(this.state.queue, this.state.index, index);
    this.update({ queue, index: current });
    if (queue.length === 0) {
      this.stop();
    } else if (removingCurrent) {
      this.load(current, this.state.playing);
    } else {
      this.prefetch();
    }
  }

  moveItem(from: number, to: number): void {
    const { queue, current } = move(this.state.queue, this.state.index, from, to);
    this.update({ queue, index: current });
    this.prefetch();
  }

  // --- Transport ---

  toggle(): void {
    if (this.state.playing) this.pause();
    else this.play();
  }

  play(): void {
    if (this.state.index < 0) return;
    if (this.voice) {
      // The context's clock stood still while paused, so the next track
      // stays scheduled right after the current one.
      void this.context?.resume();
      this.decodedPlaying(true);
      return;
    }
    this.audio.play().catch(() => this.update({ playing: false }));
  }

  pause(): void {
    if (this.voice) {
      void this.context?.suspend();
      this.decodedPlaying(false);
      return;
    }
    this.audio.pause();
  }

  next(): void {
    const next = nextIndex(this.state.queue.length, this.state.index);
    if (next !== null) this.load(next, true);
  }

  previous(): void {
    const action = previousAction(this.state.index, this.position());
    if (action.kind === "restart") this.seek(0);
    else this.load(action.index, true);
  }

  seek(seconds: number): void {
    if (this.state.index < 0) return;
    this.cancelHandoff();
    const voice = this.voice;
    if (voice && this.context) {
      const target = Math.min(Math.max(seconds, 0), voice.buffer.duration);
      this.stopVoice(this.queued);
      this.stopVoice(voice);
      this.queued = null;
      this.voice = this.startVoice(voice.fileId, voice.buffer, this.context.currentTime, target, false);
      this.update({ positionSeconds: target });
      this.scheduleQueued();
      return;
    }
    const duration = this.audio.duration;
    const limit = Number.isFinite(duration) ? duration : Number.MAX_VALUE;
    const target = Math.min(Math.max(seconds, 0), limit);
    this.audio.currentTime = target;
    this.update({ positionSeconds: target });
  }

  seekBy(deltaSeconds: number): void {
    this.seek(this.position() + deltaSeconds);
  }

  setVolume(volume: number): void {
    const clamped = Math.min(Math.max(volume, 0), 1);
    for (const element of this.elements) element.volume = clamped;
    this.update({ volume: clamped, muted: clamped === 0 ? this.state.muted : false });
    for (const element of this.elements) element.muted = this.state.muted;
    this.applyVolume();
  }

  toggleMute(): void {
    const muted = !this.state.muted;
    for (const element of this.elements) element.muted = muted;
    this.update({ muted });
    this.applyVolume();
  }

  /** Seconds into the current track. */
  private position(): number {
    if (this.voice && this.context) {
      return decodedPosition(this.voice.zero, this.voice.buffer.duration, this.context.currentTime);
    }
    return this.resumeAt ?? this.audio.currentTime;
  }

  private stop(): void {
    this.stopVoices();
    this.cancelHandoff();
    this.audio.pause();
    this.audio.removeAttribute("src");
    this.audio.load();
    this.clearPrefetch();
    this.stopProbing();
    this.update({ index: -1, playing: false, positionSeconds: 0, durationSeconds: 0 });
  }

  // --- Loading ---

  /**
   * Starts track `index`: from its decoded copy when one is ready, else
   * from the prefetched element when it has loaded that track, else from a
   * new source.
   */
  private load(index: number, autoplay: boolean): void {
    const track = this.state.queue[index];
    if (!track) return;
    this.cancelHandoff();
    this.stopVoices();
    const old = this.audio;
    const decoded = this.decodes.buffer(track.file_id);
    const context = autoplay ? this.context : null;
    if (decoded && context) {
      old.pause();
      this.voice = this.startVoice(track.file_id, decoded, context.currentTime, 0, false);
      this.resumeAt = null;
      this.update({
        index,
        positionSeconds: 0,
        durationSeconds: decoded.duration,
        streamNode: this.nodeIdOf(this.origin),
        problem: null,
      });
      this.play();
      this.prefetch();
      this.updateMediaSession();
      return;
    }
    const ready = this.prefetched;
    if (ready && ready.index === index && ready.fileId === track.file_id && !this.failedOrigins.has(ready.origin)) {
      // Swap: the standby element already holds this file.
      old.pause();
      this.active = 1 - this.active;
      this.origin = ready.origin;
      this.prefetched = null;
    } else {
      old.pause();
      this.clearPrefetch();
      this.origin = this.pickOrigin(track);
      this.audio.src = streamUrl(track.file_id, this.origin);
      this.audio.preload = "auto";
    }
    this.markActive();
    this.resetElement(this.standby);
    this.resumeAt = null;
    this.update({
      index,
      positionSeconds: 0,
      durationSeconds: Number.isFinite(this.audio.duration) ? this.audio.duration : (track.tags.duration_ms ?? 0) / 1000,
      streamNode: this.nodeIdOf(this.origin),
      problem: null,
    });
    if (this.audio.currentTime !== 0) this.audio.currentTime = 0;
    if (autoplay) this.play();
    this.prefetch();
    this.updateMediaSession();
  }

  /**
   * Loads the next track into the standby element, per [`prefetchPlan`],
   * and the decoded copies of a gapless pair. While the next track is being
   * decoded, the element loads only its metadata, so the file is not
   * downloaded twice. When decoding fails, the element buffers it in full.
   */
  private prefetch(): void {
    this.prepareDecoded();
    const found = prefetchPlan(this.state.queue, this.state.index);
    if (!found) {
      this.clearPrefetch();
      return;
    }
    const decodes = this.decodes.status(found.fileId);
    const plan: PrefetchPlan =
      found.preload === "auto" && (decodes === "pending" || decodes === "ready") ? { ...found, preload: "metadata" } : found;
    if (this.prefetched && this.prefetched.fileId === plan.fileId && this.prefetched.index === plan.index) {
      if (this.prefetched.preload !== plan.preload) {
        this.standby.preload = plan.preload;
        this.prefetched.preload = plan.preload;
      }
      return;
    }
    const origin = this.pickOrigin(this.state.queue[plan.index]);
    const standby = this.standby;
    standby.preload = plan.preload;
    standby.src = streamUrl(plan.fileId, origin);
    standby.load();
    this.prefetched = { ...plan, origin };
  }

  /**
   * Schedules the start of the next track for the moment the current one
   * ends, when the next one is a gapless successor that is fully buffered.
   */
  private scheduleHandoff(): void {
    const ready = this.prefetched;
    if (this.handoffTimer !== undefined || !ready || ready.preload !== "auto") return;
    if (this.standby.readyState < HTMLMediaElement.HAVE_ENOUGH_DATA) return;
    const audio = this.audio;
    const delay = handoffDelayMs(audio.duration, audio.currentTime, audio.playbackRate);
    if (delay === null) return;
    const index = this.state.index;
    this.handoffTimer = window.setTimeout(() => {
      this.handoffTimer = undefined;
      if (this.state.index === index && this.state.playing) this.load(ready.index, true);
    }, delay);
  }

  private cancelHandoff(): void {
    window.clearTimeout(this.handoffTimer);
    this.handoffTimer = undefined;
  }

  // --- Decoded playback ---

  /** Returns the context, created on first use, or null without Web Audio. */
  private audioContext(): AudioContext | null {
    if (this.context) return this.context;
    try {
      this.context = this.createContext();
    } catch {
      this.context = null;
    }
    if (!this.context) {
      // Not asked again: the elements play everything.
      this.createContext = () => null;
      return null;
    }
    this.master = this.context.createGain();
    this.master.connect(this.context.destination);
    this.applyVolume();
    return this.context;
  }

  private applyVolume(): void {
    if (this.master) this.master.gain.value = this.state.muted ? 0 : this.state.volume;
  }

  /**
   * Requests the decoded copies of the current track and the next one when
   * they form a gapless pair, and drops every other copy.
   */
  private prepareDecoded(): void {
    const queue = this.state.queue;
    const current = this.current;
    const plan = prefetchPlan(queue, this.state.index);
    const pair = current && plan?.preload === "auto" && fitsDecoding(current) && fitsDecoding(queue[plan.index]);
    const context = pair ? this.audioContext() : this.context;
    if (!context) return;
    const keep = new Set<string>();
    if (this.voice) keep.add(this.voice.fileId);
    if (this.queued) keep.add(this.queued.fileId);
    if (pair && plan) {
      keep.add(current.file_id);
      keep.add(plan.fileId);
    }
    if (this.queued && (!plan || plan.preload !== "auto" || plan.fileId !== this.queued.fileId)) {
      // The queue changed under the scheduled track.
      keep.delete(this.queued.fileId);
      this.stopVoice(this.queued);
      this.queued = null;
    }
    this.decodes.keepOnly(keep);
    for (const fileId of keep) {
      const track = queue.find((item) => item.file_id === fileId);
      if (!track) continue;
      const url = streamUrl(fileId, this.pickOrigin(track));
      this.decodes.request(context, fileId, url, () => this.decodedArrived());
    }
  }

  private decodedArrived(): void {
    this.adoptDecoded();
    this.scheduleQueued();
    // A failed decode lets the element buffer the next track instead.
    this.prefetch();
  }

  /**
   * Moves the current track from its element to its decoded copy, once that
   * is ready and the next track is its gapless successor.
   */
  private adoptDecoded(): void {
    const context = this.context;
    const track = this.current;
    if (!context || !track || this.voice || this.failingOver || this.resumeAt !== null || !this.state.playing) return;
    const plan = prefetchPlan(this.state.queue, this.state.index);
    if (plan?.preload !== "auto") return;
    const buffer = this.decodes.buffer(track.file_id);
    if (!buffer) return;
    if (context.state !== "running") {
      // The next timeupdate tries again.
      void context.resume();
      return;
    }
    const audio = this.audio;
    const move = switchPlan(audio.currentTime, audio.playbackRate, context.currentTime, buffer.duration);
    if (!move) return;
    this.cancelHandoff();
    this.voice = this.startVoice(track.file_id, buffer, move.startAt, move.offset, true);
    this.fadeOut(audio, move.startAt - context.currentTime);
    this.startTicker();
    this.scheduleQueued();
  }

  /** Starts the next track's decoded copy where the current one ends. */
  private scheduleQueued(): void {
    const context = this.context;
    const voice = this.voice;
    if (!context || !voice || this.queued) return;
    const plan = prefetchPlan(this.state.queue, this.state.index);
    if (plan?.preload !== "auto") return;
    const buffer = this.decodes.buffer(plan.fileId);
    if (!buffer) return;
    const endsAt = voice.zero + voice.buffer.duration;
    // Too late to join without a gap: the end of the voice loads it.
    if (endsAt <= context.currentTime) return;
    this.queued = this.startVoice(plan.fileId, buffer, endsAt, 0, false);
  }

  private startVoice(fileId: string, buffer: AudioBuffer, startAt: number, offset: number, fadeIn: boolean): Voice {
    const context = this.context!;
    const source = context.createBufferSource();
    source.buffer = buffer;
    const gain = context.createGain();
    if (fadeIn) {
      gain.gain.setValueAtTime(0, startAt);
      gain.gain.linearRampToValueAtTime(1, startAt + SWITCH_FADE_SECONDS);
    }
    source.connect(gain);
    gain.connect(this.master!);
    const voice: Voice = { fileId, buffer, source, gain, zero: startAt - offset, stopped: false };
    source.addEventListener("ended", () => this.voiceEnded(voice));
    source.start(startAt, offset);
    return voice;
  }

  private stopVoice(voice: Voice | null): void {
    if (!voice || voice.stopped) return;
    voice.stopped = true;
    try {
      voice.source.stop();
    } catch {
      // Not started yet in some browsers' eyes; disconnecting silences it.
    }
    voice.source.disconnect();
    voice.gain.disconnect();
  }

  private stopVoices(): void {
    this.stopVoice(this.queued);
    this.stopVoice(this.voice);
    this.queued = null;
    this.voice = null;
    this.stopTicker();
    this.idleContext();
  }

  /** Stops the context's clock while no decoded track plays. */
  private idleContext(): void {
    if (this.context?.state === "running") void this.context.suspend();
  }

  /** Moves on when the current decoded track reaches its end. */
  private voiceEnded(voice: Voice): void {
    if (voice.stopped || voice !== this.voice) return;
    voice.stopped = true;
    voice.source.disconnect();
    voice.gain.disconnect();
    const queued = this.queued;
    const index = this.state.index + 1;
    if (queued && this.state.queue[index]?.file_id === queued.fileId) {
      // The next track is already playing, sample for sample after this one.
      this.voice = queued;
      this.queued = null;
      this.update({
        index,
        positionSeconds: this.position(),
        durationSeconds: queued.buffer.duration,
        problem: null,
      });
      this.prefetch();
      this.updateMediaSession();
      return;
    }
    this.stopVoice(queued);
    this.queued = null;
    this.voice = null;
    this.stopTicker();
    this.idleContext();
    const next = nextIndex(this.state.queue.length, this.state.index);
    if (next !== null) {
      this.load(next, true);
    } else {
      this.update({ playing: false, positionSeconds: 0 });
      this.stopProbing();
      this.updateMediaSession();
    }
  }

  private decodedPlaying(playing: boolean): void {
    this.update({ playing, positionSeconds: this.position() });
    if (playing) {
      this.startTicker();
      this.startProbing();
    } else {
      this.stopTicker();
      this.stopProbing();
    }
    this.updateMediaSession();
  }

  /**
   * Fades the element out over the crossfade, starting in `delaySeconds`,
   * then pauses it, unless decoded playback ended in the meantime.
   */
  private fadeOut(audio: HTMLAudioElement, delaySeconds: number): void {
    const steps = 8;
    const stepMs = (SWITCH_FADE_SECONDS * 1000) / steps;
    const from = audio.volume;
    window.setTimeout(() => {
      let step = 0;
      const timer = window.setInterval(() => {
        step += 1;
        if (step < steps && this.voice) {
          audio.volume = from * (1 - step / steps);
          return;
        }
        window.clearInterval(timer);
        // Left decoded playback meanwhile: the element may hold a new track.
        if (this.voice) audio.pause();
        audio.volume = this.state.volume;
      }, stepMs);
    }, Math.max(0, delaySeconds * 1000));
  }

  private startTicker(): void {
    if (this.ticker !== undefined) return;
    this.ticker = window.setInterval(() => {
      if (!this.voice) return;
      this.update({ positionSeconds: this.position() });
      this.updatePositionState();
    }, DECODED_TICK_MS);
  }

  private stopTicker(): void {
    window.clearInterval(this.ticker);
    this.ticker = undefined;
  }

  private clearPrefetch(): void {
    if (this.prefetched) this.resetElement(this.standby);
    this.prefetched = null;
  }

  private resetElement(element: HTMLAudioElement): void {
    element.pause();
    if (element.getAttribute("src") !== null) {
      element.removeAttribute("src");
      element.load();
    }
  }

  private markActive(): void {
    this.elements.forEach((element, slot) => {
      element.dataset.active = String(slot === this.active);
    });
  }

  // --- Node choice and failover ---

  private effectiveOrigin(): string {
    return this.origin || this.pageOrigin;
  }

  private nodeIdOf(origin: string): string | null {
    const resolved = origin || this.pageOrigin;
    return this.nodes.find((node) => node.origin === resolved)?.id ?? null;
  }

  /** The page's own node while it works, else another one. */
  private pickOrigin(track: Track): string {
    if (!this.failedOrigins.has(this.pageOrigin)) return "";
    return chooseStreamOrigin(this.nodes, this.failedOrigins, track.replicas) ?? "";
  }

  /** Moves the current track to another node at the same position. */
  private failover(): void {
    const track = this.current;
    if (!track || this.failingOver) return;
    if (this.voice) {
      // The decoded copy is in memory; only later downloads move.
      this.failedOrigins.add(this.effectiveOrigin());
      const origin = chooseStreamOrigin(this.nodes, this.failedOrigins, track.replicas);
      if (origin !== null) this.origin = origin === this.pageOrigin ? "" : origin;
      this.update({ streamNode: this.nodeIdOf(this.origin) });
      this.prefetch();
      return;
    }
    this.failingOver = true;
    const position = this.resumeAt ?? this.audio.currentTime;
    const wasPlaying = this.state.playing || !this.audio.paused;
    this.failedOrigins.add(this.effectiveOrigin());
    if (this.prefetched && this.failedOrigins.has(this.prefetched.origin || this.pageOrigin)) {
      this.clearPrefetch();
    }
    const origin = chooseStreamOrigin(this.nodes, this.failedOrigins, track.replicas);
    if (origin === null) {
      this.failingOver = false;
      this.update({ problem: "no_node_reachable" });
      return;
    }
    this.origin = origin === this.pageOrigin ? "" : origin;
    this.resumeAt = position;
    const audio = this.audio;
    audio.src = streamUrl(track.file_id, this.origin);
    audio.preload = "auto";
    const resume = () => {
      audio.removeEventListener("loadedmetadata", resume);
      audio.currentTime = position;
      this.resumeAt = null;
      this.failingOver = false;
      if (wasPlaying) this.play();
    };
    audio.addEventListener("loadedmetadata", resume);
    audio.load();
    this.update({ streamNode: this.nodeIdOf(this.origin), problem: null });
    this.prefetch();
  }

  /** Checks that the stream's node still responds; fails over when not. */
  private async probe(): Promise<void> {
    const origin = this.effectiveOrigin();
    const controller = new AbortController();
    const timer = window.setTimeout(() => controller.abort(), STREAM_PROBE_TIMEOUT_MS);
    try {
      // Another node's origin gives an opaque response in no-cors mode, but
      // a refused connection still rejects, which is all the probe needs.
      await fetch(`${origin}/health`, {
        mode: origin === this.pageOrigin ? "same-origin" : "no-cors",
        cache: "no-store",
        signal: controller.signal,
      });
    } catch {
      if (origin === this.effectiveOrigin()) this.failover();
    } finally {
      window.clearTimeout(timer);
    }
  }

  private startProbing(): void {
    if (this.probeTimer !== undefined) return;
    this.probeTimer = window.setInterval(() => void this.probe(), STREAM_PROBE_INTERVAL_MS);
  }

  private stopProbing(): void {
    window.clearInterval(this.probeTimer);
    this.probeTimer = undefined;
  }

  // --- Element events ---

  private attach(element: HTMLAudioElement, slot: number): void {
    // While the track plays from its decoded copy, the elements are idle.
    const isActive = () => slot === this.active && this.voice === null;
    element.addEventListener("play", () => {
      if (!isActive()) return;
      this.update({ playing: true });
      this.startProbing();
      this.updateMediaSession();
    });
    element.addEventListener("pause", () => {
      if (!isActive() || this.failingOver) return;
      this.cancelHandoff();
      this.update({ playing: false });
      this.stopProbing();
      this.updateMediaSession();
    });
    element.addEventListener("timeupdate", () => {
      if (!isActive() || this.resumeAt !== null) return;
      this.update({ positionSeconds: element.currentTime });
      this.updatePositionState();
      if (this.state.playing) {
        this.adoptDecoded();
        if (this.voice === null) this.scheduleHandoff();
      }
    });
    element.addEventListener("durationchange", () => {
      if (isActive() && Number.isFinite(element.duration)) {
        this.update({ durationSeconds: element.duration });
      }
    });
    element.addEventListener("playing", () => {
      if (isActive()) window.clearTimeout(this.stallTimer);
    });
    element.addEventListener("waiting", () => {
      if (!isActive()) return;
      window.clearTimeout(this.stallTimer);
      this.stallTimer = window.setTimeout(() => void this.probe(), STALL_PROBE_DELAY_MS);
    });
    element.addEventListener("ended", () => {
      if (!isActive()) return;
      const next = nextIndex(this.state.queue.length, this.state.index);
      if (next !== null) {
        this.load(next, true);
      } else {
        this.update({ playing: false });
        this.stopProbing();
      }
    });
    element.addEventListener("error", () => {
      if (!element.getAttribute("src")) return;
      if (slot !== this.active) {
        // The prefetch failed; the track loads again when its turn comes.
        this.prefetched = null;
        return;
      }
      // An element left behind by decoded playback may lose its node.
      if (this.voice) return;
      const code = element.error?.code;
      if (code === MediaError.MEDIA_ERR_NETWORK || code === MediaError.MEDIA_ERR_SRC_NOT_SUPPORTED) {
        // A dead node shows up as a network error mid-stream, or as an
        // unloadable source when the connection is refused at the start.
        this.failingOver = false;
        void this.probe().then(() => {
          if (element.error && isActive() && !this.failingOver) {
            this.update({ problem: "playback_failed", playing: false });
          }
        });
        return;
      }
      this.update({ problem: "playback_failed", playing: false });
    });
  }

  // --- Media Session ---

  /** Registers the handlers of media keys and the system's media controls. */
  installMediaSession(): void {
    if (!("mediaSession" in navigator)) return;
    const session = navigator.mediaSession;
    const handlers: Array<[MediaSessionAction, MediaSessionActionHandler]> = [
      ["play", () => this.play()],
      ["pause", () => this.pause()],
      ["previoustrack", () => this.previous()],
      ["nexttrack", () => this.next()],
      ["seekbackward", (details) => this.seekBy(-(details.seekOffset ?? SEEK_STEP_SECONDS))],
      ["seekforward", (details) => this.seekBy(details.seekOffset ?? SEEK_STEP_SECONDS)],
      ["seekto", (details) => this.seek(details.seekTime ?? 0)],
    ];
    for (const [action, handler] of handlers) {
      try {
        session.setActionHandler(action, handler);
      } catch {
        // The browser does not support this action.
      }
    }
  }

  private updateMediaSession(): void {
    if (!("mediaSession" in navigator)) return;
    const track = this.current;
    const session = navigator.mediaSession;
    session.playbackState = track ? (this.state.playing ? "playing" : "paused") : "none";
    if (!track || typeof MediaMetadata === "undefined") return;
    session.metadata = new MediaMetadata({
      title: track.title,
      artist: track.tags.artist ?? "",
      album: track.tags.album ?? "",
      artwork: track.has_cover
        ? [{ src: `${this.pageOrigin}/music/tracks/${track.file_id}/cover` }]
        : [],
    });
  }

  private updatePositionState(): void {
    if (!("mediaSession" in navigator)) return;
    const duration = this.voice ? this.voice.buffer.duration : this.audio.duration;
    if (!Number.isFinite(duration) || duration <= 0) return;
    try {
      navigator.mediaSession.setPositionState({
        duration,
        position: Math.min(this.position(), duration),
        playbackRate: this.voice ? 1 : this.audio.playbackRate,
      });
    } catch {
      // A position briefly past the duration is rejected; the next update fixes it.
    }
  }
}
