import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { ApiError, CLIENT_ERROR_CODES } from "../api";
import { detectLanguage, errorMessage, LANGUAGES, MESSAGES, translate, translatePlural } from "./index";

const ERROR_RS = fileURLToPath(new URL("../../../src/api/error.rs", import.meta.url));

/** Reads the stable codes of `ApiError::code` from the node's source. */
function serverErrorCodes(): string[] {
  const source = readFileSync(ERROR_RS, "utf8");
  const body = source.slice(source.indexOf("fn code(&self)"));
  const end = body.indexOf("\n    }\n");
  const codes = [...body.slice(0, end).matchAll(/=>\s*"([a-z0-9_]+)"/g)].map((match) => match[1]);
  return [...new Set(codes)];
}

function placeholders(text: string): string[] {
  return [...text.matchAll(/\{(\w+)\}/g)].map((match) => match[1]).sort();
}

describe("message tables", () => {
  const reference = Object.keys(MESSAGES.en).sort();

  it.each(LANGUAGES)("%s has every key and no other", (language) => {
    expect(Object.keys(MESSAGES[language]).sort()).toEqual(reference);
  });

  it.each(LANGUAGES)("%s has no empty message", (language) => {
    const messages: Record<string, string> = MESSAGES[language];
    const empty = Object.entries(messages).filter(([, text]) => text.trim() === "");
    expect(empty).toEqual([]);
  });

  it.each(LANGUAGES)("%s uses the same placeholders as English", (language) => {
    const messages: Record<string, string> = MESSAGES[language];
    const english: Record<string, string> = MESSAGES.en;
    for (const key of reference) {
      expect(placeholders(messages[key]), key).toEqual(placeholders(english[key]));
    }
  });

  it("error.rs yields the codes it declares", () => {
    const codes = serverErrorCodes();
    expect(codes.length).toBeGreaterThan(10);
    expect(codes).toContain("unsupported_media_type");
    expect(codes).toContain("internal_error");
  });

  it.each(LANGUAGES)("%s maps every API error code", (language) => {
    const messages: Record<string, string> = MESSAGES[language];
    const codes = [...serverErrorCodes(), ...CLIENT_ERROR_CODES];
    const missing = codes.filter((code) => !(`error.${code}` in messages));
    expect(missing).toEqual([]);
  });
});

describe("translate", () => {
  it("fills placeholders", () => {
    expect(translate("en", "pager.range", { first: 1, last: 100, total: "1,234" })).toBe("1–100 of 1,234");
    expect(translate("es", "pager.range", { first: 1, last: 100, total: 7 })).toBe("1–100 de 7");
  });

  it("leaves an unknown placeholder visible", () => {
    expect(translate("en", "pager.range", { first: 1 })).toBe("1–{last} of {total}");
  });
});

describe("translatePlural", () => {
  it("picks the form by the language's rules", () => {
    expect(translatePlural("en", "library.trackCount", 1)).toBe("1 track");
    expect(translatePlural("en", "library.trackCount", 0)).toBe("0 tracks");
    expect(translatePlural("es", "library.trackCount", 1)).toBe("1 canción");
    expect(translatePlural("es", "library.trackCount", 1200)).toBe("1200 canciones");
    expect(translatePlural("en", "library.trackCount", 1200)).toBe("1,200 tracks");
    // Spanish participles agree with the count.
    expect(translatePlural("es", "upload.summary.duplicate", 1)).toBe("1 ya estaba en la biblioteca");
    expect(translatePlural("es", "upload.summary.rejected", 2)).toBe("2 rechazados");
  });

  it("has both forms for every plural key", () => {
    for (const language of LANGUAGES) {
      const keys = Object.keys(MESSAGES[language]);
      for (const key of keys.filter((name) => name.endsWith(".other"))) {
        expect(keys, `${language} ${key}`).toContain(key.replace(/\.other$/, ".one"));
      }
    }
  });
});

describe("detectLanguage", () => {
  it("prefers a valid stored choice", () => {
    expect(detectLanguage("es", ["en-US"])).toBe("es");
  });

  it("ignores an invalid stored choice", () => {
    expect(detectLanguage("fr", ["es-MX", "en"])).toBe("es");
  });

  it("takes the first browser language the app has", () => {
    expect(detectLanguage(null, ["de-DE", "es-AR", "en"])).toBe("es");
    expect(detectLanguage(null, ["EN-gb"])).toBe("en");
  });

  it("falls back to English", () => {
    expect(detectLanguage(null, ["de", "fr"])).toBe("en");
    expect(detectLanguage(null, [])).toBe("en");
  });
});

describe("errorMessage", () => {
  it("translates a known code", () => {
    const error = new ApiError(415, "unsupported_media_type", "the file is not audio");
    expect(errorMessage("es", error)).toBe(MESSAGES.es["error.unsupported_media_type"]);
    expect(errorMessage("en", error)).toBe(MESSAGES.en["error.unsupported_media_type"]);
  });

  it("falls back to the server message for an unknown code", () => {
    const error = new ApiError(409, "brand_new_code", "a message from a newer node");
    expect(errorMessage("es", error)).toBe("a message from a newer node");
  });

  it("describes a non-API failure generically", () => {
    expect(errorMessage("en", new TypeError("boom"))).toBe(MESSAGES.en["error.unexpected_response"]);
  });
});
