import { useEffect, useRef, useState } from "react";
import { coverUrl, formatDuration } from "../api";
import { Icon } from "../components/Icon";
import { useI18n } from "../i18n";
import { usePlayer, usePlayerState } from "./context";

/** The player at the bottom of every screen, with its queue panel. */
export function PlayerBar() {
  const { t } = useI18n();
  const engine = usePlayer();
  const state = usePlayerState();
  const [queueOpen, setQueueOpen] = useState(false);
  const holder = useRef<HTMLDivElement>(null);
  const track = state.queue[state.index] ?? null;

  // The engine's <audio> elements live in the page so tests and the
  // browser's media tools can find them; they have no controls of their own.
  useEffect(() => {
    const element = holder.current;
    if (!element) return;
    for (const audio of engine.elements) element.appendChild(audio);
  }, [engine]);

  const duration = state.durationSeconds > 0 ? state.durationSeconds : 0;
  return (
    <footer className="player" aria-label={t("player.label")}>
      <div ref={holder} hidden />
      <div className="player-now">
        {track?.has_cover ? (
          <img className="cover small" src={coverUrl(track.file_id)} alt="" />
        ) : (
          <div className="cover small placeholder" aria-hidden="true">♪</div>
        )}
        <div className="player-title">
          <strong data-testid="now-playing">{track ? track.title : t("player.nothing")}</strong>
          <span>{track?.tags.artist ?? ""}</span>
          {state.streamNode && (
            <span className="muted" data-testid="stream-node">
              {t("player.streamingFrom", { node: state.streamNode })}
            </span>
          )}
          {state.problem && (
            <span className="error" role="alert">
              {t(`player.problem.${state.problem}`)}
            </span>
          )}
        </div>
      </div>
      <div className="player-controls">
        <div className="buttons">
          <button type="button" onClick={() => engine.previous()} disabled={!track} aria-label={t("player.previous")} title={t("player.previous")}>
            <Icon name="previous" />
          </button>
          <button
            type="button"
            className="primary"
            onClick={() => engine.toggle()}
            disabled={!track}
            aria-label={state.playing ? t("player.pause") : t("player.play")}
            title={state.playing ? t("player.pause") : t("player.play")}
          >
            <Icon name={state.playing ? "pause" : "play"} />
          </button>
          <button
            type="button"
            onClick={() => engine.next()}
            disabled={!track || state.index + 1 >= state.queue.length}
            aria-label={t("player.next")}
            title={t("player.next")}
          >
            <Icon name="next" />
          </button>
        </div>
        <div className="seek">
          <span className="time">{formatDuration(state.positionSeconds * 1000)}</span>
          <input
            type="range"
            min={0}
            max={duration || 1}
            step={0.1}
            value={Math.min(state.positionSeconds, duration || 1)}
            disabled={!track}
            onChange={(event) => engine.seek(Number(event.target.value))}
            aria-label={t("player.seek")}
            aria-valuetext={`${formatDuration(state.positionSeconds * 1000)} / ${formatDuration(duration * 1000)}`}
          />
          <span className="time">{formatDuration(duration * 1000)}</span>
        </div>
      </div>
      <div className="player-extra">
        <button type="button" onClick={() => engine.toggleMute()} aria-pressed={state.muted} aria-label={t("player.mute")} title={t("player.mute")}>
          <Icon name={state.muted || state.volume === 0 ? "muted" : "volume"} />
        </button>
        <input
          type="range"
          className="volume"
          min={0}
          max={1}
          step={0.05}
          value={state.muted ? 0 : state.volume}
          onChange={(event) => engine.setVolume(Number(event.target.value))}
          aria-label={t("player.volume")}
        />
        <button
          type="button"
          onClick={() => setQueueOpen(!queueOpen)}
          aria-expanded={queueOpen}
          aria-controls="queue-panel"
        >
          {t("player.queue", { count: state.queue.length })}
        </button>
      </div>
      {queueOpen && (
        <section id="queue-panel" className="queue" aria-label={t("queue.title")}>
          <h2>{t("queue.title")}</h2>
          {state.queue.length === 0 ? (
            <p className="muted">{t("queue.empty")}</p>
          ) : (
            <ol>
              {state.queue.map((item, index) => (
                <li key={`${item.file_id}-${index}`} aria-current={index === state.index ? "true" : undefined}>
                  <button type="button" className="link" onClick={() => engine.jump(index)}>
                    {item.title}
                  </button>
                  <span className="muted"> {item.tags.artist ?? ""}</span>
                  <span className="queue-actions">
                    <button type="button" onClick={() => engine.moveItem(index, index - 1)} disabled={index === 0} aria-label={t("queue.moveUp", { title: item.title })}>
                      <Icon name="up" />
                    </button>
                    <button
                      type="button"
                      onClick={() => engine.moveItem(index, index + 1)}
                      disabled={index === state.queue.length - 1}
                      aria-label={t("queue.moveDown", { title: item.title })}
                    >
                      <Icon name="down" />
                    </button>
                    <button type="button" onClick={() => engine.remove(index)} aria-label={t("queue.remove", { title: item.title })}>
                      <Icon name="remove" />
                    </button>
                  </span>
                </li>
              ))}
            </ol>
          )}
          <p className="muted shortcuts">{t("player.shortcuts")}</p>
        </section>
      )}
    </footer>
  );
}
