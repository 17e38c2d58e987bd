import { describe, expect, it } from "vitest";
import { formatBytes, formatDuration } from "./api";

const spanish = (value: number, options?: Intl.NumberFormatOptions) => new Intl.NumberFormat("es", options).format(value);

describe("sizes", () => {
  it("shows bytes whole and larger units with one decimal", () => {
    expect(formatBytes(512)).toBe("512 B");
    expect(formatBytes(4608)).toBe("4.5 KiB");
    expect(formatBytes(3 * 1024 * 1024)).toBe("3.0 MiB");
  });

  it("uses the language's decimal separator", () => {
    expect(formatBytes(4608, spanish)).toBe("4,5 KiB");
    expect(formatBytes(5000 * 1024 * 1024 * 1024, spanish)).toBe("4,9 TiB");
  });
});

describe("durations", () => {
  it("shows minutes and seconds, and a dash when unknown", () => {
    expect(formatDuration(225_000)).toBe("3:45");
    expect(formatDuration(null)).toBe("–");
  });
});
