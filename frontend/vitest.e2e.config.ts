import { defineConfig } from "vitest/config";

// The end-to-end run: one real three-node cluster and one Chromium, so the
// files run one after another and each step may take seconds.
export default defineConfig({
  test: {
    include: ["e2e/**/*.e2e.ts"],
    environment: "node",
    fileParallelism: false,
    testTimeout: 120_000,
    hookTimeout: 180_000,
  },
});
