import type { PlayerEngine } from "./engine";
import { SEEK_STEP_SECONDS } from "./engine";

/** Volume change of one arrow key press. */
const VOLUME_STEP = 0.05;

function isTyping(target: EventTarget | null): boolean {
  if (!(target instanceof HTMLElement)) return false;
  if (target.isContentEditable) return true;
  const tag = target.tagName;
  if (tag === "TEXTAREA" || tag === "SELECT") return true;
  if (tag !== "INPUT") return false;
  const type = (target as HTMLInputElement).type;
  return type !== "range" && type !== "checkbox" && type !== "button";
}

/**
 * Keyboard shortcuts of the player: Space or K play and pause, J and L
 * seek, Shift+arrows or P and N change track, arrows up and down set the
 * volume, M mutes, and "/" focuses the search field. Keys typed into a
 * text field, and keys on a focused button or slider that the element uses
 * itself, are left alone.
 */
export function handleShortcut(engine: PlayerEngine, event: KeyboardEvent, focusSearch: () => void): boolean {
  if (event.ctrlKey || event.metaKey || event.altKey || isTyping(event.target)) return false;
  const onControl =
    event.target instanceof HTMLElement && ["BUTTON", "A", "INPUT"].includes(event.target.tagName);
  switch (event.key) {
    case " ":
      if (onControl) return false;
      engine.toggle();
      return true;
    case "k":
      engine.toggle();
      return true;
    case "j":
      engine.seekBy(-SEEK_STEP_SECONDS);
      return true;
    case "l":
      engine.seekBy(SEEK_STEP_SECONDS);
      return true;
    case "ArrowLeft":
    case "ArrowRight": {
      if (onControl && !event.shiftKey) return false;
      const forward = event.key === "ArrowRight";
      if (event.shiftKey) {
        if (forward) engine.next();
        else engine.previous();
      } else {
        engine.seekBy(forward ? SEEK_STEP_SECONDS : -SEEK_STEP_SECONDS);
      }
      return true;
    }
    case "n":
      engine.next();
      return true;
    case "p":
      engine.previous();
      return true;
    case "ArrowUp":
    case "ArrowDown":
      if (onControl) return false;
      engine.setVolume(engine.snapshot().volume + (event.key === "ArrowUp" ? VOLUME_STEP : -VOLUME_STEP));
      return true;
    case "m":
      engine.toggleMute();
      return true;
    case "/":
      focusSearch();
      return true;
    default:
      return false;
  }
}
