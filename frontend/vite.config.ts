import { defineConfig } from "vitest/config";
import react from "@vitejs/plugin-react";

// `npm run dev` serves the app with hot reload and forwards the API to the
// node named by DISPOTIFY_API (default: node1 of `dispotify dev`).
const api = process.env.DISPOTIFY_API ?? "http://127.0.0.1:8081";

export default defineConfig({
  plugins: [react()],
  build: {
    outDir: "dist",
    emptyOutDir: true,
    // One small app: no source maps in what the nodes serve.
    sourcemap: false,
  },
  server: {
    proxy: {
      "/music": api,
      "/cluster": api,
      "/health": api,
    },
  },
  test: {
    include: ["src/**/*.test.ts"],
    environment: "node",
  },
});
