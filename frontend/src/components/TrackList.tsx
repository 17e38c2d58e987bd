import { Fragment, useState } from "react";
import { api, formatBytes, formatDuration, type Track } from "../api";
import { useI18n } from "../i18n";
import { usePlayer } from "../player/context";
import { useRequest } from "../useRequest";
import { Highlighted } from "./Highlighted";
import { Icon } from "./Icon";
import { ReplicaHealth } from "./ReplicaHealth";

interface TrackListProps {
  tracks: Track[];
  /** Words to mark in titles, artists and albums. */
  query?: string;
  /** Shows the track number column, for an album. */
  numbered?: boolean;
  label: string;
}

/**
 * Renders a table of tracks. Play starts the listed tracks from that one,
 * so the rest follow in the queue. "Play next" and "Add to the queue" put
 * one track in the queue.
 */
export function TrackList({ tracks, query, numbered, label }: TrackListProps) {
  const { t } = useI18n();
  const engine = usePlayer();
  const [open, setOpen] = useState<string | null>(null);
  if (tracks.length === 0) return null;
  const columns = numbered ? 7 : 6;
  return (
    <table className="tracks" aria-label={label}>
      <thead>
        <tr>
          <th scope="col" className="col-play">
            <span className="visually-hidden">{t("tracks.play")}</span>
          </th>
          {numbered && <th scope="col" className="col-number">#</th>}
          <th scope="col">{t("tracks.title")}</th>
          <th scope="col" className="col-artist">{t("tracks.artist")}</th>
          <th scope="col" className="col-album">{t("tracks.album")}</th>
          <th scope="col" className="col-duration">{t("tracks.duration")}</th>
          <th scope="col" className="col-actions">
            <span className="visually-hidden">{t("tracks.actions")}</span>
          </th>
        </tr>
      </thead>
      <tbody>
        {tracks.map((track, index) => (
          <Fragment key={track.file_id}>
          <tr data-file-id={track.file_id}>
            <td className="col-play">
              <button
                type="button"
                className="icon"
                onClick={() => engine.playQueue(tracks, index)}
                aria-label={t("tracks.playTitle", { title: track.title })}
              >
                <Icon name="play" />
              </button>
            </td>
            {numbered && <td className="col-number">{track.tags.track_number ?? ""}</td>}
            <td className="col-title">
              <Highlighted text={track.title} query={query} />
              <span className="secondary">
                <Highlighted text={track.tags.artist ?? t("tracks.unknownArtist")} query={query} />
              </span>
            </td>
            <td className="col-artist">
              <Highlighted text={track.tags.artist ?? ""} query={query} />
            </td>
            <td className="col-album">
              <Highlighted text={track.tags.album ?? ""} query={query} />
            </td>
            <td className="col-duration">{formatDuration(track.tags.duration_ms)}</td>
            <td className="col-actions">
              <button type="button" onClick={() => engine.playNext([track])} aria-label={t("tracks.playNext", { title: track.title })} title={t("tracks.playNext", { title: track.title })}>
                <Icon name="playNext" />
              </button>
              <button type="button" onClick={() => engine.enqueue([track])} aria-label={t("tracks.enqueue", { title: track.title })} title={t("tracks.enqueue", { title: track.title })}>
                <Icon name="add" />
              </button>
              <button
                type="button"
                onClick={() => setOpen(open === track.file_id ? null : track.file_id)}
                aria-expanded={open === track.file_id}
                aria-label={t("tracks.details", { title: track.title })}
                title={t("tracks.details", { title: track.title })}
              >
                <Icon name="info" />
              </button>
            </td>
          </tr>
          {open === track.file_id && (
            <tr className="details">
              <td colSpan={columns}>
                <TrackDetails track={track} />
              </td>
            </tr>
          )}
          </Fragment>
        ))}
      </tbody>
    </table>
  );
}

/** The stored file of a track and the health of each of its copies. */
function TrackDetails({ track }: { track: Track }) {
  const { t, describeError, formatNumber } = useI18n();
  const { data, error } = useRequest<Track>(track.file_id, (signal) => api.track(track.file_id, signal));
  const shown = data ?? track;
  return (
    <div className="track-details" data-testid="track-details">
      <p>
        {t("tracks.fileName")}: {shown.file_name} · {t("tracks.format", { format: shown.format, size: formatBytes(shown.size_bytes, formatNumber) })}
      </p>
      {error ? <p className="error">{describeError(error)}</p> : null}
      {shown.replica_health ? (
        <ReplicaHealth track={shown} />
      ) : (
        <p className="muted">
          {t("replicas.label")}: {shown.replicas.join(", ")}
        </p>
      )}
    </div>
  );
}
