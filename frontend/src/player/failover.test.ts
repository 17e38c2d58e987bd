import { describe, expect, it } from "vitest";
import type { ClusterStatus } from "../api";
import { chooseStreamOrigin, originOf, streamNodes, type StreamNode } from "./failover";

const status: ClusterStatus = {
  node_id: "node1",
  leader_id: "node1",
  term: 3,
  state: "Leader",
  last_applied_index: 10,
  ready: true,
  replication_factor: 2,
  members: [
    { id: "node1", quic_addr: "127.0.0.1:8181", http_addr: "127.0.0.1:8081", voter: true, health: "up", rtt_ms: null },
    { id: "node2", quic_addr: "127.0.0.1:8182", http_addr: "127.0.0.1:8082", voter: true, health: "up", rtt_ms: 0.4 },
    { id: "node3", quic_addr: "127.0.0.1:8183", http_addr: "127.0.0.1:8083", voter: true, health: "down", rtt_ms: null },
    { id: "node4", quic_addr: "127.0.0.1:8184", http_addr: "https://music4.example:443/", voter: false, health: "unknown", rtt_ms: null },
  ],
};

describe("stream nodes", () => {
  it("builds origins from member addresses", () => {
    expect(originOf("127.0.0.1:8081")).toBe("http://127.0.0.1:8081");
    expect(originOf("music.example:8081", "https:")).toBe("https://music.example:8081");
    expect(originOf("https://music4.example:443/")).toBe("https://music4.example:443");
    expect(streamNodes(status).map((node) => node.origin)).toEqual([
      "http://127.0.0.1:8081",
      "http://127.0.0.1:8082",
      "http://127.0.0.1:8083",
      "https://music4.example:443",
    ]);
  });
});

describe("failover choice", () => {
  const nodes: StreamNode[] = streamNodes(status);
  const origin = (id: string) => nodes.find((node) => node.id === id)?.origin;

  it("skips the failed node and prefers a replica in good health", () => {
    const failed = new Set([origin("node1")!]);
    expect(chooseStreamOrigin(nodes, failed, ["node1", "node4", "node2"])).toBe(origin("node2"));
  });

  it("prefers a replica to a node without a copy", () => {
    const failed = new Set([origin("node1")!]);
    expect(chooseStreamOrigin(nodes, failed, ["node4"])).toBe(origin("node4"));
  });

  it("takes a non-replica in good health over a replica reported down", () => {
    const failed = new Set([origin("node1")!]);
    expect(chooseStreamOrigin(nodes, failed, ["node3"])).toBe(origin("node2"));
  });

  it("still tries a node reported down when nothing else is left", () => {
    const failed = new Set([origin("node1")!, origin("node2")!, origin("node4")!]);
    expect(chooseStreamOrigin(nodes, failed, [])).toBe(origin("node3"));
  });

  it("returns null when every node failed", () => {
    const failed = new Set(nodes.map((node) => node.origin));
    expect(chooseStreamOrigin(nodes, failed, ["node2"])).toBeNull();
    expect(chooseStreamOrigin([], new Set(), [])).toBeNull();
  });
});
