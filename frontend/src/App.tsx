import { useEffect, useMemo, useRef, useState } from "react";
import { api } from "./api";
import { LANGUAGES, useI18n, type Language } from "./i18n";
import { PlayerContext } from "./player/context";
import { PlayerEngine } from "./player/engine";
import { streamNodes } from "./player/failover";
import { PlayerBar } from "./player/PlayerBar";
import { handleShortcut } from "./player/shortcuts";
import { ClusterView } from "./views/ClusterView";
import { LibraryView, type LibraryTab } from "./views/LibraryView";
import { SearchView, MAX_QUERY_CHARS } from "./views/SearchView";
import { UploadView } from "./views/UploadView";

/** How often the player refreshes the nodes it may stream from. */
const NODE_REFRESH_MS = 5000;

type Route =
  | { view: "library"; tab: LibraryTab; detail: string | null }
  | { view: "search"; query: string }
  | { view: "upload" }
  | { view: "cluster" };

/** Reads the route from the address's fragment, e.g. `#/library/albums/ab12`. */
export function parseRoute(hash: string): Route {
  const [path, search = ""] = hash.replace(/^#/, "").split("?");
  const parts = path.split("/").filter(Boolean);
  switch (parts[0]) {
    case "search":
      return { view: "search", query: new URLSearchParams(search).get("q") ?? "" };
    case "upload":
      return { view: "upload" };
    case "cluster":
      return { view: "cluster" };
    default: {
      const tab: LibraryTab = parts[1] === "albums" || parts[1] === "artists" ? parts[1] : "tracks";
      return { view: "library", tab, detail: tab !== "tracks" ? parts[2] ?? null : null };
    }
  }
}

function useRoute(): [Route, (path: string, replace?: boolean) => void] {
  const [hash, setHash] = useState(window.location.hash);
  useEffect(() => {
    const onChange = () => setHash(window.location.hash);
    window.addEventListener("hashchange", onChange);
    return () => window.removeEventListener("hashchange", onChange);
  }, []);
  const navigate = (path: string, replace = false) => {
    const next = `#${path}`;
    if (replace) window.history.replaceState(null, "", next);
    else window.history.pushState(null, "", next);
    setHash(next);
  };
  return [parseRoute(hash), navigate];
}

export function App() {
  const { t, language, setLanguage } = useI18n();
  const [route, navigate] = useRoute();
  const searchField = useRef<HTMLInputElement>(null);
  const engine = useMemo(() => new PlayerEngine(window.location.origin, () => new Audio()), []);
  const [query, setQuery] = useState(route.view === "search" ? route.query : "");

  useEffect(() => engine.installMediaSession(), [engine]);

  // The player needs every node's address to move a stream on failure.
  useEffect(() => {
    const refresh = () =>
      api.clusterStatus().then(
        (status) => engine.setNodes(streamNodes(status, window.location.protocol)),
        () => undefined,
      );
    void refresh();
    const timer = window.setInterval(refresh, NODE_REFRESH_MS);
    return () => window.clearInterval(timer);
  }, [engine]);

  useEffect(() => {
    const onKey = (event: KeyboardEvent) => {
      if (handleShortcut(engine, event, () => searchField.current?.focus())) event.preventDefault();
    };
    window.addEventListener("keydown", onKey);
    return () => window.removeEventListener("keydown", onKey);
  }, [engine]);

  const onSearch = (text: string) => {
    setQuery(text);
    const q = new URLSearchParams({ q: text }).toString();
    navigate(`/search?${q}`, route.view === "search");
  };

  const nav: Array<{ path: string; view: Route["view"]; label: string }> = [
    { path: "/library/tracks", view: "library", label: t("nav.library") },
    { path: "/upload", view: "upload", label: t("nav.upload") },
    { path: "/cluster", view: "cluster", label: t("nav.cluster") },
  ];

  return (
    <PlayerContext.Provider value={engine}>
      <a className="skip-link" href="#main">
        {t("nav.skip")}
      </a>
      <header className="header">
        <span className="brand" aria-hidden="true">
          ♫ Dispotify
        </span>
        <nav aria-label={t("nav.label")}>
          <ul>
            {nav.map((item) => (
              <li key={item.path}>
                <a
                  href={`#${item.path}`}
                  aria-current={route.view === item.view ? "page" : undefined}
                  onClick={(event) => {
                    event.preventDefault();
                    navigate(item.path);
                  }}
                >
                  {item.label}
                </a>
              </li>
            ))}
          </ul>
        </nav>
        <form className="search" role="search" onSubmit={(event) => event.preventDefault()}>
          <label className="visually-hidden" htmlFor="search-field">
            {t("search.label")}
          </label>
          <input
            id="search-field"
            ref={searchField}
            type="search"
            value={route.view === "search" ? route.query : query}
            maxLength={MAX_QUERY_CHARS}
            placeholder={t("search.placeholder")}
            onChange={(event) => onSearch(event.target.value)}
            autoComplete="off"
          />
        </form>
        <label className="language">
          <span className="visually-hidden">{t("language.label")}</span>
          <select
            value={language}
            onChange={(event) => setLanguage(event.target.value as Language)}
            aria-label={t("language.label")}
          >
            {LANGUAGES.map((code) => (
              <option key={code} value={code}>
                {t(`language.${code}`)}
              </option>
            ))}
          </select>
        </label>
      </header>
      <main id="main" tabIndex={-1}>
        {route.view === "library" && <LibraryView tab={route.tab} detail={route.detail} navigate={navigate} />}
        {route.view === "search" && <SearchView query={route.query} />}
        {route.view === "upload" && <UploadView />}
        {route.view === "cluster" && <ClusterView />}
      </main>
      <PlayerBar />
    </PlayerContext.Provider>
  );
}
