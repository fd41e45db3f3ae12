// The explorer page: pick a dataset, a grouping and genes; a dot plot (or box plots) of the genes'
// per-group statistics; the embedding coloured by a gene; the table as CSV. The URL holds the state.
// Everything comes from the public read API (/v1/...); nothing is loaded from another origin.
import { ApiError, apiUrl, getJson, seg, serverFeatures } from './api.js';
import { DOT_MAX_PX, DOT_SIZE_KEY, DotPlot, dotPlotModel, dotSize, meanGradientCss } from './dotplot.js';
import { CATEGORY_COLOURS, EmbeddingView, geneGradientCss } from './embedding.js';
import { groupOrder } from './order.js';
import { boxPlotFigure, violinFigure } from './plots.js';

// Plotly (1.3 MB) draws only the box and violin plots: its chunk is loaded, and evaluated, the first
// time one is asked for, not with the page (the dot plot is dotplot.js's canvas).
let plotlyLoading = null;
const loadPlotly = () => {
  plotlyLoading = plotlyLoading || import('plotly.js-cartesian-dist-min').then((module) => module.default || module);
  return plotlyLoading;
};

const PLOT_STATS = ['mean', 'frac_expressing', 'min', 'q1', 'median', 'q3', 'max'];
const MAX_GENES = 200;
const $ = (id) => document.getElementById(id);

const state = { dataset: null, grouping: null, by: '', genes: [], gene: null, plot: 'dot', order: 'cluster', points: null };
// Above this many cells the embedding starts from the density-aware sample (when the server has it).
// A page embedding the explorer (or a test) may set window.wvExplorerConfig = {sampleAbove: N} first.
const SAMPLE_ABOVE = (window.wvExplorerConfig && window.wvExplorerConfig.sampleAbove) || 250000;
// What the tests (and curious users) can read: the state, what is plotted and drawn, and whether work is pending.
const explorer = { state, pending: 0, plotted: null, dots: null, embedding: null, server: null, timings: [], dotCentre: (gene, group) => (dotPlot ? dotPlot.centre(gene, group) : null) };
const timed = async (what, work) => {
  const t0 = performance.now();
  const out = await work();
  explorer.timings.push([what, Math.round(t0), Math.round(performance.now() - t0)]);
  return out;
};
window.wvExplorer = explorer;
explorer.timings.push(['script evaluated', 0, Math.round(performance.now())]);

let described = null;
let server = { distributions: null, markers: null, embeddingSample: null, crossed: false };
let aggregatesCache = new Map();
// Display symbols of features (h5ad uploads whose features are ids), as the feature listings answer them.
const symbols = new Map();
const labelOf = (feature) => symbols.get(feature) || feature;
function noteSymbols(listing) {
  if (!listing.symbols) return;
  listing.features.forEach((feature, i) => { if (listing.symbols[i] && listing.symbols[i] !== feature) symbols.set(feature, listing.symbols[i]); });
}
let plotToken = 0;
let dotPlot = null;
let plotlyShown = false;
let cellsLoaded = null;
let embeddingView = null;
let embeddingToken = 0;

function setStatus(text, error = false) {
  $('status').textContent = text;
  $('status').classList.toggle('error', error);
}

async function busy(work) {
  explorer.pending += 1;
  try {
    return await work();
  } catch (err) {
    setStatus(err instanceof ApiError ? err.message : `error: ${err.message}`, true);
    return undefined;
  } finally {
    explorer.pending -= 1;
  }
}

// --- the URL holds the state ---------------------------------------------------------------------

function readUrl() {
  const params = new URLSearchParams(window.location.search);
  return {
    dataset: params.get('dataset'),
    grouping: params.get('grouping'),
    by: params.get('by') || '',
    genes: params.getAll('g'),
    gene: params.get('color'),
    plot: params.get('plot'),
    order: params.get('order'),
    points: params.get('points'),
  };
}

function writeUrl() {
  const params = new URLSearchParams();
  if (state.dataset) params.set('dataset', state.dataset);
  if (state.grouping) params.set('grouping', state.grouping);
  if (state.by) params.set('by', state.by);
  for (const gene of state.genes) params.append('g', gene);
  if (state.gene) params.set('color', state.gene);
  params.set('plot', state.plot);
  params.set('order', state.order);
  if (state.points) params.set('points', state.points);
  window.history.replaceState(null, '', `${window.location.pathname}?${params}`);
}

// --- datasets and groupings ----------------------------------------------------------------------

function fillSelect(select, values, chosen, labels = values) {
  select.replaceChildren(...values.map((value, i) => {
    const option = document.createElement('option');
    option.value = value;
    option.textContent = labels[i];
    return option;
  }));
  if (chosen !== null && chosen !== undefined) select.value = chosen;
}

async function selectDataset(dataset, wanted) {
  state.dataset = dataset;
  aggregatesCache = new Map();
  described = await timed('describe', () => getJson(`/v1/datasets/${seg(dataset)}`));
  const groupings = Object.keys(described.groupings);
  const preferred = groupings.includes(wanted.grouping) ? wanted.grouping : groupings.includes('cell_type') ? 'cell_type' : groupings[0];
  state.grouping = preferred;
  fillSelect($('grouping'), groupings, preferred, groupings.map((g) => `${g} (${described.groupings[g].length})`));
  state.by = wanted.by || '';
  symbols.clear();
  if (wanted.genes.length) {
    state.genes = [...new Set(wanted.genes)];
    // A dataset with display symbols (h5ad): look the linked features' symbols up for their labels.
    if ((await getJson(`/v1/datasets/${seg(dataset)}/features`, [['limit', '1']])).symbols) await Promise.all(state.genes.slice(0, 60).map(resolveGene));
  } else {
    const first = await getJson(`/v1/datasets/${seg(dataset)}/features`, [['limit', '8']]);
    noteSymbols(first);
    state.genes = first.features;
  }
  state.gene = wanted.gene && state.genes.includes(wanted.gene) ? wanted.gene : null;
  renderChips();
  fillMarkerGroups();
  setStatus(`${described.title || dataset}: ${described.n_cells.toLocaleString()} cells, ${described.n_features.toLocaleString()} features (version ${described.version.slice(0, 12)})`);
  fillByOptions(true);
  writeUrl();
  startEmbedding();
  await refreshPlot();
}

// The groupings crossed with `grouping` in this dataset (the describe answer's `crossed`: the pairs
// the manifest asked for, each readable only in its own order, grouping then by).
function crossedWith(grouping) {
  return (described.crossed || []).filter((c) => c.grouping === grouping).map((c) => c.by);
}

const crossedPairs = () => (described.crossed || []).map((c) => `${c.grouping} × ${c.by}`).join(', ');

// "Split by" offers only the groupings crossed with the chosen one; the others are listed disabled
// ("not crossed"), and the control is hidden when the dataset crosses no pair at all. A `by` that is
// not crossed with the grouping (an old link, a grouping changed) is dropped, with a message naming
// the crossed pairs.
function fillByOptions(fromLink = false) {
  const crossed = server.crossed ? crossedWith(state.grouping) : [];
  if (state.by && !crossed.includes(state.by)) {
    setStatus(`${state.grouping} is not crossed with ${state.by} in ${state.dataset}, so it is not split by it (crossed: ${crossedPairs() || 'none'})`, fromLink);
    state.by = '';
  }
  const others = Object.keys(described.groupings).filter((g) => g !== state.grouping && !crossed.includes(g));
  fillSelect($('by'), ['', ...crossed, ...others], state.by, ['(none)', ...crossed, ...others.map((g) => `${g} (not crossed)`)]);
  for (const option of $('by').options) option.disabled = others.includes(option.value);
  $('by').title = crossed.length ? `crossed in this dataset: ${crossedPairs()}` : `${state.grouping} is crossed with no other grouping in this dataset${crossedPairs() ? ` (crossed: ${crossedPairs()})` : ''}`;
  $('by-label').hidden = !server.crossed || !(described.crossed || []).length;
}

// --- genes: chips and autocomplete ---------------------------------------------------------------

function renderChips() {
  const chips = state.genes.map((gene) => {
    const li = document.createElement('li');
    li.classList.toggle('selected', gene === state.gene);
    const name = document.createElement('button');
    name.type = 'button';
    name.className = 'gene';
    name.textContent = labelOf(gene);
    name.title = `colour the embedding by ${gene}`;
    name.addEventListener('click', () => setColourGene(gene));
    const remove = document.createElement('button');
    remove.type = 'button';
    remove.className = 'remove';
    remove.textContent = '×';
    remove.setAttribute('aria-label', `remove ${gene}`);
    remove.addEventListener('click', () => removeGene(gene));
    li.append(name, remove);
    return li;
  });
  $('chips').replaceChildren(...chips);
}

// The feature's own spelling (the search is case-insensitive, exact match first), or null.
async function resolveGene(text) {
  const found = await getJson(`/v1/datasets/${seg(state.dataset)}/features`, [['prefix', text], ['limit', '1']]);
  noteSymbols(found);
  const first = found.features[0];
  const symbol = found.symbols ? found.symbols[0] : null;
  const same = (name) => typeof name === 'string' && name.toLowerCase() === text.toLowerCase();
  return first !== undefined && (same(first) || same(symbol)) ? first : null;
}

async function addGenes(texts) {
  const names = texts.map((t) => t.trim()).filter(Boolean);
  if (!names.length) return;
  const resolved = await Promise.all(names.map(resolveGene));
  const unknown = names.filter((_, i) => resolved[i] === null);
  const known = resolved.filter((r) => r !== null && !state.genes.includes(r));
  state.genes = [...state.genes, ...new Set(known)].slice(0, MAX_GENES);
  renderChips();
  writeUrl();
  if (unknown.length) setStatus(`not in ${state.dataset}: ${unknown.slice(0, 10).join(', ')}${unknown.length > 10 ? ', …' : ''}`, true);
  if (known.length) await refreshPlot();
}

function removeGene(gene) {
  state.genes = state.genes.filter((g) => g !== gene);
  if (state.gene === gene) {
    state.gene = null;
    busy(colourEmbedding);
  }
  renderChips();
  writeUrl();
  busy(refreshPlot);
}

function setupAutocomplete() {
  const input = $('gene-input');
  const list = $('suggestions');
  let active = -1;
  let timer = null;
  let asked = 0;
  const items = () => [...list.children];
  const close = () => { list.hidden = true; active = -1; };
  const highlight = (i) => {
    items().forEach((li, k) => li.classList.toggle('active', k === i));
    active = i;
  };
  const choose = async (name) => {
    input.value = '';
    close();
    await busy(() => addGenes([name]));
  };
  input.addEventListener('input', () => {
    clearTimeout(timer);
    const text = input.value.trim();
    if (!text || /[\s,;]/.test(text)) { close(); return; }
    timer = setTimeout(() => busy(async () => {
      const ask = ++asked;
      const found = await getJson(`/v1/datasets/${seg(state.dataset)}/features`, [['prefix', text], ['limit', '12']]);
      if (ask !== asked) return;
      noteSymbols(found);
      list.replaceChildren(...found.features.map((name) => {
        const li = document.createElement('li');
        li.setAttribute('role', 'option');
        li.dataset.feature = name;
        li.textContent = symbols.has(name) ? `${symbols.get(name)} (${name})` : name;
        li.addEventListener('mousedown', (event) => { event.preventDefault(); choose(name); });
        return li;
      }));
      list.hidden = found.features.length === 0;
      highlight(found.features.length ? 0 : -1);
    }), 120);
  });
  input.addEventListener('keydown', (event) => {
    const n = items().length;
    if (event.key === 'ArrowDown' && n) { event.preventDefault(); highlight((active + 1) % n); }
    else if (event.key === 'ArrowUp' && n) { event.preventDefault(); highlight((active - 1 + n) % n); }
    else if (event.key === 'Escape') close();
    else if (event.key === 'Enter') {
      event.preventDefault();
      const text = input.value.trim();
      // A pasted list (commas, spaces, new lines): every name; otherwise the highlighted suggestion.
      if (/[\s,;]/.test(text)) { input.value = ''; close(); busy(() => addGenes(text.split(/[\s,;]+/))); }
      else if (!list.hidden && active >= 0) choose(items()[active].dataset.feature);
      else if (text) choose(text);
    }
  });
  input.addEventListener('blur', () => setTimeout(close, 100));
}

// --- the plot ------------------------------------------------------------------------------------

function aggregatesParams() {
  const params = [['grouping', state.grouping], ...state.genes.map((g) => ['feature', g])];
  if (state.by) params.push(['by', state.by]);
  return params;
}

async function fetchAggregates() {
  const key = JSON.stringify([state.dataset, described.version, aggregatesParams()]);
  if (!aggregatesCache.has(key)) {
    const body = await getJson(`/v1/datasets/${seg(state.dataset)}/aggregates`, [...aggregatesParams(), ['stats', PLOT_STATS.join(',')], ['version', described.version]]);
    aggregatesCache.set(key, body);
  }
  return aggregatesCache.get(key);
}

const distributionsCache = new Map();

async function fetchDistribution(gene) {
  const params = [['grouping', state.grouping], ['feature', gene], ['version', described.version]];
  if (state.by) params.push(['by', state.by]);
  const key = JSON.stringify([state.dataset, params]);
  if (!distributionsCache.has(key)) distributionsCache.set(key, await getJson(`/v1/datasets/${seg(state.dataset)}${server.distributions.replace('/v1/datasets/{dataset_id}', '')}`, params));
  return distributionsCache.get(key);
}

function updateDownload() {
  const link = $('download');
  if (!state.genes.length) {
    link.removeAttribute('href');
    link.setAttribute('aria-disabled', 'true');
    return;
  }
  link.href = apiUrl(`/v1/datasets/${seg(state.dataset)}/aggregates`, [...aggregatesParams(), ['format', 'csv'], ['version', described.version]]);
  link.setAttribute('download', `${state.dataset}_${state.grouping}${state.by ? `_by_${state.by}` : ''}.csv`);
  link.removeAttribute('aria-disabled');
}

const PLOT_CONFIG = { displaylogo: false, responsive: false, showLink: false, showSendToCloud: false, showEditInChartStudio: false, modeBarButtonsToRemove: ['select2d', 'lasso2d', 'autoScale2d'], toImageButtonOptions: { format: 'svg' } };

// Which of the two plot areas shows: the dot plot's canvas (with its HTML legend) or Plotly's div.
async function showPlotArea(kind) {
  $('dotplot').hidden = kind !== 'dot';
  $('dot-legend').hidden = kind !== 'dot';
  $('plot').hidden = kind === 'dot' || kind === null;
  if (kind !== 'dot' && dotPlot) dotPlot.clear();
  if (kind !== 'plotly' && plotlyShown) {
    (await loadPlotly()).purge($('plot'));
    plotlyShown = false;
  }
}

function renderDotLegend(model) {
  const circles = DOT_SIZE_KEY.map((frac) => {
    const d = dotSize(frac);
    return `<span class="key"><svg width="${DOT_MAX_PX + 2}" height="${DOT_MAX_PX + 2}" aria-hidden="true"><circle cx="${DOT_MAX_PX / 2 + 1}" cy="${DOT_MAX_PX / 2 + 1}" r="${d / 2}" fill="#bdbdbd" stroke="#6b6b6b" stroke-width="0.6"/></svg>${Math.round(frac * 100)}%</span>`;
  }).join('');
  const legend = $('dot-legend');
  legend.innerHTML = `<span class="part"><span><b>Dot area</b>: fraction of the group's cells expressing</span>${circles}</span>
    <span class="part"><span><b>Colour</b>: mean expression</span><span class="lo"></span><span class="ramp"></span><span class="hi"></span></span>
    <span class="hint">Hover a dot for its values; click a dot or a gene to colour the embedding by that gene.</span>`;
  legend.querySelector('.ramp').style.background = meanGradientCss();
  const number = (v) => Number(v.toPrecision(3)).toLocaleString();
  legend.querySelector('.lo').textContent = number(model.cmin);
  legend.querySelector('.hi').textContent = number(model.cmax);
}

// What the tests (and curious users) read of the drawn dot plot: per dot its gene, group, diameter and mean.
function dotsOf(model) {
  const dots = { x: [], y: [], size: [], colour: [] };
  model.genes.forEach((gene, c) => model.groups.forEach((group, r) => {
    const k = c * model.groups.length + r;
    dots.x.push(gene);
    dots.y.push(group);
    dots.size.push(dotSize(Number.isNaN(model.frac[k]) ? null : model.frac[k]));
    dots.colour.push(Number.isNaN(model.mean[k]) ? null : model.mean[k]);
  }));
  return dots;
}

function dotPlotMaxHeight() {
  // Down to the window's bottom on a wide screen (the grid scrolls, not the page); most of the window on a narrow one.
  if (window.matchMedia('(max-width: 900px)').matches) return Math.max(260, 0.75 * window.innerHeight);
  return Math.max(260, window.innerHeight - ($('dotplot').getBoundingClientRect().top + window.scrollY) - 28);
}

async function refreshPlot() {
  const token = ++plotToken;
  updateDownload();
  const div = $('plot');
  $('plot-empty').hidden = state.genes.length > 0;
  if (!state.genes.length) {
    await showPlotArea(null);
    explorer.plotted = null;
    explorer.dots = null;
    return;
  }
  const agg = await timed('aggregates', fetchAggregates);
  if (token !== plotToken) return;
  const order = await timed('order', () => groupOrder(state.order, agg, state.gene || agg.features[0]));
  const kind = state.plot === 'violin' && !server.distributions ? 'box' : state.plot;
  const gene = state.gene || agg.features[0];
  const width = Math.max(320, $('plot-panel').clientWidth - 20);
  let figure;
  const groupingLabel = state.by ? `${state.grouping} | ${state.by}` : state.grouping;
  if (kind === 'dot') {
    await timed('plot dot', async () => {
      await showPlotArea('dot');
      const model = dotPlotModel(agg, order, groupingLabel, state.gene, labelOf);
      renderDotLegend(model);
      dotPlot = dotPlot || new DotPlot($('dotplot'), (clicked) => setColourGene(clicked));
      dotPlot.render(model, dotPlotMaxHeight());
      explorer.dots = dotsOf(model);
    });
    explorer.plotted = { kind, gene: null, groups: order.map((g) => agg.groups[g]), features: agg.features, labels: agg.features.map(labelOf), version: agg.version };
    return;
  }
  if (server.distributions) {
    const dist = await timed('distributions', () => fetchDistribution(gene));
    if (token !== plotToken) return;
    const entry = dist.features[0];
    const at = new Map(dist.groups.map((g, i) => [g, i]));
    const distOrder = order.map((g) => at.get(agg.groups[g]));
    if (kind === 'violin') {
      figure = violinFigure(entry, dist.groups, dist.group_counts, distOrder, groupingLabel, labelOf(gene), width);
    } else {
      const boxStats = Object.fromEntries(['q1', 'median', 'q3', 'whisker_low', 'whisker_high'].map((k) => [k, agg.groups.map((g) => entry[k][at.get(g)])]));
      figure = boxPlotFigure(agg, order, groupingLabel, gene, boxStats, width, labelOf);
    }
  } else {
    figure = boxPlotFigure(agg, order, groupingLabel, gene, null, width, labelOf);
  }
  const Plotly = await timed('load plotly', loadPlotly);
  if (token !== plotToken) return;
  await showPlotArea('plotly');
  await timed(`plot ${kind}`, () => Plotly.react(div, figure.data, figure.layout, PLOT_CONFIG));
  plotlyShown = true;
  explorer.dots = null;
  explorer.plotted = { kind, gene, groups: order.map((g) => agg.groups[g]), features: agg.features, labels: agg.features.map(labelOf), version: agg.version };
}

// --- the embedding -------------------------------------------------------------------------------

function startEmbedding() {
  const token = ++embeddingToken;
  const panel = $('embedding-panel');
  panel.hidden = !described.embedding;
  explorer.embedding = null;
  if (!described.embedding) { cellsLoaded = null; return; }
  embeddingView = embeddingView || new EmbeddingView($('embedding'));
  $('points-label').hidden = !server.embeddingSample;
  const sample = !!server.embeddingSample && (state.points ? state.points === 'sample' : described.n_cells > SAMPLE_ABOVE);
  $('points').value = sample ? 'sample' : 'all';
  const [cx, cy] = described.embedding.columns;
  $('axis-x').textContent = cx;
  $('axis-y').textContent = cy;
  $('embedding-title').textContent = `${described.embedding.name}: loading cells…`;
  cellsLoaded = busy(async () => {
    await timed('cells', () => embeddingView.load(state.dataset, described, (done, total) => {
      if (token === embeddingToken) $('embedding-title').textContent = `${described.embedding.name}: loading cells ${done.toLocaleString()} / ${total.toLocaleString()}`;
    }, sample));
    if (token !== embeddingToken) return false;
    return true;
  });
  busy(colourEmbedding);
}

function renderGeneLegend(drawn) {
  const legend = $('embedding-legend');
  const bar = document.createElement('div');
  bar.className = 'colourbar';
  bar.innerHTML = `<span class="zero"></span><span>0 (${(drawn.n - drawn.nonzero).toLocaleString()} cells)</span>
    <span class="lo"></span><span class="ramp"></span><span class="hi"></span>`;
  bar.querySelector('.zero').style.background = '#d4d4d4';
  bar.querySelector('.ramp').style.background = geneGradientCss();
  bar.querySelector('.lo').textContent = '>0';
  bar.querySelector('.hi').textContent = `${drawn.max.toPrecision(3)} (max)`;
  const caption = document.createElement('div');
  caption.className = 'hint';
  caption.textContent = `${labelOf(drawn.gene)} expression; ${drawn.nonzero.toLocaleString()} of ${drawn.n.toLocaleString()} ${drawn.sample ? 'sampled ' : ''}cells expressing`;
  legend.replaceChildren(bar, caption);
}

function renderGroupLegend(drawn) {
  const list = document.createElement('ul');
  list.className = 'categories';
  drawn.labels.forEach((label, i) => {
    const li = document.createElement('li');
    const swatch = document.createElement('span');
    swatch.className = 'swatch';
    swatch.style.background = CATEGORY_COLOURS[i % CATEGORY_COLOURS.length];
    li.append(swatch, document.createTextNode(label));
    list.append(li);
  });
  $('embedding-legend').replaceChildren(list);
  if (drawn.labels.length > CATEGORY_COLOURS.length) {
    // 20 distinguishable colours at most: with more groups, say so rather than let two groups pass for one.
    const note = document.createElement('p');
    note.className = 'hint';
    note.textContent = `${drawn.labels.length} groups, ${CATEGORY_COLOURS.length} colours: the colours repeat every ${CATEGORY_COLOURS.length} groups, so groups ${CATEGORY_COLOURS.length} apart look alike.`;
    $('embedding-legend').append(note);
  }
}

async function colourEmbedding() {
  if (!cellsLoaded || !(await cellsLoaded)) return;
  const token = embeddingToken;
  const name = described.embedding.name;
  const n = embeddingView.cells.sample
    ? `a density-aware sample of ${embeddingView.cells.n.toLocaleString()} of ${embeddingView.cells.nCells.toLocaleString()} cells`
    : `${embeddingView.cells.n.toLocaleString()} cells`;
  if (state.gene) {
    const gene = state.gene;
    $('embedding-title').textContent = `${name} coloured by ${gene}: loading values…`;
    await timed('colour by gene', () => embeddingView.colourByGene(gene));
    if (token !== embeddingToken || state.gene !== gene) return;
    $('embedding-title').textContent = `${name} of ${n}, coloured by ${labelOf(gene)}`;
    renderGeneLegend(embeddingView.drawn);
  } else {
    await timed('colour by group', () => embeddingView.colourByGrouping(state.grouping));
    if (token !== embeddingToken) return;
    $('embedding-title').textContent = `${name} of ${n}, coloured by ${state.grouping}`;
    renderGroupLegend(embeddingView.drawn);
  }
  explorer.embedding = embeddingView.drawn;
}

function setColourGene(gene) {
  state.gene = gene;
  renderChips();
  writeUrl();
  busy(refreshPlot);
  busy(colourEmbedding);
}

// --- markers (when the server has the markers view) ----------------------------------------------

function fillMarkerGroups() {
  $('markers-panel').hidden = !server.markers;
  if (!server.markers) return;
  const groups = described.groupings[state.grouping].map((g) => g.name);
  fillSelect($('marker-group'), groups, groups[0]);
  busy(refreshMarkers);
}

// Markers listed per group: the stored top N is 100 by default (markers_top_n); a stack may keep fewer, and asking more is a 400.
const MARKERS_SHOWN = 10;
let markerRows = [];

async function refreshMarkers() {
  if (!server.markers) return;
  const group = $('marker-group').value;
  const body = await getJson(`/v1/datasets/${seg(state.dataset)}/markers`, [['grouping', state.grouping], ['group', group], ['n', String(MARKERS_SHOWN)], ['version', described.version]]);
  markerRows = (body.groups && body.groups[0] && body.groups[0].markers) || [];
  $('markers').replaceChildren(...markerRows.map((row) => {
    const li = document.createElement('li');
    li.dataset.feature = row.feature;
    li.append(document.createTextNode(labelOf(row.feature)));
    const score = document.createElement('span');
    score.className = 'score';
    score.textContent = ` t=${Number(row.score).toFixed(1)}, log2FC=${Number(row.log2fc).toFixed(2)}, ${(100 * row.frac_in).toFixed(0)}% vs ${(100 * row.frac_out).toFixed(0)}%`;
    const add = document.createElement('button');
    add.type = 'button';
    add.textContent = '+';
    add.title = `add ${row.feature} to the plot`;
    add.setAttribute('aria-label', `add ${row.feature}`);
    add.addEventListener('click', () => busy(() => addGenes([row.feature])));
    li.append(score, add);
    return li;
  }));
}

// --- wiring --------------------------------------------------------------------------------------

async function init() {
  const wanted = readUrl();
  if (wanted.plot) state.plot = wanted.plot;
  if (wanted.order) state.order = wanted.order;
  if (wanted.points === 'all' || wanted.points === 'sample') state.points = wanted.points;
  try {
    server = await timed('openapi', serverFeatures);
  } catch (_) {
    // no schema: only what every server has
  }
  explorer.server = server;
  const violin = $('plot-kind').querySelector('option[value="violin"]');
  violin.disabled = !server.distributions;
  violin.title = server.distributions ? '' : 'needs the distributions view on the server';
  if (state.plot === 'violin' && !server.distributions) state.plot = 'box';
  $('plot-kind').value = state.plot;
  $('order').value = state.order;
  const { datasets } = await getJson('/v1/datasets');
  if (!datasets.length) {
    setStatus('No published dataset yet: upload one (wideviews upload FILE --dataset ID).');
    return;
  }
  $('dataset').addEventListener('change', () => busy(() => selectDataset($('dataset').value, { genes: [] })));
  $('grouping').addEventListener('change', () => {
    state.grouping = $('grouping').value;
    if (state.by === state.grouping) state.by = '';
    fillByOptions();
    fillMarkerGroups();
    writeUrl();
    busy(refreshPlot);
    if (!state.gene) busy(colourEmbedding);
  });
  $('by').addEventListener('change', () => { state.by = $('by').value; writeUrl(); busy(refreshPlot); });
  $('plot-kind').addEventListener('change', () => { state.plot = $('plot-kind').value; writeUrl(); busy(refreshPlot); });
  $('order').addEventListener('change', () => { state.order = $('order').value; writeUrl(); busy(refreshPlot); });
  $('clear-genes').addEventListener('click', () => {
    state.genes = [];
    state.gene = null;
    renderChips();
    writeUrl();
    busy(refreshPlot);
    busy(colourEmbedding);
  });
  $('marker-group').addEventListener('change', () => busy(refreshMarkers));
  $('add-markers').addEventListener('click', () => busy(() => addGenes(markerRows.map((r) => r.feature))));
  $('points').addEventListener('change', () => { state.points = $('points').value; writeUrl(); startEmbedding(); });
  let resizeTimer = null;
  window.addEventListener('resize', () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => {
      if (embeddingView) embeddingView.resize();
      busy(refreshPlot);
    }, 150);
  });
  const ids = datasets.map((d) => d.dataset);
  fillSelect($('dataset'), ids, ids.includes(wanted.dataset) ? wanted.dataset : ids.includes('demo') ? 'demo' : ids[0], datasets.map((d) => (d.title ? `${d.dataset}: ${d.title}` : d.dataset)));
  await selectDataset($('dataset').value, wanted);
}

setupAutocomplete();
busy(init);
