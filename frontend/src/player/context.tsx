import { createContext, useContext, useEffect, useState } from "react";
import type { PlayerEngine, PlayerState } from "./engine";

export const PlayerContext = createContext<PlayerEngine | null>(null);

export function usePlayer(): PlayerEngine {
  const engine = useContext(PlayerContext);
  if (!engine) throw new Error("usePlayer outside PlayerContext");
  return engine;
}

/** The engine's state, re-rendering on every change. */
export function usePlayerState(): PlayerState {
  const engine = usePlayer();
  const [state, setState] = useState(() => engine.snapshot());
  useEffect(() => engine.subscribe(setState), [engine]);
  return state;
}
