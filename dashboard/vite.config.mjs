// The dashboard's build: static files in dashboard/dist, which the control plane serves with Workers Static
// Assets (wrangler.toml [assets]). JSX is Preact's (automatic runtime); nothing is loaded from a CDN.
import { defineConfig } from "vite";

export default defineConfig({
  root: import.meta.dirname,
  oxc: { jsx: { runtime: "automatic", importSource: "preact" } },
  build: {
    outDir: "dist",
    emptyOutDir: true,
    // One small app: a single script and stylesheet, named by content so they can be cached for good.
    assetsInlineLimit: 0,
    reportCompressedSize: true,
  },
  server: { port: 5173, strictPort: true, proxy: { "/v1": "http://127.0.0.1:8787", "/health": "http://127.0.0.1:8787" } },
});
