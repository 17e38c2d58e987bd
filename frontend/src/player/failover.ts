// Choice of the node a track streams from. Any node streams any track, so
// when the current node stops responding the player moves to another one
// at the same position. Nodes that hold a replica come first, because they
// serve from local disk instead of fetching from a peer.

import type { ClusterStatus } from "../api";

export interface StreamNode {
  id: string;
  /** `http://host:port`, the node's public HTTP address. */
  origin: string;
  /** Health as last reported by /cluster/status. */
  health: string;
}

/** Turns a member's `http_addr` (`host:port` or a URL) into an origin. */
export function originOf(httpAddr: string, protocol = "http:"): string {
  if (/^https?:\/\//.test(httpAddr)) return httpAddr.replace(/\/+$/, "");
  return `${protocol}//${httpAddr}`;
}

export function streamNodes(status: ClusterStatus, protocol = "http:"): StreamNode[] {
  return status.members
    .filter((member) => member.http_addr)
    .map((member) => ({
      id: member.id,
      origin: originOf(member.http_addr, protocol),
      health: member.health,
    }));
}

/**
 * Picks the origin to stream from after `failed` origins stopped
 * responding. Nodes reported down come last, after nodes in good or
 * unknown health, because a status can be seconds old; within each group
 * replicas of the track come first, then node id order. Returns null when
 * every known node has failed.
 */
export function chooseStreamOrigin(
  nodes: readonly StreamNode[],
  failed: ReadonlySet<string>,
  replicas: readonly string[],
): string | null {
  const candidates = nodes.filter((node) => !failed.has(node.origin));
  const rank = (node: StreamNode) =>
    (node.health === "down" ? 2 : 0) + (replicas.includes(node.id) ? 0 : 1);
  const sorted = [...candidates].sort(
    (a, b) => rank(a) - rank(b) || a.id.localeCompare(b.id),
  );
  return sorted.length > 0 ? sorted[0].origin : null;
}
