// Bundles the console into dist/: index.html, app.css, app.js (one minified ES module with
// every dependency inlined). The server embeds these three files, so the output is kept
// small and deterministic (no timestamps, no source maps, no legal-comment files).
import { build } from "esbuild";
import { copyFileSync, mkdirSync, readdirSync, rmSync, statSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = dirname(fileURLToPath(import.meta.url));
const dist = join(root, "dist");
mkdirSync(dist, { recursive: true });
for (const f of readdirSync(dist)) {
  if (!["index.html", "app.js", "app.css"].includes(f)) rmSync(join(dist, f), { recursive: true });
}

const common = {
  bundle: true,
  minify: true,
  legalComments: "none",
  charset: "ascii",
  logLevel: "warning",
  absWorkingDir: root,
};
await build({
  ...common,
  entryPoints: ["src/main.ts"],
  outfile: "dist/app.js",
  format: "esm",
  target: ["es2022", "chrome100", "firefox100", "safari15"],
  platform: "browser",
});
await build({
  ...common,
  entryPoints: ["src/app.css"],
  outfile: "dist/app.css",
  target: ["chrome100", "firefox100", "safari15"],
});
copyFileSync(join(root, "src/index.html"), join(dist, "index.html"));

for (const f of ["index.html", "app.js", "app.css"]) {
  console.log(`dist/${f.padEnd(10)} ${statSync(join(dist, f)).size} bytes`);
}
