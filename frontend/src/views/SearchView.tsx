import { useEffect, useState } from "react";
import { api, type Page, type Track } from "../api";
import { Pager } from "../components/Pager";
import { TrackList } from "../components/TrackList";
import { useI18n } from "../i18n";
import { useRequest } from "../useRequest";
import { PAGE_SIZE } from "./LibraryView";

/**
 * Pause in typing after which a search request is sent. Shorter pauses
 * send a request per key press; longer ones feel slow.
 */
export const SEARCH_DEBOUNCE_MS = 250;

/** Maximum characters of a query, as the server accepts. */
export const MAX_QUERY_CHARS = 256;

export function useDebounced<T>(value: T, delayMs: number): T {
  const [debounced, setDebounced] = useState(value);
  useEffect(() => {
    const timer = window.setTimeout(() => setDebounced(value), delayMs);
    return () => window.clearTimeout(timer);
  }, [value, delayMs]);
  return debounced;
}

export function SearchView({ query }: { query: string }) {
  const { t, tn, describeError } = useI18n();
  const debounced = useDebounced(query.trim(), SEARCH_DEBOUNCE_MS);
  const [offset, setOffset] = useState(0);
  useEffect(() => setOffset(0), [debounced]);
  const { data, error, loading } = useRequest<Page<Track>>(
    debounced ? `${debounced}\u0000${offset}` : null,
    (signal) => api.search(debounced, { limit: PAGE_SIZE, offset }, signal),
  );
  return (
    <section aria-labelledby="search-heading">
      <h1 id="search-heading">{t("search.title")}</h1>
      {!debounced && <p className="muted">{t("search.hint")}</p>}
      {error ? <p className="error" role="alert">{describeError(error)}</p> : null}
      <p className="muted" aria-live="polite">
        {loading && t("common.loading")}
        {!loading && data && debounced && tn("search.results", data.total, { query: debounced })}
      </p>
      {data && debounced && (
        <>
          <TrackList tracks={data.items} query={debounced} label={t("search.resultsLabel")} />
          <Pager total={data.total} offset={offset} limit={PAGE_SIZE} onOffset={setOffset} label={t("pager.label")} />
        </>
      )}
    </section>
  );
}
