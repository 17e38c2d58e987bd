// Typed access to the node's HTTP API. Every request goes to the node that
// served the page (same origin), so no CORS is involved; only the player
// streams from other nodes, which <audio> may do across origins.

export interface TrackTags {
  title: string | null;
  artist: string | null;
  album: string | null;
  album_artist: string | null;
  track_number: number | null;
  track_total: number | null;
  disc_number: number | null;
  disc_total: number | null;
  year: number | null;
  genre: string | null;
  duration_ms: number | null;
  sample_rate: number | null;
  channels: number | null;
  bitrate_kbps: number | null;
}

/** State of one replica, as GET /music/tracks/{file_id} reports it. */
export type ReplicaState = "ok" | "bad" | "corrupt" | "missing" | "node_down";

export interface Track {
  file_id: string;
  file_name: string;
  title: string;
  tags: TrackTags;
  format: string;
  content_type: string;
  size_bytes: number;
  has_cover: boolean;
  replicas: string[];
  added_at_ms: number;
  replica_health?: Array<{ node_id: string; state: ReplicaState }>;
}

export interface Page<T> {
  items: T[];
  total: number;
  limit: number;
  offset: number;
}

export interface Album {
  album_id: string;
  album: string | null;
  album_artist: string | null;
  track_count: number;
  duration_ms: number;
  year: number | null;
  cover_file_id: string | null;
}

export interface Artist {
  artist_id: string;
  artist: string | null;
  track_count: number;
  album_count: number;
  cover_file_id: string | null;
}

/** The repair scheduler's state; fields other nodes may not send are optional. */
export interface RepairStatus {
  queue_length: number;
  under_replicated?: number;
  unavailable?: number;
  active: Array<{
    file_id: string;
    from: string;
    to: string;
    /** Bytes the sending node has handed over; null until it reports. */
    bytes_done: number | null;
    bytes_total: number;
  }>;
  files_repaired_total?: number;
  bytes_moved_total: number;
}

export interface ScrubStatus {
  /** Passes started since the node started. */
  pass: number;
  files_checked: number;
  files_total: number;
  errors_found: number;
  last_pass_completed_at_ms: number | null;
}

export interface Member {
  id: string;
  quic_addr: string;
  http_addr: string;
  voter: boolean;
  health: "up" | "down" | "unknown" | string;
  rtt_ms: number | null;
  draining?: boolean;
  repair?: RepairStatus | null;
  scrub?: ScrubStatus | null;
}

export interface ClusterStatus {
  node_id: string;
  leader_id: string | null;
  term: number;
  state: string;
  last_applied_index: number | null;
  ready: boolean;
  replication_factor: number;
  members: Member[];
  ring?: Array<{ node_id: string; share: number }>;
  /** The leader's repair scheduler. */
  repair?: RepairStatus | null;
}

/** Codes the client itself uses for failures that carry no API error. */
export const CLIENT_ERROR_CODES = ["network_error", "unexpected_response"] as const;

/** A failed request: the API's stable code and English message. */
export class ApiError extends Error {
  readonly status: number;
  readonly code: string;

  constructor(status: number, code: string, message: string) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
  }
}

/**
 * Reads the `{"error": {"code", "message"}}` body of a failed response, or
 * makes an `unexpected_response` error when the body is not one.
 */
export function errorFromBody(status: number, body: string): ApiError {
  try {
    const parsed = JSON.parse(body) as { error?: { code?: unknown; message?: unknown } };
    const code = parsed.error?.code;
    const message = parsed.error?.message;
    if (typeof code === "string" && typeof message === "string") {
      return new ApiError(status, code, message);
    }
  } catch {
    // Not JSON: a proxy page or a truncated body.
  }
  return new ApiError(status, "unexpected_response", `HTTP ${status}`);
}

export async function getJson<T>(path: string, signal?: AbortSignal): Promise<T> {
  let response: Response;
  try {
    response = await fetch(path, { signal, headers: { Accept: "application/json" } });
  } catch (error) {
    if (signal?.aborted) throw error;
    throw new ApiError(0, "network_error", String(error));
  }
  const body = await response.text();
  if (!response.ok) throw errorFromBody(response.status, body);
  return JSON.parse(body) as T;
}

function query(params: Record<string, string | number | undefined>): string {
  const search = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) {
    if (value !== undefined && value !== "") search.set(name, String(value));
  }
  const text = search.toString();
  return text ? `?${text}` : "";
}

export type TrackSort = "title" | "artist" | "album" | "added";
export type AlbumSort = "album" | "artist";
export type Order = "asc" | "desc";

export interface Paging {
  limit: number;
  offset: number;
}

export const api = {
  tracks: (paging: Paging, sort: TrackSort, order: Order, signal?: AbortSignal) =>
    getJson<Page<Track>>(`/music/tracks${query({ ...paging, sort, order })}`, signal),
  search: (q: string, paging: Paging, signal?: AbortSignal) =>
    getJson<Page<Track>>(`/music/search${query({ q, ...paging })}`, signal),
  albums: (paging: Paging, sort: AlbumSort, order: Order, signal?: AbortSignal) =>
    getJson<Page<Album>>(`/music/albums${query({ ...paging, sort, order })}`, signal),
  artists: (paging: Paging, order: Order, signal?: AbortSignal) =>
    getJson<Page<Artist>>(`/music/artists${query({ ...paging, order })}`, signal),
  albumTracks: (albumId: string, paging: Paging, signal?: AbortSignal) =>
    getJson<Page<Track>>(`/music/albums/${albumId}/tracks${query({ ...paging })}`, signal),
  artistTracks: (artistId: string, paging: Paging, signal?: AbortSignal) =>
    getJson<Page<Track>>(`/music/artists/${artistId}/tracks${query({ ...paging })}`, signal),
  track: (fileId: string, signal?: AbortSignal) => getJson<Track>(`/music/tracks/${fileId}`, signal),
  clusterStatus: (signal?: AbortSignal) => getJson<ClusterStatus>("/cluster/status", signal),
};

export function coverUrl(fileId: string): string {
  return `/music/tracks/${fileId}/cover`;
}

/** The stream URL of a file on a node; `origin` "" means this page's node. */
export function streamUrl(fileId: string, origin = ""): string {
  return `${origin}/music/stream/${fileId}`;
}

/** Formats milliseconds as m:ss or h:mm:ss. */
export function formatDuration(ms: number | null | undefined): string {
  if (ms === null || ms === undefined || !Number.isFinite(ms) || ms < 0) return "–";
  const total = Math.floor(ms / 1000);
  const hours = Math.floor(total / 3600);
  const minutes = Math.floor((total % 3600) / 60);
  const seconds = String(total % 60).padStart(2, "0");
  return hours > 0 ? `${hours}:${String(minutes).padStart(2, "0")}:${seconds}` : `${minutes}:${seconds}`;
}

/** A number formatter for one language; the i18n context provides it. */
export type NumberFormatter = (value: number, options?: Intl.NumberFormatOptions) => string;

const englishNumber: NumberFormatter = (value, options) => new Intl.NumberFormat("en", options).format(value);

/** Formats a size in binary units, with one decimal above bytes, in the formatter's language. */
export function formatBytes(bytes: number, formatNumber: NumberFormatter = englishNumber): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  const digits = unit === 0 ? 0 : 1;
  const number = formatNumber(value, { minimumFractionDigits: digits, maximumFractionDigits: digits, useGrouping: false });
  return `${number} ${units[unit]}`;
}
