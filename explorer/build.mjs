// Builds the explorer page into dist/: esbuild bundles src/main.js with its npm libraries
// (regl-scatterplot, apache-arrow; plotly.js in a chunk loaded on demand) as explorer.js and
// dist/chunks/, plus index.html and the stylesheet. Nothing is loaded from elsewhere at run time.
// `node build.mjs` (or `npm run build`); `make explorer` runs it.
import * as esbuild from 'esbuild';
import { copyFileSync, mkdirSync, rmSync } from 'node:fs';

rmSync('dist', { recursive: true, force: true });
mkdirSync('dist');
await esbuild.build({
  // The page, and the web worker that builds the embedding's spatial index (spatial-index-worker.js).
  entryPoints: { explorer: 'src/main.js', 'spatial-index-worker': 'src/spatial-index-worker.js' },
  bundle: true,
  minify: true,
  // ES modules split into chunks: Plotly (box and violin plots only) is a chunk the page imports
  // the first time it needs it, so its 1.3 MB are not evaluated with the page.
  format: 'esm',
  splitting: true,
  chunkNames: 'chunks/[name]-[hash]',
  target: ['es2020'],
  outdir: 'dist',
  legalComments: 'linked',
  logLevel: 'warning',
});
copyFileSync('src/index.html', 'dist/index.html');
copyFileSync('src/explorer.css', 'dist/explorer.css');
