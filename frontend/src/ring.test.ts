import { describe, expect, it } from "vitest";
import { ringArcs } from "./ring";

describe("ring arcs", () => {
  it("draws one arc per node, large arcs flagged", () => {
    const arcs = ringArcs([
      { node_id: "a", share: 0.6 },
      { node_id: "b", share: 0.4 },
    ]);
    expect(arcs.map((arc) => arc.nodeId)).toEqual(["a", "b"]);
    expect(arcs[0].path).toContain(" 0 1 1 ");
    expect(arcs[1].path).toContain(" 0 0 1 ");
  });

  it("draws a single node as a full ring", () => {
    const [arc] = ringArcs([{ node_id: "a", share: 1 }]);
    expect(arc.path.match(/A /g)?.length).toBe(4);
  });

  it("has nothing to draw without shares", () => {
    expect(ringArcs([])).toEqual([]);
    expect(ringArcs([{ node_id: "a", share: 0 }])).toEqual([]);
  });
});
