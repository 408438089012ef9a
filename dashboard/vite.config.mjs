// The dashboard's build: static files in dashboard/dist, which the control plane serves with Workers Static
// Assets (wrangler.toml [assets]). JSX is Preact's (automatic runtime); nothing is loaded from a CDN.
import { defineConfig } from "vite";

// Where scripts may come from besides the dashboard itself: the identity provider's script and API. Set it at
// build time to your Clerk frontend API (`DASHBOARD_SCRIPT_ORIGINS=https://clerk.example.com make build`); the
// default allows any https origin and the local identity provider on this machine.
const scriptOrigins = (process.env.DASHBOARD_SCRIPT_ORIGINS || "https: http://127.0.0.1:* http://localhost:*").trim();
if (!/^[A-Za-z0-9:/.*\- ]+$/.test(scriptOrigins)) throw new Error(`DASHBOARD_SCRIPT_ORIGINS is not a list of origins: ${scriptOrigins}`);

const contentSecurityPolicy = [
  "default-src 'self'",
  `script-src 'self' ${scriptOrigins}`,
  `connect-src 'self' ${scriptOrigins}`,
  "img-src 'self' data: https:",
  // clerk-js adds style elements of its own.
  "style-src 'self' 'unsafe-inline'",
  "worker-src 'self' blob:",
  "frame-src https:",
  "frame-ancestors 'none'",
  "base-uri 'self'",
  "form-action 'self'",
  "object-src 'none'",
].join("; ");

// Workers Static Assets reads `_headers` from the assets directory: security headers on every file of the app
// (API routes set their own), and built files, named by their content, cached for good.
const HEADERS = `/*
  Content-Security-Policy: ${contentSecurityPolicy}
  X-Frame-Options: DENY
  X-Content-Type-Options: nosniff
  Referrer-Policy: strict-origin-when-cross-origin

/assets/*
  Cache-Control: public, max-age=31536000, immutable
`;

export default defineConfig({
  root: import.meta.dirname,
  oxc: { jsx: { runtime: "automatic", importSource: "preact" } },
  build: {
    outDir: "dist",
    emptyOutDir: true,
    assetsInlineLimit: 0,
    reportCompressedSize: true,
  },
  plugins: [
    {
      name: "security-headers",
      generateBundle() {
        this.emitFile({ type: "asset", fileName: "_headers", source: HEADERS });
      },
    },
  ],
  server: { port: 5173, strictPort: true, proxy: { "/v1": "http://127.0.0.1:8787", "/health": "http://127.0.0.1:8787" } },
});
