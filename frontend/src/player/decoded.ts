// Decoded playback, for gapless album runs. When the next track in the
// queue directly follows the current one on an album, both files are
// fetched whole, decoded with Web Audio and started back to back on the
// AudioContext clock. The next track's first sample is scheduled for the
// instant the current track's last sample ends. An <audio> element still
// starts each run, because it plays before the file has fully arrived;
// the engine moves the track to its decoded copy, with a short crossfade,
// as soon as that copy is ready.

import type { Track } from "../api";

/**
 * Longest track that is decoded for gapless playback; longer ones play
 * from the element alone. Decoded audio is 32-bit float: a stereo minute
 * at 48 kHz takes about 23 MB, and the current and next tracks are kept.
 */
export const GAPLESS_MAX_DECODED_SECONDS = 20 * 60;

/** How far ahead of the context clock the move to the decoded copy is set. */
export const SWITCH_LEAD_SECONDS = 0.05;

/** Length of the crossfade from the element to the decoded copy. */
export const SWITCH_FADE_SECONDS = 0.04;

/**
 * With less than this left of the track, the element plays it out and the
 * next track starts from its decoded copy, after the `ended` event.
 */
export const SWITCH_MIN_REMAINING_SECONDS = 0.5;

/** Returns whether `track` has a known length short enough to decode. */
export function fitsDecoding(track: Track): boolean {
  const ms = track.tags.duration_ms;
  return ms !== null && ms !== undefined && ms > 0 && ms <= GAPLESS_MAX_DECODED_SECONDS * 1000;
}

/** Position in seconds of a decoded track whose first sample plays at context time `zero`. */
export function decodedPosition(zero: number, durationSeconds: number, now: number): number {
  return Math.min(Math.max(now - zero, 0), durationSeconds);
}

/** When and where the decoded copy takes over from the element. */
export interface SwitchPlan {
  /** Context time at which the decoded copy starts. */
  startAt: number;
  /** Seconds into the track at which it starts. */
  offset: number;
}

/**
 * Plans the move from an element at `elementSeconds`, playing at `rate`,
 * to the decoded copy of a track of `durationSeconds`, with the context
 * clock at `now`. Null when the move should not happen: decoded copies
 * play at normal speed only, and near the end the element plays on.
 */
export function switchPlan(elementSeconds: number, rate: number, now: number, durationSeconds: number): SwitchPlan | null {
  if (rate !== 1 || !Number.isFinite(elementSeconds)) return null;
  const offset = elementSeconds + SWITCH_LEAD_SECONDS;
  if (durationSeconds - offset < SWITCH_MIN_REMAINING_SECONDS) return null;
  return { startAt: now + SWITCH_LEAD_SECONDS, offset };
}

/** State of one file in the cache. */
export type DecodeStatus = "pending" | "ready" | "failed" | "absent";

/** The part of an AudioContext the cache needs. */
export interface Decoder {
  decodeAudioData(data: ArrayBuffer): Promise<AudioBuffer>;
}

/** Fetches a file's bytes; rejects on any failure. */
export type FetchBytes = (url: string, signal: AbortSignal) => Promise<ArrayBuffer>;

interface Entry {
  controller: AbortController;
  buffer: AudioBuffer | null;
  status: "pending" | "ready" | "failed";
}

/** Decoded tracks by file id, fetched and decoded once each. */
export class DecodeCache {
  private entries = new Map<string, Entry>();

  constructor(private readonly fetchBytes: FetchBytes = fetchWhole) {}

  status(fileId: string): DecodeStatus {
    return this.entries.get(fileId)?.status ?? "absent";
  }

  /** Returns the decoded track once it is ready, else null. */
  buffer(fileId: string): AudioBuffer | null {
    return this.entries.get(fileId)?.buffer ?? null;
  }

  /**
   * Starts fetching and decoding `fileId` from `url` unless that is under
   * way or done; `settled` runs when this request ends, either way.
   */
  request(decoder: Decoder, fileId: string, url: string, settled: () => void): void {
    if (this.entries.has(fileId)) return;
    const entry: Entry = { controller: new AbortController(), buffer: null, status: "pending" };
    this.entries.set(fileId, entry);
    this.fetchBytes(url, entry.controller.signal)
      .then((bytes) => decoder.decodeAudioData(bytes))
      .then(
        (buffer) => {
          entry.buffer = buffer;
          entry.status = "ready";
        },
        () => {
          entry.status = "failed";
        },
      )
      .finally(() => {
        // A file dropped while it loaded does not report back.
        if (this.entries.get(fileId) === entry) settled();
      });
  }

  /** Drops every file not in `keep`, cancelling its download. */
  keepOnly(keep: ReadonlySet<string>): void {
    for (const [fileId, entry] of this.entries) {
      if (keep.has(fileId)) continue;
      entry.controller.abort();
      this.entries.delete(fileId);
    }
  }
}

async function fetchWhole(url: string, signal: AbortSignal): Promise<ArrayBuffer> {
  const response = await fetch(url, { signal });
  if (!response.ok) throw new Error(`HTTP ${response.status} for ${url}`);
  return response.arrayBuffer();
}
