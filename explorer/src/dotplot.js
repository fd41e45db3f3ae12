// The dot plot (genes x groups; dot area = fraction of the group's cells expressing, colour = mean)
// drawn on one 2D canvas. Plotly's SVG scatter made one DOM node per dot: 5,000 dots were a 0.5-6 s
// main-thread task. Here the canvas covers only the visible part of the grid and redraws it on
// scroll (a few milliseconds, whatever the grid's size), with frozen panes: the gene labels stay on
// top and the group labels on the left while the grid scrolls under them. Legends are HTML above it.

export const DOT_MAX_PX = 18; // diameter at 100% expressing: area ~ fraction
// Mean expression, light to dark: ColorBrewer's Reds without its near-white first class (a dot of a
// mean near 0 must still show on white), linear from the lowest mean (or 0) to the highest.
export const MEAN_STOPS = ['#fee0d2', '#fcbba1', '#fc9272', '#fb6a4a', '#ef3b2c', '#cb181d', '#a50f15', '#67000d'];
export const DOT_SIZE_KEY = [0.1, 0.25, 0.5, 1];
const CELL_W = 26;
const CELL_H = 22;
const FONT = 'system-ui, -apple-system, "Segoe UI", "DejaVu Sans", sans-serif';
const LABEL_FONT = `12px ${FONT}`;
const TITLE_FONT = `600 12px ${FONT}`;
const MAX_LABEL_PX = 240;
const SIN60 = Math.sin(Math.PI / 3);
const COS60 = Math.cos(Math.PI / 3);

export const dotSize = (frac) => (frac === null || !(frac > 0) ? 0 : DOT_MAX_PX * Math.sqrt(Math.min(1, frac)));

const STOP_RGB = MEAN_STOPS.map((c) => [1, 3, 5].map((i) => parseInt(c.slice(i, i + 2), 16)));

// The colour of t in [0, 1] on the mean scale, as [r, g, b].
export function meanRgb(t) {
  const x = Math.min(1, Math.max(0, Number.isFinite(t) ? t : 0)) * (STOP_RGB.length - 1);
  const k = Math.min(STOP_RGB.length - 2, Math.floor(x));
  return STOP_RGB[k].map((v, j) => Math.round(v + (STOP_RGB[k + 1][j] - v) * (x - k)));
}

export const meanGradientCss = () => `linear-gradient(to right, ${MEAN_STOPS.join(', ')})`;

const pct = (frac) => (frac === null ? 'n/a' : `${(100 * frac).toFixed(1)}%`);

function truncate(ctx, text, width) {
  if (ctx.measureText(text).width <= width) return text;
  let lo = 0;
  let hi = text.length;
  while (lo < hi) {
    const mid = Math.ceil((lo + hi) / 2);
    if (ctx.measureText(`${text.slice(0, mid)}…`).width <= width) lo = mid;
    else hi = mid - 1;
  }
  return `${text.slice(0, lo)}…`;
}

// The grid's numbers: one entry per dot, genes (columns) outer, groups (rows, top to bottom) inner.
export function dotPlotModel(agg, order, grouping, highlight, labelOf = (f) => f) {
  const genes = agg.features;
  const n = genes.length * order.length;
  const model = {
    genes,
    geneLabels: genes.map(labelOf),
    groups: order.map((g) => agg.groups[g]),
    groupCounts: order.map((g) => agg.group_counts[g]),
    grouping,
    highlight: genes.includes(highlight) ? highlight : null,
    mean: new Float64Array(n).fill(NaN),
    frac: new Float64Array(n).fill(NaN),
    cmin: 0,
    cmax: 0,
  };
  let k = 0;
  for (let f = 0; f < genes.length; f += 1) {
    const means = agg.stats.mean[f];
    const fracs = agg.stats.frac_expressing[f];
    for (const g of order) {
      if (means[g] !== null) {
        model.mean[k] = means[g];
        if (means[g] > model.cmax) model.cmax = means[g];
        if (means[g] < model.cmin) model.cmin = means[g];
      }
      if (fracs[g] !== null) model.frac[k] = fracs[g];
      k += 1;
    }
  }
  if (!(model.cmax > model.cmin)) model.cmax = model.cmin + 1;
  return model;
}

export class DotPlot {
  // container: an empty element the plot owns (it becomes the scrolling viewport);
  // onGene(gene): a dot or a gene label clicked.
  constructor(container, onGene) {
    this.container = container;
    this.onGene = onGene;
    this.canvas = document.createElement('canvas');
    this.canvas.className = 'dotplot-canvas';
    this.canvas.setAttribute('role', 'img');
    this.spacer = document.createElement('div');
    this.spacer.className = 'dotplot-spacer';
    this.tooltip = document.createElement('div');
    this.tooltip.className = 'dotplot-tooltip';
    this.tooltip.hidden = true;
    container.replaceChildren(this.canvas, this.spacer);
    // The tooltip lives on the body, fixed to the window: inside the scrolling grid it was clipped
    // by a narrow grid and widened its scroll area.
    document.body.append(this.tooltip);
    this.ctx = this.canvas.getContext('2d');
    this.model = null;
    this.frame = 0;
    container.addEventListener('scroll', () => { this.tooltip.hidden = true; this.schedule(); }, { passive: true });
    this.canvas.addEventListener('mousemove', (event) => this.hover(event));
    this.canvas.addEventListener('mouseleave', () => { this.tooltip.hidden = true; });
    this.canvas.addEventListener('click', (event) => {
      const hit = this.hit(event);
      if (hit && hit.gene !== undefined) this.onGene(this.model.genes[hit.gene]);
    });
  }

  // Lay the grid out for `model` (dotPlotModel) and draw the visible part; `maxHeight` in CSS px.
  render(model, maxHeight) {
    this.model = model;
    const ctx = this.ctx;
    ctx.font = LABEL_FONT;
    const groupLabelPx = Math.min(MAX_LABEL_PX, Math.max(24, ...model.groups.map((g) => ctx.measureText(g).width)));
    const geneLabelPx = Math.min(MAX_LABEL_PX, Math.max(24, ...model.geneLabels.map((g) => ctx.measureText(g).width)));
    ctx.font = TITLE_FONT;
    const titlePx = ctx.measureText(`↓ ${model.grouping}`).width;
    this.left = Math.ceil(Math.max(groupLabelPx + 12, titlePx + 8, 90));
    this.top = Math.ceil(geneLabelPx * SIN60 + 12 + 8);
    // The last labels lean right past the grid: room for them.
    this.totalW = Math.ceil(this.left + model.genes.length * CELL_W + Math.max(16, geneLabelPx * COS60 + 4));
    this.totalH = this.top + model.groups.length * CELL_H + 8;
    this.canvas.setAttribute('aria-label', `Dot plot of ${model.genes.length} genes by ${model.groups.length} groups of ${model.grouping}: dot area is the fraction of the group's cells expressing the gene, colour its mean expression (${model.cmin.toPrecision(3)} to ${model.cmax.toPrecision(3)})`);
    this.container.style.height = '';
    this.container.style.maxHeight = `${Math.round(maxHeight)}px`;
    this.resize();
  }

  // The viewport changed size (a window resize): canvas as large as the visible part of the grid.
  resize() {
    if (!this.model) return;
    const box = this.container;
    // The spacer first (the scrollbars' presence decides the client size), then the canvas.
    this.spacer.style.width = `${this.totalW}px`;
    this.spacer.style.height = `${this.totalH}px`;
    this.canvas.style.width = '0px';
    this.canvas.style.height = '0px';
    this.viewW = Math.min(this.totalW, box.clientWidth);
    this.viewH = Math.min(this.totalH, box.clientHeight || this.totalH);
    this.spacer.style.height = `${Math.max(0, this.totalH - this.viewH)}px`;
    this.spacer.style.marginTop = '0px';
    const dpr = Math.min(2, window.devicePixelRatio || 1);
    this.canvas.width = Math.max(1, Math.round(this.viewW * dpr));
    this.canvas.height = Math.max(1, Math.round(this.viewH * dpr));
    this.canvas.style.width = `${this.viewW}px`;
    this.canvas.style.height = `${this.viewH}px`;
    this.dpr = dpr;
    this.draw();
  }

  schedule() {
    if (this.frame) return;
    this.frame = requestAnimationFrame(() => {
      this.frame = 0;
      this.draw();
    });
  }

  draw() {
    const m = this.model;
    if (!m) return;
    const ctx = this.ctx;
    const { left, top, viewW, viewH } = this;
    const sx = this.container.scrollLeft;
    const sy = this.container.scrollTop;
    const nGroups = m.groups.length;
    ctx.setTransform(this.dpr, 0, 0, this.dpr, 0, 0);
    ctx.fillStyle = '#ffffff';
    ctx.fillRect(0, 0, viewW, viewH);
    const c0 = Math.max(0, Math.floor(sx / CELL_W));
    const c1 = Math.min(m.genes.length, Math.ceil((sx + viewW - left) / CELL_W));
    const r0 = Math.max(0, Math.floor(sy / CELL_H));
    const r1 = Math.min(nGroups, Math.ceil((sy + viewH - top) / CELL_H));
    const colX = (c) => left + c * CELL_W + CELL_W / 2 - sx;
    const rowY = (r) => top + r * CELL_H + CELL_H / 2 - sy;

    // The grid: the selected gene's column shaded, faint lines through the dots' centres, the dots.
    ctx.save();
    ctx.beginPath();
    ctx.rect(left, top, viewW - left, viewH - top);
    ctx.clip();
    const h = m.highlight === null ? -1 : m.genes.indexOf(m.highlight);
    if (h >= c0 && h < c1) {
      ctx.fillStyle = 'rgba(49,130,189,0.12)';
      ctx.fillRect(colX(h) - CELL_W / 2, top, CELL_W, viewH - top);
    }
    ctx.strokeStyle = '#eeeeee';
    ctx.lineWidth = 1;
    ctx.beginPath();
    for (let c = c0; c < c1; c += 1) { ctx.moveTo(Math.round(colX(c)) + 0.5, top); ctx.lineTo(Math.round(colX(c)) + 0.5, viewH); }
    for (let r = r0; r < r1; r += 1) { ctx.moveTo(left, Math.round(rowY(r)) + 0.5); ctx.lineTo(viewW, Math.round(rowY(r)) + 0.5); }
    ctx.stroke();
    ctx.lineWidth = 0.6;
    ctx.strokeStyle = '#6b6b6b';
    const span = m.cmax - m.cmin;
    for (let c = c0; c < c1; c += 1) {
      for (let r = r0; r < r1; r += 1) {
        const k = c * nGroups + r;
        const d = dotSize(Number.isNaN(m.frac[k]) ? null : m.frac[k]);
        if (!(d > 0)) continue;
        const [red, green, blue] = meanRgb((m.mean[k] - m.cmin) / span);
        ctx.fillStyle = `rgb(${red},${green},${blue})`;
        ctx.beginPath();
        ctx.arc(colX(c), rowY(r), d / 2, 0, 2 * Math.PI);
        ctx.fill();
        ctx.stroke();
      }
    }
    ctx.restore();

    // Frozen panes: gene labels on top (rotated, the selected gene in bold blue), group labels left.
    ctx.save();
    ctx.beginPath();
    ctx.rect(left, 0, viewW - left, top);
    ctx.clip();
    ctx.fillStyle = '#ffffff';
    ctx.fillRect(left, 0, viewW - left, top);
    ctx.textAlign = 'left';
    ctx.textBaseline = 'middle';
    // Labels lean right, so columns left of the view can show theirs: start a few columns earlier.
    for (let c = Math.max(0, c0 - Math.ceil(top / CELL_W)); c < c1; c += 1) {
      ctx.save();
      ctx.translate(colX(c), top - 6);
      ctx.rotate(-Math.PI / 3);
      ctx.font = c === h ? `600 12px ${FONT}` : LABEL_FONT;
      ctx.fillStyle = c === h ? '#08519c' : '#222222';
      ctx.fillText(truncate(ctx, m.geneLabels[c], MAX_LABEL_PX), 0, 0);
      ctx.restore();
    }
    ctx.restore();
    ctx.save();
    ctx.beginPath();
    ctx.rect(0, top, left, viewH - top);
    ctx.clip();
    ctx.fillStyle = '#ffffff';
    ctx.fillRect(0, top, left, viewH - top);
    ctx.font = LABEL_FONT;
    ctx.fillStyle = '#222222';
    ctx.textAlign = 'right';
    ctx.textBaseline = 'middle';
    for (let r = r0; r < r1; r += 1) ctx.fillText(truncate(ctx, m.groups[r], MAX_LABEL_PX), left - 6, rowY(r));
    ctx.restore();
    // The corner: the axes' titles.
    ctx.fillStyle = '#ffffff';
    ctx.fillRect(0, 0, left, top);
    ctx.font = TITLE_FONT;
    ctx.fillStyle = '#444444';
    ctx.textBaseline = 'alphabetic';
    ctx.textAlign = 'right';
    ctx.fillText('gene →', left - 6, top - 24);
    ctx.textAlign = 'left';
    ctx.fillText(`↓ ${m.grouping}`, 4, top - 6);
    ctx.strokeStyle = '#c8ccd2';
    ctx.lineWidth = 1;
    ctx.beginPath();
    ctx.moveTo(0, top - 0.5);
    ctx.lineTo(viewW, top - 0.5);
    ctx.moveTo(left - 0.5, 0);
    ctx.lineTo(left - 0.5, viewH);
    ctx.stroke();
  }

  // What is under the mouse: {gene, group} in the grid, {gene} on a gene label, or null.
  hit(event) {
    if (!this.model) return null;
    const rect = this.canvas.getBoundingClientRect();
    const x = event.clientX - rect.left;
    const y = event.clientY - rect.top;
    const sx = this.container.scrollLeft;
    const sy = this.container.scrollTop;
    if (x < this.left) return null;
    if (y < this.top) {
      // A label leans 60 degrees right from its column's foot: follow it back down.
      const foot = x - (this.top - 6 - y) * (COS60 / SIN60);
      const c = Math.floor((foot - this.left + sx) / CELL_W);
      return c >= 0 && c < this.model.genes.length ? { gene: c } : null;
    }
    const c = Math.floor((x - this.left + sx) / CELL_W);
    const r = Math.floor((y - this.top + sy) / CELL_H);
    if (c < 0 || c >= this.model.genes.length || r < 0 || r >= this.model.groups.length) return null;
    return { gene: c, group: r };
  }

  hover(event) {
    const hit = this.hit(event);
    this.canvas.style.cursor = hit ? 'pointer' : 'default';
    if (!hit) { this.tooltip.hidden = true; return; }
    const m = this.model;
    const label = m.geneLabels[hit.gene];
    if (hit.group === undefined) {
      this.tooltip.textContent = `${label}: click to colour the embedding by it`;
    } else {
      const k = hit.gene * m.groups.length + hit.group;
      const mean = Number.isNaN(m.mean[k]) ? 'n/a' : m.mean[k].toPrecision(4);
      const frac = Number.isNaN(m.frac[k]) ? null : m.frac[k];
      this.tooltip.replaceChildren(
        Object.assign(document.createElement('b'), { textContent: `${label} in ${m.groups[hit.group]}` }),
        document.createElement('br'),
        `mean ${mean}`,
        document.createElement('br'),
        `${pct(frac)} of ${m.groupCounts[hit.group].toLocaleString()} cells expressing`,
      );
    }
    this.tooltip.hidden = false;
    const x = Math.min(event.clientX + 14, window.innerWidth - this.tooltip.offsetWidth - 4);
    const y = event.clientY + 14 + this.tooltip.offsetHeight > window.innerHeight ? event.clientY - this.tooltip.offsetHeight - 8 : event.clientY + 14;
    this.tooltip.style.left = `${Math.max(0, x)}px`;
    this.tooltip.style.top = `${Math.max(0, y)}px`;
  }

  // The viewport coordinates of the dot of (gene, group), scrolled into view first; null if absent.
  centre(gene, group) {
    const m = this.model;
    const c = m ? m.genes.indexOf(gene) : -1;
    const r = m ? m.groups.indexOf(group) : -1;
    if (c < 0 || r < 0) return null;
    const box = this.container;
    const x = c * CELL_W + CELL_W / 2;
    const y = r * CELL_H + CELL_H / 2;
    box.scrollLeft = Math.max(0, x - (this.viewW - this.left) / 2);
    box.scrollTop = Math.max(0, y - (this.viewH - this.top) / 2);
    this.draw();
    const rect = this.canvas.getBoundingClientRect();
    return [rect.left + this.left + x - box.scrollLeft, rect.top + this.top + y - box.scrollTop];
  }

  clear() {
    this.model = null;
    this.tooltip.hidden = true;
    this.spacer.style.width = '0px';
    this.spacer.style.height = '0px';
    this.canvas.width = 1;
    this.canvas.height = 1;
  }
}
