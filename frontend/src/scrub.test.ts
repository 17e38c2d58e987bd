import { describe, expect, it } from "vitest";
import type { ScrubStatus } from "./api";
import { scrubPhase } from "./scrub";

function scrub(change: Partial<ScrubStatus>): ScrubStatus {
  return { pass: 1, files_checked: 0, files_total: 0, errors_found: 0, last_pass_completed_at_ms: null, ...change };
}

describe("scrub phase", () => {
  it("waits before the first pass", () => {
    expect(scrubPhase(scrub({ pass: 0 }))).toEqual({ kind: "waiting" });
  });

  it("counts files during a pass", () => {
    expect(scrubPhase(scrub({ files_checked: 3, files_total: 10 }))).toEqual({ kind: "running", checked: 3, total: 10 });
    // A second pass under way, after a finished one.
    expect(scrubPhase(scrub({ pass: 2, files_checked: 3, files_total: 10, last_pass_completed_at_ms: 5 }))).toEqual({
      kind: "running",
      checked: 3,
      total: 10,
    });
  });

  it("reports the finished pass, even an empty one", () => {
    expect(scrubPhase(scrub({ files_checked: 10, files_total: 10, last_pass_completed_at_ms: 7 }))).toEqual({
      kind: "done",
      checked: 10,
      at: 7,
    });
    expect(scrubPhase(scrub({ last_pass_completed_at_ms: 7 }))).toEqual({ kind: "done", checked: 0, at: 7 });
  });
});
