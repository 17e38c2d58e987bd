import { describe, expect, it } from "vitest";
import { isHidden, outcomeOf, runLimited } from "./upload";

describe("upload outcomes", () => {
  it("reads 201 as added and 200 as duplicate", () => {
    const body = JSON.stringify({ file_id: "ab", title: "So What", tags: {} });
    expect(outcomeOf(201, body).kind).toBe("added");
    expect(outcomeOf(200, body).kind).toBe("duplicate");
  });

  it("keeps the code and message of a rejection", () => {
    const outcome = outcomeOf(415, JSON.stringify({ error: { code: "unsupported_media_type", message: "not audio" } }));
    expect(outcome.kind).toBe("rejected");
    if (outcome.kind === "rejected") {
      expect(outcome.error.code).toBe("unsupported_media_type");
      expect(outcome.error.status).toBe(415);
    }
  });

  it("names a body that is not an API error", () => {
    const outcome = outcomeOf(502, "<html>Bad Gateway</html>");
    expect(outcome.kind === "rejected" && outcome.error.code).toBe("unexpected_response");
  });
});

describe("upload helpers", () => {
  it("treats dot files as hidden", () => {
    expect(isHidden(".DS_Store")).toBe(true);
    expect(isHidden("song.mp3")).toBe(false);
  });

  it("runs at most the limit at once and every item once", async () => {
    let running = 0;
    let peak = 0;
    const seen: number[] = [];
    await runLimited([1, 2, 3, 4, 5], 2, async (item) => {
      running++;
      peak = Math.max(peak, running);
      await new Promise((resolve) => setTimeout(resolve, 5));
      seen.push(item);
      running--;
    });
    expect(peak).toBe(2);
    expect(seen.sort()).toEqual([1, 2, 3, 4, 5]);
  });
});
