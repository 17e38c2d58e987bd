import { useRef, useState } from "react";
import { formatBytes, formatDuration } from "../api";
import { useI18n } from "../i18n";
import {
  filesFromDrop,
  filesFromInput,
  runLimited,
  uploadFile,
  UPLOADS_IN_FLIGHT,
  type PickedFile,
  type UploadOutcome,
} from "../upload";

interface UploadItem {
  path: string;
  sizeBytes: number;
  sentBytes: number;
  outcome: UploadOutcome | null;
}

export function UploadView() {
  const { t, tn, describeError, formatNumber } = useI18n();
  const [items, setItems] = useState<UploadItem[]>([]);
  const [dragging, setDragging] = useState(false);
  const [running, setRunning] = useState(false);
  const filesInput = useRef<HTMLInputElement>(null);
  const folderInput = useRef<HTMLInputElement>(null);

  async function start(picked: PickedFile[]) {
    if (picked.length === 0 || running) return;
    setRunning(true);
    setItems(picked.map(({ file, path }) => ({ path, sizeBytes: file.size, sentBytes: 0, outcome: null })));
    const patch = (index: number, change: Partial<UploadItem>) =>
      setItems((current) => current.map((item, i) => (i === index ? { ...item, ...change } : item)));
    await runLimited(picked, UPLOADS_IN_FLIGHT, async ({ file }, index) => {
      const outcome = await uploadFile(file, (sentBytes) => patch(index, { sentBytes }));
      patch(index, { outcome, sentBytes: file.size });
    });
    setRunning(false);
  }

  const totalBytes = items.reduce((sum, item) => sum + item.sizeBytes, 0);
  const sentBytes = items.reduce((sum, item) => sum + item.sentBytes, 0);
  const done = items.filter((item) => item.outcome).length;
  const count = (kind: UploadOutcome["kind"]) => items.filter((item) => item.outcome?.kind === kind).length;

  return (
    <section aria-labelledby="upload-heading">
      <h1 id="upload-heading">{t("upload.title")}</h1>
      <div
        className={`dropzone${dragging ? " dragging" : ""}`}
        data-testid="dropzone"
        onDragOver={(event) => {
          event.preventDefault();
          event.dataTransfer.dropEffect = "copy";
          setDragging(true);
        }}
        onDragLeave={() => setDragging(false)}
        onDrop={(event) => {
          event.preventDefault();
          setDragging(false);
          void filesFromDrop(event.dataTransfer).then(start);
        }}
      >
        <p>{t("upload.drop")}</p>
        <div className="buttons">
          <button type="button" onClick={() => filesInput.current?.click()} disabled={running}>
            {t("upload.chooseFiles")}
          </button>
          <button type="button" onClick={() => folderInput.current?.click()} disabled={running}>
            {t("upload.chooseFolder")}
          </button>
        </div>
        <input
          ref={filesInput}
          type="file"
          multiple
          hidden
          data-testid="file-input"
          aria-label={t("upload.chooseFiles")}
          onChange={(event) => {
            if (event.target.files) void start(filesFromInput(event.target.files));
            event.target.value = "";
          }}
        />
        <input
          ref={folderInput}
          type="file"
          multiple
          hidden
          data-testid="folder-input"
          aria-label={t("upload.chooseFolder")}
          {...{ webkitdirectory: "" }}
          onChange={(event) => {
            if (event.target.files) void start(filesFromInput(event.target.files));
            event.target.value = "";
          }}
        />
      </div>

      {items.length > 0 && (
        <div className="batch" data-testid="upload-batch">
          <label>
            {t("upload.batch", { done: formatNumber(done), total: formatNumber(items.length) })}
            <progress max={totalBytes || 1} value={sentBytes} />
          </label>
          <p className="muted" aria-live="polite">
            {!running &&
              [
                tn("upload.summary.added", count("added")),
                tn("upload.summary.duplicate", count("duplicate")),
                tn("upload.summary.rejected", count("rejected")),
              ].join(", ")}
          </p>
          <ul className="upload-list">
            {items.map((item, index) => (
              <li key={`${item.path}-${index}`} className="upload-item" data-status={item.outcome?.kind ?? "pending"}>
                <div className="upload-line">
                  <span className="upload-path">{item.path}</span>
                  <span className="muted">{formatBytes(item.sizeBytes, formatNumber)}</span>
                  <span className={`badge outcome-${item.outcome?.kind ?? "pending"}`}>
                    {item.outcome ? t(`upload.outcome.${item.outcome.kind}`) : t("upload.outcome.pending")}
                  </span>
                </div>
                <progress
                  max={item.sizeBytes || 1}
                  // An empty file has nothing to send; once it has an
                  // outcome its bar is as full as any other finished one.
                  value={item.outcome && item.sizeBytes === 0 ? 1 : item.sentBytes}
                  aria-label={t("upload.progressOf", { path: item.path })}
                />
                {item.outcome?.kind === "rejected" && (
                  <p className="error" data-testid="upload-reason">
                    {describeError(item.outcome.error)}
                  </p>
                )}
                {item.outcome && item.outcome.kind !== "rejected" && (
                  <dl className="tags">
                    <dt>{t("tracks.title")}</dt>
                    <dd>{item.outcome.track.title}</dd>
                    {item.outcome.track.tags.artist && (
                      <>
                        <dt>{t("tracks.artist")}</dt>
                        <dd>{item.outcome.track.tags.artist}</dd>
                      </>
                    )}
                    {item.outcome.track.tags.album && (
                      <>
                        <dt>{t("tracks.album")}</dt>
                        <dd>{item.outcome.track.tags.album}</dd>
                      </>
                    )}
                    {item.outcome.track.tags.track_number !== null && (
                      <>
                        <dt>{t("upload.trackNumber")}</dt>
                        <dd>{item.outcome.track.tags.track_number}</dd>
                      </>
                    )}
                    {item.outcome.track.tags.year !== null && (
                      <>
                        <dt>{t("upload.year")}</dt>
                        <dd>{item.outcome.track.tags.year}</dd>
                      </>
                    )}
                    <dt>{t("tracks.duration")}</dt>
                    <dd>{formatDuration(item.outcome.track.tags.duration_ms)}</dd>
                    <dt>{t("upload.format")}</dt>
                    <dd>{item.outcome.track.format}</dd>
                  </dl>
                )}
              </li>
            ))}
          </ul>
        </div>
      )}
    </section>
  );
}
