// A small i18n layer: one flat message table per language, `{name}`
// placeholders, the browser's language by default and the listener's
// choice remembered in localStorage.

import { createContext, useCallback, useContext, useEffect, useMemo, useState } from "react";
import type { ReactNode } from "react";
import { ApiError } from "../api";
import { en, type MessageKey } from "./en";
import { es } from "./es";

export type { MessageKey } from "./en";

export const MESSAGES = { en, es } as const;
export type Language = keyof typeof MESSAGES;
export const LANGUAGES = Object.keys(MESSAGES) as Language[];

/** localStorage key of the chosen language. */
export const LANGUAGE_STORAGE_KEY = "dispotify.language";

export type Params = Record<string, string | number>;

/** Keys with `.one` and `.other` forms, named without the suffix. */
export type PluralKey = MessageKey extends infer K
  ? K extends `${infer Base}.other`
    ? Base
    : never
  : never;

/**
 * Picks the plural form of `key` for `count` by the language's plural
 * rules, with `count` formatted for the language. Forms other than "one"
 * (such as Spanish "many" for a million) use `.other`.
 */
export function translatePlural(language: Language, key: PluralKey, count: number, params?: Params): string {
  const form = new Intl.PluralRules(language).select(count) === "one" ? "one" : "other";
  const formatted = new Intl.NumberFormat(language).format(count);
  return translate(language, `${key}.${form}` as MessageKey, { ...params, count: formatted });
}

function isLanguage(value: string | null | undefined): value is Language {
  return value !== null && value !== undefined && value in MESSAGES;
}

/**
 * Returns the stored choice when valid, else the first of the browser's languages
 * that the app has (by primary subtag, so "es-MX" gives "es"), else English.
 */
export function detectLanguage(stored: string | null, preferred: readonly string[]): Language {
  if (isLanguage(stored)) return stored;
  for (const tag of preferred) {
    const primary = tag.toLowerCase().split("-")[0];
    if (isLanguage(primary)) return primary;
  }
  return "en";
}

export function translate(language: Language, key: MessageKey, params?: Params): string {
  const template: string = MESSAGES[language][key] ?? en[key] ?? key;
  if (!params) return template;
  return template.replace(/\{(\w+)\}/g, (whole, name: string) =>
    name in params ? String(params[name]) : whole,
  );
}

/**
 * Returns the listener-facing text of a failure: the translation of an API error
 * code, or the server's English message for a code this app does not know.
 */
export function errorMessage(language: Language, error: unknown): string {
  if (error instanceof ApiError) {
    const key = `error.${error.code}`;
    if (key in MESSAGES[language]) return translate(language, key as MessageKey);
    return error.message;
  }
  return translate(language, "error.unexpected_response");
}

interface I18n {
  language: Language;
  setLanguage: (language: Language) => void;
  t: (key: MessageKey, params?: Params) => string;
  /** Translates the plural form of `key` (`key.one` or `key.other`) for `count`. */
  tn: (key: PluralKey, count: number, params?: Params) => string;
  describeError: (error: unknown) => string;
  formatNumber: (value: number, options?: Intl.NumberFormatOptions) => string;
}

const I18nContext = createContext<I18n | null>(null);

function readStoredLanguage(): string | null {
  try {
    return localStorage.getItem(LANGUAGE_STORAGE_KEY);
  } catch {
    return null;
  }
}

export function I18nProvider({ children }: { children: ReactNode }) {
  const [language, setLanguageState] = useState<Language>(() =>
    detectLanguage(readStoredLanguage(), navigator.languages ?? [navigator.language]),
  );

  const setLanguage = useCallback((next: Language) => {
    setLanguageState(next);
    try {
      localStorage.setItem(LANGUAGE_STORAGE_KEY, next);
    } catch {
      // Storage disabled: the choice lasts for this page only.
    }
  }, []);

  useEffect(() => {
    document.documentElement.lang = language;
    document.title = translate(language, "app.title");
  }, [language]);

  const value = useMemo<I18n>(
    () => ({
      language,
      setLanguage,
      t: (key, params) => translate(language, key, params),
      tn: (key, count, params) => translatePlural(language, key, count, params),
      describeError: (error) => errorMessage(language, error),
      formatNumber: (number, options) => new Intl.NumberFormat(language, options).format(number),
    }),
    [language, setLanguage],
  );
  return <I18nContext.Provider value={value}>{children}</I18nContext.Provider>;
}

export function useI18n(): I18n {
  const context = useContext(I18nContext);
  if (!context) throw new Error("useI18n outside I18nProvider");
  return context;
}
