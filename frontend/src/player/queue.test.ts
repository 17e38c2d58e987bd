import { describe, expect, it } from "vitest";
import type { Track } from "../api";
import {
  HANDOFF_WINDOW_SECONDS,
  handoffDelayMs,
  insertAfter,
  isGaplessPair,
  move,
  nextIndex,
  prefetchPlan,
  previousAction,
  removeAt,
  RESTART_THRESHOLD_SECONDS,
} from "./queue";

function track(id: string, album: string | null, trackNumber: number | null, disc: number | null = 1, artist = "Miles Davis"): Track {
  return {
    file_id: id.padEnd(64, "0"),
    file_name: `${id}.flac`,
    title: id,
    tags: {
      title: id,
      artist,
      album,
      album_artist: null,
      track_number: trackNumber,
      track_total: null,
      disc_number: disc,
      disc_total: null,
      year: null,
      genre: null,
      duration_ms: 180_000,
      sample_rate: null,
      channels: null,
      bitrate_kbps: null,
    },
    format: "flac",
    content_type: "audio/flac",
    size_bytes: 1000,
    has_cover: false,
    replicas: ["node1", "node2", "node3"],
    added_at_ms: 0,
  };
}

describe("gapless pairs", () => {
  it("accepts the next track of the same disc", () => {
    expect(isGaplessPair(track("a", "Kind of Blue", 1), track("b", "Kind of Blue", 2))).toBe(true);
  });

  it("accepts track 1 of the next disc", () => {
    expect(isGaplessPair(track("a", "Live", 9, 1), track("b", "Live", 1, 2))).toBe(true);
  });

  it("ignores case and surrounding spaces in album names", () => {
    expect(isGaplessPair(track("a", "Kind of Blue ", 1), track("b", "KIND OF BLUE", 2))).toBe(true);
  });

  it("rejects a skipped track, another album or artist, or missing numbers", () => {
    expect(isGaplessPair(track("a", "X", 1), track("b", "X", 3))).toBe(false);
    expect(isGaplessPair(track("a", "X", 1), track("b", "Y", 2))).toBe(false);
    expect(isGaplessPair(track("a", "X", 1), track("b", "X", 2, 1, "Bill Evans"))).toBe(false);
    expect(isGaplessPair(track("a", "X", null), track("b", "X", 2))).toBe(false);
    expect(isGaplessPair(track("a", null, 1), track("b", null, 2))).toBe(false);
    expect(isGaplessPair(track("a", "X", 2), track("b", "X", 1))).toBe(false);
  });
});

describe("prefetch plan", () => {
  const album = [track("a", "A", 1), track("b", "A", 2), track("c", "Other", 1)];

  it("buffers the next album track fully", () => {
    expect(prefetchPlan(album, 0)).toEqual({ index: 1, fileId: album[1].file_id, preload: "auto" });
  });

  it("only checks a track of another album", () => {
    expect(prefetchPlan(album, 1)).toEqual({ index: 2, fileId: album[2].file_id, preload: "metadata" });
  });

  it("has nothing to load at the end or with no current track", () => {
    expect(prefetchPlan(album, 2)).toBeNull();
    expect(prefetchPlan(album, -1)).toBeNull();
    expect(prefetchPlan([], 0)).toBeNull();
  });
});

describe("navigation", () => {
  it("next stops at the end", () => {
    expect(nextIndex(3, 0)).toBe(1);
    expect(nextIndex(3, 2)).toBeNull();
  });

  it("previous restarts a track played past the threshold", () => {
    expect(previousAction(2, RESTART_THRESHOLD_SECONDS + 0.5)).toEqual({ kind: "restart" });
    expect(previousAction(2, 1)).toEqual({ kind: "go", index: 1 });
    expect(previousAction(0, 1)).toEqual({ kind: "restart" });
  });
});

describe("queue edits", () => {
  const items = ["a", "b", "c", "d"];

  it("inserts after the current item", () => {
    expect(insertAfter(items, 1, ["x", "y"])).toEqual(["a", "b", "x", "y", "c", "d"]);
    expect(insertAfter(items, -1, ["x"])).toEqual(["x", "a", "b", "c", "d"]);
    expect(insertAfter(items, 9, ["x"])).toEqual([...items, "x"]);
  });

  it("keeps the current item when removing another", () => {
    expect(removeAt(items, 2, 0)).toEqual({ queue: ["b", "c", "d"], current: 1 });
    expect(removeAt(items, 2, 3)).toEqual({ queue: ["a", "b", "c"], current: 2 });
  });

  it("moves to the following item when removing the current one", () => {
    expect(removeAt(items, 1, 1)).toEqual({ queue: ["a", "c", "d"], current: 1 });
    expect(removeAt(items, 3, 3)).toEqual({ queue: ["a", "b", "c"], current: 2 });
    expect(removeAt(["a"], 0, 0)).toEqual({ queue: [], current: -1 });
  });

  it("ignores an index out of range", () => {
    expect(removeAt(items, 1, 7)).toEqual({ queue: items, current: 1 });
  });

  it("follows the current item when moving", () => {
    expect(move(items, 1, 1, 3)).toEqual({ queue: ["a", "c", "d", "b"], current: 3 });
    expect(move(items, 2, 0, 3)).toEqual({ queue: ["b", "c", "d", "a"], current: 1 });
    expect(move(items, 1, 3, 0)).toEqual({ queue: ["d", "a", "b", "c"], current: 2 });
    expect(move(items, 1, 2, 3)).toEqual({ queue: ["a", "b", "d", "c"], current: 1 });
  });
});

describe("handoff to the next track", () => {
  it("waits while the end is outside the window", () => {
    expect(handoffDelayMs(180, 100, 1)).toBeNull();
    expect(handoffDelayMs(180, 180 - HANDOFF_WINDOW_SECONDS - 0.01, 1)).toBeNull();
  });

  it("returns the time left inside the window", () => {
    expect(handoffDelayMs(180, 179.75, 1)).toBeCloseTo(250, 6);
    expect(handoffDelayMs(180, 179.75, 2)).toBeCloseTo(125, 6);
  });

  it("never returns a negative delay", () => {
    expect(handoffDelayMs(180, 180.2, 1)).toBe(0);
  });

  it("returns null for an unknown duration or a stopped rate", () => {
    expect(handoffDelayMs(Number.NaN, 1, 1)).toBeNull();
    expect(handoffDelayMs(Number.POSITIVE_INFINITY, 1, 1)).toBeNull();
    expect(handoffDelayMs(0, 0, 1)).toBeNull();
    expect(handoffDelayMs(180, 179.9, 0)).toBeNull();
  });
});
