// Uploads from the browser: collecting files from a drop (folders walked
// with webkitGetAsEntry) or a file input, and sending each one as
// multipart/form-data with XHR, which reports upload progress.

import { ApiError, errorFromBody, type Track } from "./api";

/** Files uploaded at once. Two keep the link busy while one is being
 * replicated, without crowding the node's write quorum. */
export const UPLOADS_IN_FLIGHT = 2;

/** A file to upload and the path it had inside a dropped folder. */
export interface PickedFile {
  file: File;
  path: string;
}

export type UploadOutcome =
  | { kind: "added"; track: Track }
  | { kind: "duplicate"; track: Track }
  | { kind: "rejected"; error: ApiError };

/** Hidden files (a leading dot) are skipped, as the command-line upload does. */
export function isHidden(name: string): boolean {
  return name.startsWith(".");
}

/** The outcome of a finished upload request by its status and body. */
export function outcomeOf(status: number, body: string): UploadOutcome {
  if (status === 201 || status === 200) {
    const track = JSON.parse(body) as Track;
    return { kind: status === 201 ? "added" : "duplicate", track };
  }
  return { kind: "rejected", error: errorFromBody(status, body) };
}

/** Sends one file; `onProgress` gets the bytes of the body sent so far. */
export function uploadFile(file: File, onProgress: (sentBytes: number) => void, signal?: AbortSignal): Promise<UploadOutcome> {
  return new Promise((resolve) => {
    const request = new XMLHttpRequest();
    request.open("POST", "/music/upload");
    request.setRequestHeader("Accept", "application/json");
    request.upload.onprogress = (event) => {
      // The body is slightly larger than the file (multipart framing).
      onProgress(Math.min(event.loaded, file.size));
    };
    request.onload = () => {
      onProgress(file.size);
      try {
        resolve(outcomeOf(request.status, request.responseText));
      } catch {
        resolve({ kind: "rejected", error: new ApiError(request.status, "unexpected_response", `HTTP ${request.status}`) });
      }
    };
    request.onerror = () => resolve({ kind: "rejected", error: new ApiError(0, "network_error", "network error") });
    request.onabort = () => resolve({ kind: "rejected", error: new ApiError(0, "network_error", "upload aborted") });
    signal?.addEventListener("abort", () => request.abort());
    const form = new FormData();
    form.append("file", file, file.name);
    request.send(form);
  });
}

function readEntries(reader: FileSystemDirectoryReader): Promise<FileSystemEntry[]> {
  return new Promise((resolve, reject) => reader.readEntries(resolve, reject));
}

function entryFile(entry: FileSystemFileEntry): Promise<File> {
  return new Promise((resolve, reject) => entry.file(resolve, reject));
}

async function walk(entry: FileSystemEntry, out: PickedFile[]): Promise<void> {
  if (isHidden(entry.name)) return;
  if (entry.isFile) {
    const file = await entryFile(entry as FileSystemFileEntry);
    out.push({ file, path: entry.fullPath.replace(/^\//, "") });
    return;
  }
  if (!entry.isDirectory) return;
  const reader = (entry as FileSystemDirectoryEntry).createReader();
  // readEntries returns a directory in batches, and an empty batch at the end.
  for (;;) {
    const batch = await readEntries(reader);
    if (batch.length === 0) break;
    for (const child of batch) await walk(child, out);
  }
}

/** Collects the files of a drop, walking dropped folders recursively. */
export async function filesFromDrop(transfer: DataTransfer): Promise<PickedFile[]> {
  const entries: FileSystemEntry[] = [];
  const loose: File[] = [];
  // Entries must be taken before the first await: the DataTransfer is
  // emptied when the drop handler returns.
  for (const item of Array.from(transfer.items)) {
    if (item.kind !== "file") continue;
    const entry = item.webkitGetAsEntry?.();
    if (entry) entries.push(entry);
    else {
      const file = item.getAsFile();
      if (file) loose.push(file);
    }
  }
  const out: PickedFile[] = loose.map((file) => ({ file, path: file.name }));
  for (const entry of entries) await walk(entry, out);
  return out;
}

/** Files of an <input type=file>, with their folder path when one was picked. */
export function filesFromInput(list: FileList): PickedFile[] {
  return Array.from(list)
    .map((file) => ({ file, path: file.webkitRelativePath || file.name }))
    .filter(({ path }) => !path.split("/").some(isHidden));
}

/** Runs `work` on every item with at most `limit` running at once. */
export async function runLimited<T>(items: readonly T[], limit: number, work: (item: T, index: number) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const index = next++;
      await work(items[index], index);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}
