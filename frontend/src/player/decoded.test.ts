import { describe, expect, it } from "vitest";
import type { Track } from "../api";
import {
  DecodeCache,
  decodedPosition,
  fitsDecoding,
  GAPLESS_MAX_DECODED_SECONDS,
  SWITCH_LEAD_SECONDS,
  SWITCH_MIN_REMAINING_SECONDS,
  switchPlan,
  type Decoder,
  type FetchBytes,
} from "./decoded";

function track(durationMs: number | null): Track {
  return { file_id: "f", title: "t", tags: { duration_ms: durationMs } } as unknown as Track;
}

/** A download the test settles by hand. */
interface Pending {
  url: string;
  signal: AbortSignal;
  resolve: (bytes: ArrayBuffer) => void;
  reject: (error: Error) => void;
}

function manualFetch(): { fetchBytes: FetchBytes; pending: Pending[] } {
  const pending: Pending[] = [];
  const fetchBytes: FetchBytes = (url, signal) =>
    new Promise((resolve, reject) => pending.push({ url, signal, resolve, reject }));
  return { fetchBytes, pending };
}

/** Decodes a buffer of N bytes into an "AudioBuffer" of N seconds. */
const decoder: Decoder = {
  decodeAudioData: async (data) => {
    if (data.byteLength === 0) throw new Error("not audio");
    return { duration: data.byteLength } as AudioBuffer;
  },
};

const settle = () => new Promise((resolve) => setTimeout(resolve, 0));

describe("decoded playback", () => {
  it("decodes only tracks of known length up to the limit", () => {
    expect(fitsDecoding(track(180_000))).toBe(true);
    expect(fitsDecoding(track(GAPLESS_MAX_DECODED_SECONDS * 1000))).toBe(true);
    expect(fitsDecoding(track(GAPLESS_MAX_DECODED_SECONDS * 1000 + 1))).toBe(false);
    expect(fitsDecoding(track(null))).toBe(false);
    expect(fitsDecoding(track(0))).toBe(false);
  });

  it("reads the position off the context clock", () => {
    expect(decodedPosition(10, 180, 12.5)).toBe(2.5);
    expect(decodedPosition(10, 180, 9)).toBe(0);
    expect(decodedPosition(10, 180, 400)).toBe(180);
  });

  it("plans the move from the element ahead of the clock", () => {
    const plan = switchPlan(20, 1, 5, 180);
    expect(plan).not.toBeNull();
    expect(plan!.startAt).toBeCloseTo(5 + SWITCH_LEAD_SECONDS);
    expect(plan!.offset).toBeCloseTo(20 + SWITCH_LEAD_SECONDS);
  });

  it("skips the move near the end, at other rates and without a position", () => {
    const late = 180 - SWITCH_LEAD_SECONDS - SWITCH_MIN_REMAINING_SECONDS + 0.01;
    expect(switchPlan(late, 1, 5, 180)).toBeNull();
    expect(switchPlan(20, 1.5, 5, 180)).toBeNull();
    expect(switchPlan(Number.NaN, 1, 5, 180)).toBeNull();
  });

  it("fetches and decodes each file once", async () => {
    const { fetchBytes, pending } = manualFetch();
    const cache = new DecodeCache(fetchBytes);
    let settled = 0;
    cache.request(decoder, "a", "/music/stream/a", () => settled++);
    cache.request(decoder, "a", "/music/stream/a", () => settled++);
    expect(pending.map((item) => item.url)).toEqual(["/music/stream/a"]);
    expect(cache.status("a")).toBe("pending");
    expect(cache.buffer("a")).toBeNull();

    pending[0].resolve(new ArrayBuffer(7));
    await settle();
    expect(cache.status("a")).toBe("ready");
    expect(cache.buffer("a")?.duration).toBe(7);
    expect(settled).toBe(1);
  });

  it("marks failed downloads and undecodable files as failed", async () => {
    const { fetchBytes, pending } = manualFetch();
    const cache = new DecodeCache(fetchBytes);
    let settled = 0;
    cache.request(decoder, "gone", "/music/stream/gone", () => settled++);
    cache.request(decoder, "junk", "/music/stream/junk", () => settled++);
    pending[0].reject(new Error("HTTP 503"));
    pending[1].resolve(new ArrayBuffer(0));
    await settle();
    expect(cache.status("gone")).toBe("failed");
    expect(cache.status("junk")).toBe("failed");
    expect(cache.buffer("junk")).toBeNull();
    expect(settled).toBe(2);
  });

  it("cancels and forgets the files it no longer keeps", async () => {
    const { fetchBytes, pending } = manualFetch();
    const cache = new DecodeCache(fetchBytes);
    let settled = 0;
    cache.request(decoder, "a", "/a", () => settled++);
    cache.request(decoder, "b", "/b", () => settled++);
    cache.keepOnly(new Set(["b"]));
    expect(pending[0].signal.aborted).toBe(true);
    expect(pending[1].signal.aborted).toBe(false);
    expect(cache.status("a")).toBe("absent");

    // The dropped download ends without reporting back.
    pending[0].reject(new Error("aborted"));
    pending[1].resolve(new ArrayBuffer(3));
    await settle();
    expect(settled).toBe(1);
    expect(cache.status("b")).toBe("ready");

    // Asked for again, it is fetched anew.
    cache.request(decoder, "a", "/a", () => settled++);
    expect(pending).toHaveLength(3);
  });
});
