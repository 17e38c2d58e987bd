// The phase of a node's scrub, which picks the cluster view's sentence.

import type { ScrubStatus } from "./api";

/** Phase of a scrub, with the counts its sentence shows. */
export type ScrubPhase =
  /** No pass has started since the node started. */
  | { kind: "waiting" }
  /** A pass is under way: `checked` of `total` files verified so far. */
  | { kind: "running"; checked: number; total: number }
  /** The last pass ended at `at` (ms since the epoch), having checked `checked` files. */
  | { kind: "done"; checked: number; at: number };

export function scrubPhase(scrub: ScrubStatus): ScrubPhase {
  if (scrub.pass === 0) return { kind: "waiting" };
  const finished = scrub.last_pass_completed_at_ms;
  if (finished !== null && scrub.files_checked >= scrub.files_total) {
    return { kind: "done", checked: scrub.files_checked, at: finished };
  }
  return { kind: "running", checked: scrub.files_checked, total: scrub.files_total };
}
