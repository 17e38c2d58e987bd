import { useLayoutEffect, useState } from "react";
import {
  api,
  coverUrl,
  formatDuration,
  type Album,
  type AlbumSort,
  type Artist,
  type Order,
  type Page,
  type Track,
  type TrackSort,
} from "../api";
import { Icon } from "../components/Icon";
import { Pager } from "../components/Pager";
import { TrackList } from "../components/TrackList";
import { useI18n } from "../i18n";
import { usePlayer } from "../player/context";
import { useRequest } from "../useRequest";

/** Items per page of every library listing. */
export const PAGE_SIZE = 100;

export type LibraryTab = "tracks" | "albums" | "artists";

interface LibraryViewProps {
  tab: LibraryTab;
  /** Album or artist id from the address, for their track lists. */
  detail: string | null;
  navigate: (path: string) => void;
}

export function LibraryView({ tab, detail, navigate }: LibraryViewProps) {
  const { t } = useI18n();
  const tabs: LibraryTab[] = ["tracks", "albums", "artists"];
  return (
    <section aria-labelledby="library-heading">
      <h1 id="library-heading">{t("library.title")}</h1>
      <div className="tabs" role="tablist" aria-label={t("library.title")}>
        {tabs.map((name) => (
          <button
            key={name}
            type="button"
            role="tab"
            aria-selected={tab === name}
            onClick={() => navigate(`/library/${name}`)}
          >
            {t(`library.tab.${name}`)}
          </button>
        ))}
      </div>
      <div role="tabpanel">
        {tab === "tracks" && <TracksTab />}
        {tab === "albums" && (detail ? <GroupTracks kind="album" id={detail} navigate={navigate} /> : <AlbumsTab navigate={navigate} />)}
        {tab === "artists" && (detail ? <GroupTracks kind="artist" id={detail} navigate={navigate} /> : <ArtistsTab navigate={navigate} />)}
      </div>
    </section>
  );
}

function Status({ loading, error }: { loading: boolean; error: unknown }) {
  const { t, describeError } = useI18n();
  if (error) return <p className="error" role="alert">{describeError(error)}</p>;
  if (loading) return <p className="muted" aria-live="polite">{t("common.loading")}</p>;
  return null;
}

function OrderSelect({ order, onChange }: { order: Order; onChange: (order: Order) => void }) {
  const { t } = useI18n();
  return (
    <label>
      {t("library.order")}
      <select value={order} onChange={(event) => onChange(event.target.value as Order)}>
        <option value="asc">{t("library.order.asc")}</option>
        <option value="desc">{t("library.order.desc")}</option>
      </select>
    </label>
  );
}

function TracksTab() {
  const { t } = useI18n();
  const [sort, setSort] = useState<TrackSort>("title");
  const [order, setOrder] = useState<Order>("asc");
  const [offset, setOffset] = useState(0);
  const key = `${sort}:${order}:${offset}`;
  const { data, error, loading } = useRequest<Page<Track>>(key, (signal) => {
    performance.mark("library-fetch-start");
    return api.tracks({ limit: PAGE_SIZE, offset }, sort, order, signal).then((page) => {
      performance.mark("library-response");
      return page;
    });
  });

  // Records how long a page took to arrive and to be laid out, for the
  // e2e test and the browser's performance panel. Reading offsetHeight
  // forces style and layout, so the figure includes them.
  useLayoutEffect(() => {
    if (!data) return;
    void document.body.offsetHeight;
    performance.mark("library-rendered");
    performance.measure("library-render", "library-response", "library-rendered");
    performance.measure("library-page", "library-fetch-start", "library-rendered");
  }, [data]);

  const sorts: TrackSort[] = ["title", "artist", "album", "added"];
  return (
    <>
      <div className="toolbar">
        <label>
          {t("library.sort")}
          <select
            value={sort}
            onChange={(event) => {
              setSort(event.target.value as TrackSort);
              setOffset(0);
            }}
          >
            {sorts.map((name) => (
              <option key={name} value={name}>
                {t(`library.sort.${name}`)}
              </option>
            ))}
          </select>
        </label>
        <OrderSelect
          order={order}
          onChange={(next) => {
            setOrder(next);
            setOffset(0);
          }}
        />
      </div>
      <Status loading={loading && !data} error={error} />
      {data && data.total === 0 && <p className="muted">{t("library.empty")}</p>}
      {data && (
        <>
          <TrackList tracks={data.items} label={t("library.tab.tracks")} />
          <Pager total={data.total} offset={offset} limit={PAGE_SIZE} onOffset={setOffset} label={t("pager.label")} />
        </>
      )}
    </>
  );
}

function Cover({ fileId, label }: { fileId: string | null; label: string }) {
  const [failed, setFailed] = useState(false);
  if (!fileId || failed) {
    return (
      <div className="cover placeholder" role="img" aria-label={label}>
        ♪
      </div>
    );
  }
  return <img className="cover" src={coverUrl(fileId)} alt={label} loading="lazy" onError={() => setFailed(true)} />;
}

function AlbumsTab({ navigate }: { navigate: (path: string) => void }) {
  const { t, tn } = useI18n();
  const [sort, setSort] = useState<AlbumSort>("album");
  const [order, setOrder] = useState<Order>("asc");
  const [offset, setOffset] = useState(0);
  const { data, error, loading } = useRequest<Page<Album>>(`${sort}:${order}:${offset}`, (signal) =>
    api.albums({ limit: PAGE_SIZE, offset }, sort, order, signal),
  );
  return (
    <>
      <div className="toolbar">
        <label>
          {t("library.sort")}
          <select
            value={sort}
            onChange={(event) => {
              setSort(event.target.value as AlbumSort);
              setOffset(0);
            }}
          >
            <option value="album">{t("library.sort.album")}</option>
            <option value="artist">{t("library.sort.albumArtist")}</option>
          </select>
        </label>
        <OrderSelect
          order={order}
          onChange={(next) => {
            setOrder(next);
            setOffset(0);
          }}
        />
      </div>
      <Status loading={loading && !data} error={error} />
      {data && data.total === 0 && <p className="muted">{t("library.empty")}</p>}
      {data && (
        <>
          <ul className="grid" aria-label={t("library.tab.albums")}>
            {data.items.map((album) => {
              const title = album.album ?? t("library.unknownAlbum");
              return (
                <li key={album.album_id}>
                  <a href={`#/library/albums/${album.album_id}`} className="card" onClick={(event) => {
                    event.preventDefault();
                    navigate(`/library/albums/${album.album_id}`);
                  }}>
                    <Cover fileId={album.cover_file_id} label={t("library.coverOf", { title })} />
                    <strong>{title}</strong>
                    <span>{album.album_artist ?? t("tracks.unknownArtist")}</span>
                    <span className="muted">
                      {[album.year, tn("library.trackCount", album.track_count), formatDuration(album.duration_ms)]
                        .filter(Boolean)
                        .join(" · ")}
                    </span>
                  </a>
                </li>
              );
            })}
          </ul>
          <Pager total={data.total} offset={offset} limit={PAGE_SIZE} onOffset={setOffset} label={t("pager.label")} />
        </>
      )}
    </>
  );
}

function ArtistsTab({ navigate }: { navigate: (path: string) => void }) {
  const { t, tn } = useI18n();
  const [order, setOrder] = useState<Order>("asc");
  const [offset, setOffset] = useState(0);
  const { data, error, loading } = useRequest<Page<Artist>>(`${order}:${offset}`, (signal) =>
    api.artists({ limit: PAGE_SIZE, offset }, order, signal),
  );
  return (
    <>
      <div className="toolbar">
        <OrderSelect
          order={order}
          onChange={(next) => {
            setOrder(next);
            setOffset(0);
          }}
        />
      </div>
      <Status loading={loading && !data} error={error} />
      {data && data.total === 0 && <p className="muted">{t("library.empty")}</p>}
      {data && (
        <>
          <ul className="grid" aria-label={t("library.tab.artists")}>
            {data.items.map((artist) => {
              const name = artist.artist ?? t("tracks.unknownArtist");
              return (
                <li key={artist.artist_id}>
                  <a href={`#/library/artists/${artist.artist_id}`} className="card" onClick={(event) => {
                    event.preventDefault();
                    navigate(`/library/artists/${artist.artist_id}`);
                  }}>
                    <Cover fileId={artist.cover_file_id} label={t("library.coverOf", { title: name })} />
                    <strong>{name}</strong>
                    <span className="muted">
                      {tn("library.albumCount", artist.album_count)} ·{" "}
                      {tn("library.trackCount", artist.track_count)}
                    </span>
                  </a>
                </li>
              );
            })}
          </ul>
          <Pager total={data.total} offset={offset} limit={PAGE_SIZE} onOffset={setOffset} label={t("pager.label")} />
        </>
      )}
    </>
  );
}

function GroupTracks({ kind, id, navigate }: { kind: "album" | "artist"; id: string; navigate: (path: string) => void }) {
  const { t } = useI18n();
  const engine = usePlayer();
  const [offset, setOffset] = useState(0);
  const { data, error, loading } = useRequest<Page<Track>>(`${kind}:${id}:${offset}`, (signal) =>
    kind === "album"
      ? api.albumTracks(id, { limit: PAGE_SIZE, offset }, signal)
      : api.artistTracks(id, { limit: PAGE_SIZE, offset }, signal),
  );
  const first = data?.items[0];
  const heading =
    kind === "album"
      ? first?.tags.album ?? t("library.unknownAlbum")
      : first?.tags.artist ?? t("tracks.unknownArtist");
  const subheading = kind === "album" ? first?.tags.album_artist ?? first?.tags.artist ?? "" : "";
  return (
    <>
      <button type="button" className="link" onClick={() => navigate(`/library/${kind}s`)}>
        ← {kind === "album" ? t("library.backToAlbums") : t("library.backToArtists")}
      </button>
      <Status loading={loading && !data} error={error} />
      {data && first && (
        <>
          <div className="group-header">
            <Cover
              fileId={data.items.find((track) => track.has_cover)?.file_id ?? null}
              label={t("library.coverOf", { title: heading })}
            />
            <div>
              <h2>{heading}</h2>
              {subheading && <p>{subheading}</p>}
              <button type="button" className="primary" onClick={() => engine.playQueue(data.items, 0)}>
                <Icon name="play" /> {t("library.playAll")}
              </button>{" "}
              <button type="button" onClick={() => engine.enqueue(data.items)}>
                <Icon name="add" /> {t("library.enqueueAll")}
              </button>
            </div>
          </div>
          <TrackList tracks={data.items} numbered={kind === "album"} label={heading} />
          <Pager total={data.total} offset={offset} limit={PAGE_SIZE} onOffset={setOffset} label={t("pager.label")} />
        </>
      )}
    </>
  );
}
