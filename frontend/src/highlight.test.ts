import { describe, expect, it } from "vitest";
import { foldedWords, highlight, queryWords } from "./highlight";

/** Renders segments with matches in brackets, for compact expectations. */
function marked(text: string, query: string): string {
  return highlight(text, query)
    .map((segment) => (segment.match ? `[${segment.text}]` : segment.text))
    .join("");
}

describe("queryWords", () => {
  it("folds case, accents and spelled-out letters", () => {
    expect(queryWords("BJÖRK Straße")).toEqual(["bjork", "strasse"]);
  });

  it("drops apostrophes and splits on punctuation", () => {
    expect(queryWords("It's AC/DC")).toEqual(["its", "ac", "dc"]);
  });

  it("removes repeated words", () => {
    expect(queryWords("la La LÁ")).toEqual(["la"]);
  });
});

describe("foldedWords", () => {
  it("maps each folded character to its source", () => {
    const [word] = foldedWords("Ñu");
    expect(word.text).toBe("nu");
    expect(word.sources).toEqual([
      [0, 1],
      [1, 2],
    ]);
  });
});

describe("highlight", () => {
  it("marks an accented word matched by a plain query", () => {
    expect(marked("Björk – Jóga", "bjork joga")).toBe("[Björk] – [Jóga]");
  });

  it("marks only the matched prefix", () => {
    expect(marked("Monáe", "mon")).toBe("[Mon]áe");
    expect(marked("Janelle Monáe", "mona")).toBe("Janelle [Moná]e");
  });

  it("matches word starts only", () => {
    expect(marked("Salmon", "mon")).toBe("Salmon");
  });

  it("keeps decomposed accents inside the mark", () => {
    const text = "Cafe\u0301 del Mar";
    expect(marked(text, "cafe")).toBe("[Cafe\u0301] del Mar");
  });

  it("marks a spelled-out letter whole", () => {
    expect(marked("Straße", "stras")).toBe("[Straß]e");
  });

  it("marks across an apostrophe", () => {
    expect(marked("It's All Over", "its")).toBe("[It's] All Over");
  });

  it("prefers the longest query word", () => {
    expect(marked("Blue Bluest", "blu bluest")).toBe("[Blu]e [Bluest]");
  });

  it("leaves text alone for an empty query", () => {
    expect(highlight("So What", "  ")).toEqual([{ text: "So What", match: false }]);
    expect(highlight("", "x")).toEqual([]);
  });

  it("keeps characters outside the basic plane intact", () => {
    expect(marked("𝄞 Clef", "clef")).toBe("𝄞 [Clef]");
  });
});
