// Queue logic of the player, free of the DOM so it can be tested alone.

import type { Track } from "../api";

/** Seconds into a track after which "previous" restarts it instead. */
export const RESTART_THRESHOLD_SECONDS = 3;

/** Returns the index after `index`, or null at the end of the queue. */
export function nextIndex(length: number, index: number): number | null {
  return index + 1 < length ? index + 1 : null;
}

/** What "previous" does at `positionSeconds` into track `index`. */
export type PreviousAction = { kind: "restart" } | { kind: "go"; index: number };

export function previousAction(index: number, positionSeconds: number): PreviousAction {
  if (positionSeconds > RESTART_THRESHOLD_SECONDS || index === 0) return { kind: "restart" };
  return { kind: "go", index: index - 1 };
}

function sameText(a: string | null, b: string | null): boolean {
  return (a ?? "").trim().toLowerCase() === (b ?? "").trim().toLowerCase();
}

/**
 * Whether `second` directly follows `first` on the same album (same album
 * and album artist, next track number on the same disc or track 1 of the
 * next disc). Such pairs are played without a gap: the next file is fully
 * buffered before the first one ends.
 */
export function isGaplessPair(first: Track, second: Track): boolean {
  const a = first.tags;
  const b = second.tags;
  if (!a.album || !b.album || !sameText(a.album, b.album)) return false;
  if (!sameText(a.album_artist ?? a.artist, b.album_artist ?? b.artist)) return false;
  if (a.track_number === null || b.track_number === null) return false;
  const discA = a.disc_number ?? 1;
  const discB = b.disc_number ?? 1;
  if (discA === discB) return b.track_number === a.track_number + 1;
  return discB === discA + 1 && b.track_number === 1;
}

/** The file to load ahead of time, and how much of it. */
export interface PrefetchPlan {
  index: number;
  fileId: string;
  /** "auto" buffers the file for a gapless start; "metadata" only checks it. */
  preload: "auto" | "metadata";
}

export function prefetchPlan(queue: readonly Track[], index: number): PrefetchPlan | null {
  const next = nextIndex(queue.length, index);
  if (next === null || index < 0) return null;
  const gapless = isGaplessPair(queue[index], queue[next]);
  return { index: next, fileId: queue[next].file_id, preload: gapless ? "auto" : "metadata" };
}

/**
 * Seconds before the end of a track from which the start of a buffered
 * next track is scheduled. Chromium fires `timeupdate` about every 250 ms,
 * so one event always falls inside this window.
 */
export const HANDOFF_WINDOW_SECONDS = 0.5;

/**
 * Returns the milliseconds until a track at `positionSeconds` of
 * `durationSeconds` ends when played at `rate`, once that end is inside
 * [`HANDOFF_WINDOW_SECONDS`]; null while it is further away or unknown.
 * Starting the next track on a timer at that moment, rather than on the
 * `ended` event, avoids the event's delay between the two tracks.
 */
export function handoffDelayMs(durationSeconds: number, positionSeconds: number, rate: number): number | null {
  if (!Number.isFinite(durationSeconds) || durationSeconds <= 0 || !(rate > 0)) return null;
  const remaining = durationSeconds - positionSeconds;
  if (remaining > HANDOFF_WINDOW_SECONDS) return null;
  return Math.max(0, (remaining / rate) * 1000);
}

/** Inserts `tracks` right after `index` ("play next"). */
export function insertAfter<T>(queue: readonly T[], index: number, tracks: readonly T[]): T[] {
  const at = Math.min(Math.max(index + 1, 0), queue.length);
  return [...queue.slice(0, at), ...tracks, ...queue.slice(at)];
}

/** Removes item `removed` and returns the new queue and current index. */
export function removeAt<T>(
  queue: readonly T[],
  current: number,
  removed: number,
): { queue: T[]; current: number } {
  if (removed < 0 || removed >= queue.length) return { queue: [...queue], current };
  const rest = [...queue.slice(0, removed), ...queue.slice(removed + 1)];
  if (removed < current) return { queue: rest, current: current - 1 };
  if (removed === current) return { queue: rest, current: Math.min(current, rest.length - 1) };
  return { queue: rest, current };
}

/** Moves item `from` to position `to` and returns where the current item went. */
export function move<T>(
  queue: readonly T[],
  current: number,
  from: number,
  to: number,
): { queue: T[]; current: number } {
  if (from < 0 || from >= queue.length || to < 0 || to >= queue.length || from === to) {
    return { queue: [...queue], current };
  }
  const items = [...queue];
  const [item] = items.splice(from, 1);
  items.splice(to, 0, item);
  let moved = current;
  if (current === from) moved = to;
  else if (from < current && to >= current) moved = current - 1;
  else if (from > current && to <= current) moved = current + 1;
  return { queue: items, current: moved };
}
