// Geometry of the ring picture: one arc of a donut per node, its angle
// proportional to the node's share of the placement ring.

export interface RingArc {
  nodeId: string;
  share: number;
  /** SVG path of the arc, in a 200 x 200 box centred on (100, 100). */
  path: string;
}

const CENTER = 100;
const OUTER = 90;
const INNER = 55;

function point(radius: number, turn: number): string {
  const angle = turn * 2 * Math.PI - Math.PI / 2;
  return `${(CENTER + radius * Math.cos(angle)).toFixed(3)} ${(CENTER + radius * Math.sin(angle)).toFixed(3)}`;
}

/**
 * Lays out the shares as arcs clockwise from the top. Shares are scaled to
 * their sum, so rounding in the server's figures leaves no gap.
 */
export function ringArcs(shares: ReadonlyArray<{ node_id: string; share: number }>): RingArc[] {
  const total = shares.reduce((sum, entry) => sum + Math.max(entry.share, 0), 0);
  if (total <= 0) return [];
  let start = 0;
  return shares.map((entry) => {
    const fraction = Math.max(entry.share, 0) / total;
    const end = start + fraction;
    let path: string;
    if (fraction >= 0.9999) {
      // A full circle cannot be one arc command: draw two halves.
      path =
        `M ${point(OUTER, 0)} A ${OUTER} ${OUTER} 0 1 1 ${point(OUTER, 0.5)} A ${OUTER} ${OUTER} 0 1 1 ${point(OUTER, 0)} ` +
        `M ${point(INNER, 0)} A ${INNER} ${INNER} 0 1 0 ${point(INNER, 0.5)} A ${INNER} ${INNER} 0 1 0 ${point(INNER, 0)} Z`;
    } else {
      const large = fraction > 0.5 ? 1 : 0;
      path =
        `M ${point(OUTER, start)} A ${OUTER} ${OUTER} 0 ${large} 1 ${point(OUTER, end)} ` +
        `L ${point(INNER, end)} A ${INNER} ${INNER} 0 ${large} 0 ${point(INNER, start)} Z`;
    }
    start = end;
    return { nodeId: entry.node_id, share: entry.share, path };
  });
}
