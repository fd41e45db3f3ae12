// The embedding (e.g. UMAP) as a WebGL scatter (regl-scatterplot): every cell, coloured by a group or
// by one gene's values. Cells and values arrive as Arrow pages into typed arrays indexed by the cell's
// position in the matrix, so a gene's values (non-zeros by position) land without any lookup.
import createScatterplot from 'regl-scatterplot';
import { eachArrowPage, getJson, seg } from './api.js';

// Zero: light grey; non-zero: the upper half of ColorBrewer's OrRd, light to dark.
const ZERO_COLOUR = '#d4d4d4';
const GENE_STOPS = ['#fdd49e', '#fdbb84', '#fc8d59', '#ef6548', '#d7301f', '#b30000', '#7f0000'];
export const CATEGORY_COLOURS = [
  '#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd', '#8c564b', '#e377c2', '#7f7f7f', '#bcbd22', '#17becf',
  '#aec7e8', '#ffbb78', '#98df8a', '#ff9896', '#c5b0d5', '#c49c94', '#f7b6d2', '#c7c7c7', '#dbdb8d', '#9edae5',
];

function hex(c) {
  return [1, 3, 5].map((i) => parseInt(c.slice(i, i + 2), 16));
}

export function geneColourMap(n = 256) {
  const out = [ZERO_COLOUR];
  for (let i = 1; i < n; i += 1) {
    const t = ((i - 1) / (n - 2)) * (GENE_STOPS.length - 1);
    const k = Math.min(GENE_STOPS.length - 2, Math.floor(t));
    const a = hex(GENE_STOPS[k]);
    const b = hex(GENE_STOPS[k + 1]);
    const rgb = a.map((v, j) => Math.round(v + (b[j] - v) * (t - k)));
    out.push(`#${rgb.map((v) => v.toString(16).padStart(2, '0')).join('')}`);
  }
  return out;
}

export function geneGradientCss() {
  return `linear-gradient(to right, ${GENE_STOPS.join(', ')})`;
}

const yieldToPage = () => new Promise((resolve) => setTimeout(resolve, 0));

// The spatial index of points (x, y) as an ArrayBuffer, built in spatial-index-worker.js.
let indexWorker = null;
let indexRequests = 0;
const indexWaiting = new Map();
function spatialIndexOf(x, y) {
  if (!indexWorker) {
    indexWorker = new Worker(new URL('spatial-index-worker.js', import.meta.url), { type: 'module', name: 'spatial index' });
    indexWorker.onmessage = (event) => {
      const { id, index, error } = event.data;
      const waiting = indexWaiting.get(id);
      indexWaiting.delete(id);
      if (error) waiting.reject(new Error(`spatial index: ${error}`));
      else waiting.resolve(index);
    };
  }
  const id = ++indexRequests;
  // Copies go to the worker (transferred, so nothing is cloned); the drawn points keep theirs.
  const [cx, cy] = [x.slice(), y.slice()];
  return new Promise((resolve, reject) => {
    indexWaiting.set(id, { resolve, reject });
    indexWorker.postMessage({ id, x: cx, y: cy }, [cx.buffer, cy.buffer]);
  });
}

// The points as regl-scatterplot keeps them, [x, y, z, w] each, built here in slices of 100,000
// with the page yielded between them: handed typed arrays, regl-scatterplot builds this array itself
// in one go (a million small arrays in one main-thread task).
async function arrayPoints(x, y, z, w) {
  const n = x.length;
  const out = new Array(n);
  for (let start = 0; start < n; start += 100000) {
    const end = Math.min(n, start + 100000);
    for (let i = start; i < end; i += 1) out[i] = [x[i], y[i], z[i], w[i]];
    if (end < n) await yieldToPage();
  }
  return out;
}

function permute(column, order) {
  const out = new Float32Array(order.length);
  for (let i = 0; i < order.length; i += 1) out[i] = column[order[i]];
  return out;
}

export class EmbeddingView {
  constructor(canvas) {
    this.canvas = canvas;
    this.scatter = null;
    this.cells = null; // {dataset, version, n, x, y, groupings: {name: {codes, labels}}}
    this.colour = null; // what the drawn points are coloured by
    this.drawn = null; // {kind, gene?, grouping?, n, nonzero, max, values}
    this.spatialIndex = null;
  }

  // The cells' coordinates and groups, in Arrow pages of 100,000: every cell, or (`sample`) the
  // density-aware embedding sample. `progress(done, total)`.
  async load(dataset, described, progress, sample = false) {
    let n = described.n_cells;
    let path = `/v1/datasets/${seg(dataset)}/cells`;
    let params = [['include', 'metadata,embedding'], ['version', described.version], ['limit', '100000']];
    // pointOf[position] = the point drawing that cell (-1: not in the sample); null: the identity.
    let pointOf = null;
    if (sample) {
      path = `/v1/datasets/${seg(dataset)}/embedding/sample`;
      params = [['version', described.version], ['limit', '100000']];
      const head = await getJson(path, [['version', described.version], ['limit', '1']]);
      n = head.n_sampled;
      pointOf = new Int32Array(described.n_cells).fill(-1);
    }
    let next = 0;
    const [cx, cy] = described.embedding.columns;
    const x = new Float32Array(n).fill(NaN);
    const y = new Float32Array(n).fill(NaN);
    const groupings = {};
    for (const name of Object.keys(described.groupings)) {
      groupings[name] = { codes: new Int32Array(n).fill(-1), labels: described.groupings[name].map((g) => g.name) };
    }
    let done = 0;
    await eachArrowPage(path, params, async (table) => {
      const cellPositions = table.getChild('position').toArray();
      let positions = cellPositions;
      if (pointOf) {
        // Sample points are numbered in arrival order.
        positions = new Int32Array(cellPositions.length);
        for (let i = 0; i < cellPositions.length; i += 1) {
          pointOf[cellPositions[i]] = next;
          positions[i] = next;
          next += 1;
        }
      }
      const xs = table.getChild(cx);
      const ys = table.getChild(cy);
      const xv = xs.nullCount ? Array.from(xs, (v) => (v === null ? NaN : v)) : xs.toArray();
      const yv = ys.nullCount ? Array.from(ys, (v) => (v === null ? NaN : v)) : ys.toArray();
      for (let i = 0; i < positions.length; i += 1) {
        x[positions[i]] = xv[i];
        y[positions[i]] = yv[i];
      }
      for (const [name, grouping] of Object.entries(groupings)) {
        const column = table.getChild(name);
        if (!column) continue;
        const index = new Map(grouping.labels.map((label, i) => [label, i]));
        let row = 0;
        for (const chunk of column.data) {
          // A dictionary column: per page its own dictionary; map its codes to the dataset's groups.
          const local = chunk.dictionary ? Array.from(chunk.dictionary, (label) => (index.has(label) ? index.get(label) : -1)) : null;
          for (let i = 0; i < chunk.length; i += 1, row += 1) {
            const code = local ? local[chunk.values[i]] : index.get(column.get(row)) ?? -1;
            grouping.codes[positions[row]] = chunk.nullCount && !chunk.getValid(i) ? -1 : code;
          }
        }
      }
      done += positions.length;
      progress(done, n);
    });
    // Normalised to [-1, 1] with one scale for both axes (an embedding's distances are isotropic).
    let [x0, x1, y0, y1] = [Infinity, -Infinity, Infinity, -Infinity];
    for (let i = 0; i < n; i += 1) {
      if (Number.isFinite(x[i]) && Number.isFinite(y[i])) {
        x0 = Math.min(x0, x[i]); x1 = Math.max(x1, x[i]); y0 = Math.min(y0, y[i]); y1 = Math.max(y1, y[i]);
      }
    }
    const scale = 1.9 / Math.max(x1 - x0, y1 - y0, 1e-12);
    const mx = (x0 + x1) / 2;
    const my = (y0 + y1) / 2;
    const nx = new Float32Array(n);
    const ny = new Float32Array(n);
    for (let i = 0; i < n; i += 1) {
      const ok = Number.isFinite(x[i]) && Number.isFinite(y[i]);
      nx[i] = ok ? (x[i] - mx) * scale : 9; // cells without coordinates: off screen
      ny[i] = ok ? (y[i] - my) * scale : 9;
    }
    this.cells = { dataset, version: described.version, n, nCells: described.n_cells, sample, pointOf, x: nx, y: ny, groupings, columns: [cx, cy] };
    this.spatialIndex = null;
  }

  ensureScatter() {
    if (this.scatter) return;
    const { width, height } = this.canvas.getBoundingClientRect();
    this.scatter = createScatterplot({
      canvas: this.canvas,
      width: Math.max(1, width),
      height: Math.max(1, height),
      backgroundColor: [1, 1, 1, 1],
      pointSize: 3,
      opacity: 0.85,
      lassoInitiator: false,
    });
  }

  resize() {
    if (!this.scatter) return;
    const { width, height } = this.canvas.getBoundingClientRect();
    this.scatter.set({ width: Math.max(1, width), height: Math.max(1, height) });
  }

  pointSize() {
    const n = this.cells.n;
    return n > 300000 ? 1 : n > 50000 ? 2 : n > 5000 ? 3 : 4;
  }

  // Draw every point with colour encoding z (categorical) or w (continuous). `order` (an Int32Array
  // of point indices): the drawing order, later on top; the points themselves are passed in that
  // order (regl-scatterplot's pointOrder wants a plain Array and a Set over every point).
  async draw(z, w, colours, colourBy, order) {
    this.ensureScatter();
    this.scatter.set({ pointColor: colours, colorBy: colourBy, pointSize: this.pointSize(), opacity: this.cells.n > 300000 ? 0.6 : 0.85 });
    let { x, y } = this.cells;
    if (order) [x, y, z, w] = [x, y, z, w].map((column) => permute(column, order));
    // The k-d tree over the points, off the main thread; the one of the points in their own order is
    // kept for the next draw in that order.
    const spatialIndex = order ? await spatialIndexOf(x, y) : (this.spatialIndex = this.spatialIndex || (await spatialIndexOf(x, y)));
    const points = await arrayPoints(x, y, z, w);
    await this.scatter.draw(points, { zDataType: 'categorical', wDataType: 'continuous', spatialIndex });
  }

  // Colour the cells by their group.
  async colourByGrouping(grouping) {
    const { codes, labels } = this.cells.groupings[grouping];
    const n = this.cells.n;
    const z = new Float32Array(n);
    for (let i = 0; i < n; i += 1) z[i] = codes[i] < 0 ? labels.length : codes[i];
    const colours = labels.map((_, i) => CATEGORY_COLOURS[i % CATEGORY_COLOURS.length]).concat([ZERO_COLOUR]);
    await yieldToPage();
    await this.draw(z, new Float32Array(n), colours, 'valueA', null);
    this.drawn = { kind: 'grouping', grouping, n, labels, sample: this.cells.sample };
  }

  // Colour the cells by a gene's values (zeros grey, drawn first; the highest values on top).
  async colourByGene(gene, progress) {
    const n = this.cells.n;
    const values = new Float32Array(n);
    let max = 0;
    let nonzero = 0;
    await eachArrowPage(`/v1/datasets/${seg(this.cells.dataset)}/features/${seg(gene)}/values`, [['version', this.cells.version]], async (table) => {
      const index = table.getChild('index').toArray();
      const value = table.getChild('value').toArray();
      const pointOf = this.cells.pointOf;
      for (let i = 0; i < index.length; i += 1) {
        const point = pointOf ? pointOf[index[i]] : index[i];
        if (point < 0) continue;
        values[point] = value[i];
        if (value[i] > max) max = value[i];
        if (value[i] !== 0) nonzero += 1;
      }
      if (progress) progress(nonzero);
    });
    const w = new Float32Array(n);
    // Drawing order in one typed array: the zeros first, then the expressing cells by value.
    const order = new Int32Array(n);
    let zeros = 0;
    for (let i = 0; i < n; i += 1) if (values[i] === 0) order[zeros++] = i;
    let k = zeros;
    for (let i = 0; i < n; i += 1) {
      if (values[i] !== 0) {
        // Index 0 of the colour map is the zeros' grey: non-zeros map onto (0, 1].
        w[i] = max > 0 ? 1 / 255 + (Math.max(0, values[i]) / max) * (254 / 255) : 0;
        order[k++] = i;
      }
    }
    await yieldToPage();
    order.subarray(zeros).sort((a, b) => values[a] - values[b]);
    await this.draw(new Float32Array(n), w, geneColourMap(), 'valueB', order);
    this.drawn = { kind: 'gene', gene, n, nonzero, max, values, sample: this.cells.sample };
  }
}
