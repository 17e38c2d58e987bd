// Highlighting of search matches. The server folds text before it compares
// (src/catalog/fold.rs): lowercase, NFKD without combining marks, a few
// letters spelled out, apostrophes dropped inside words, and every other
// character that is not a letter or digit splitting words. A query word
// matches a text word it is a prefix of. This file folds the same way and
// keeps, for every folded character, the original character it came from,
// so the matched prefix can be marked in the text as shown.

/** Letters that NFKD leaves whole, spelled out as the server does. */
const SPELLED_OUT: Record<string, string> = {
  "ß": "ss",
  "æ": "ae",
  "œ": "oe",
  "ø": "o",
  "đ": "d",
  "ð": "d",
  "ł": "l",
  "þ": "th",
  "ı": "i",
  "ħ": "h",
};

const COMBINING_MARK = /\p{M}/u;
const ALPHANUMERIC = /[\p{L}\p{N}]/u;

function isApostrophe(c: string): boolean {
  return c === "'" || c === "\u2019";
}

/** A folded word with the original [start, end) of each of its characters. */
interface FoldedWord {
  text: string;
  sources: Array<[number, number]>;
}

/** Folds one original character into the characters it compares as. */
function foldChar(c: string): string {
  let folded = "";
  for (const part of c.toLowerCase().normalize("NFKD")) {
    if (COMBINING_MARK.test(part)) continue;
    folded += SPELLED_OUT[part] ?? part;
  }
  return folded;
}

/** Splits `text` into folded words, each mapped back to the original. */
export function foldedWords(text: string): FoldedWord[] {
  const words: FoldedWord[] = [];
  let current: FoldedWord = { text: "", sources: [] };
  let offset = 0;
  for (const c of text) {
    const start = offset;
    offset += c.length;
    if (isApostrophe(c)) continue;
    const folded = foldChar(c);
    if (folded === "" && current.sources.length > 0) {
      // A combining mark written apart belongs to the letter before it.
      current.sources[current.sources.length - 1][1] = offset;
      continue;
    }
    for (const f of folded) {
      if (ALPHANUMERIC.test(f)) {
        current.text += f;
        current.sources.push([start, offset]);
      } else if (current.text) {
        words.push(current);
        current = { text: "", sources: [] };
      }
    }
  }
  if (current.text) words.push(current);
  return words;
}

/** Folds a query into its distinct words, as the server does. */
export function queryWords(query: string): string[] {
  return [...new Set(foldedWords(query).map((word) => word.text))];
}

/** A run of text, marked when it is part of a match. */
export interface Segment {
  text: string;
  match: boolean;
}

/**
 * Splits `text` into segments, marking the start of every word that one of
 * the words of `query` is a prefix of (the longest such prefix).
 */
export function highlight(text: string, query: string): Segment[] {
  const words = queryWords(query);
  if (words.length === 0 || !text) return text ? [{ text, match: false }] : [];

  const marked = new Array<boolean>(text.length).fill(false);
  for (const word of foldedWords(text)) {
    let longest = 0;
    for (const queryWord of words) {
      if (queryWord.length > longest && word.text.startsWith(queryWord)) {
        longest = queryWord.length;
      }
    }
    if (longest === 0) continue;
    // A spelled-out letter ("ß" as "ss") is marked whole once any of its
    // folded characters is.
    const [from] = word.sources[0];
    const [, to] = word.sources[longest - 1];
    marked.fill(true, from, to);
  }

  const segments: Segment[] = [];
  for (let i = 0; i < text.length; i++) {
    const last = segments[segments.length - 1];
    if (last && last.match === marked[i]) {
      last.text += text[i];
    } else {
      segments.push({ text: text[i], match: marked[i] });
    }
  }
  return segments;
}
