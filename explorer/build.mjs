// Builds the explorer page into dist/: one bundle (esbuild) of src/main.js with its npm libraries
// (plotly.js, regl-scatterplot, apache-arrow), plus index.html and the stylesheet. Nothing is loaded
// from elsewhere at run time. `node build.mjs` (or `npm run build`); `make explorer` runs it.
import * as esbuild from 'esbuild';
import { copyFileSync, mkdirSync, rmSync } from 'node:fs';

rmSync('dist', { recursive: true, force: true });
mkdirSync('dist');
await esbuild.build({
  entryPoints: ['src/main.js'],
  bundle: true,
  minify: true,
  format: 'iife',
  target: ['es2020'],
  outfile: 'dist/explorer.js',
  legalComments: 'linked',
  logLevel: 'warning',
});
copyFileSync('src/index.html', 'dist/index.html');
copyFileSync('src/explorer.css', 'dist/explorer.css');
