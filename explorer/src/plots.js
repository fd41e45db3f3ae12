// Plotly figures of one gene over the groups: box plots and violins (the dot plot is dotplot.js's canvas).

const FONT = { family: 'system-ui, -apple-system, "Segoe UI", "DejaVu Sans", sans-serif', size: 12 };

// One gene over the groups, as box plots from the stored quartiles: whiskers at min and max (the 12
// statistics), or at 1.5 IQR clipped to the data when the distributions view's `boxStats` are given
// (q1, median, q3, whisker_low, whisker_high; each indexed like agg.groups).
export function boxPlotFigure(agg, order, grouping, gene, boxStats, minWidth = 520, labelOf = (f) => f) {
  const label = labelOf(gene);
  const f = agg.features.indexOf(gene);
  const groups = order.map((g) => agg.groups[g]);
  const pick = (stat) => order.map((g) => (boxStats ? boxStats[stat][g] : agg.stats[stat][f][g]));
  const trace = {
    type: 'box',
    name: label,
    x: groups,
    q1: pick('q1'),
    median: pick('median'),
    q3: pick('q3'),
    lowerfence: boxStats ? pick('whisker_low') : pick('min'),
    upperfence: boxStats ? pick('whisker_high') : pick('max'),
    fillcolor: 'rgba(203,24,29,0.25)',
    line: { color: '#a50f15', width: 1.2 },
    hoverinfo: 'x+y',
  };
  const whiskers = boxStats ? 'whiskers at 1.5 IQR' : 'whiskers at min and max';
  // A sparse gene: most groups' boxes (and 1.5 IQR whiskers) are flat at 0; say why, lest it read as no data.
  const flat = trace.q3.filter((q3, i) => q3 === 0 && trace.upperfence[i] === 0).length;
  const flatNote = flat ? `<br><sub>${flat} of ${groups.length} boxes flat at 0: at least 75% of those groups' cells are 0${boxStats ? ' (the violin shows the non-zero values)' : ''}</sub>` : '';
  const longestGroup = Math.max(4, ...groups.map((s) => s.length));
  return {
    data: [trace],
    layout: {
      font: FONT,
      title: { text: `${label} by ${grouping}<br><sub>box: quartiles and median; ${whiskers}</sub>${flatNote}`, font: { size: 14 } },
      height: 460,
      width: Math.max(minWidth, 36 * groups.length + 160),
      margin: { l: 70, r: 30, t: flat ? 90 : 70, b: 40 + 6.5 * Math.min(longestGroup, 40) },
      xaxis: { title: { text: grouping }, type: 'category', tickangle: groups.length > 8 ? -45 : 0, automargin: true },
      yaxis: { title: { text: `${label} expression` }, zeroline: true, rangemode: 'tozero' },
      showlegend: false,
      plot_bgcolor: '#ffffff',
      paper_bgcolor: '#ffffff',
    },
  };
}

// One gene over the groups as violins drawn from the distributions view: per group, the histogram of
// its non-zero values on the feature's shared bin edges, mirrored (width proportional to the bin's
// count, each group scaled to its own largest bin), with a box of all its values (zeros included;
// whiskers at 1.5 IQR clipped to the data) on top.
export function violinFigure(entry, groupNames, groupCounts, order, grouping, label, minWidth = 520) {
  const edges = entry.edges;
  const centres = edges.slice(0, -1).map((e, k) => (e + edges[k + 1]) / 2);
  const traces = [];
  order.forEach((g, i) => {
    const counts = entry.hist[g];
    const top = Math.max(...counts);
    const nonzero = counts.reduce((a, b) => a + b, 0);
    if (top > 0) {
      const half = counts.map((c) => (0.42 * c) / top);
      traces.push({
        type: 'scatter',
        mode: 'lines',
        x: [...half.map((w) => i + w), ...half.map((w) => i - w).reverse()],
        y: [...centres, ...[...centres].reverse()],
        fill: 'toself',
        fillcolor: 'rgba(203,24,29,0.30)',
        line: { color: '#a50f15', width: 1 },
        hoverinfo: 'text',
        text: `${groupNames[g]}: ${nonzero.toLocaleString()} of ${groupCounts[g].toLocaleString()} cells expressing (${((100 * nonzero) / Math.max(1, groupCounts[g])).toFixed(1)}%); ${entry.zeros[g].toLocaleString()} zeros`,
        showlegend: false,
      });
    }
  });
  const pick = (key) => order.map((g) => entry[key][g]);
  traces.push({
    type: 'box',
    name: 'quartiles',
    x: order.map((_, i) => i),
    q1: pick('q1'),
    median: pick('median'),
    q3: pick('q3'),
    lowerfence: pick('whisker_low'),
    upperfence: pick('whisker_high'),
    width: 0.14,
    fillcolor: 'rgba(255,255,255,0.85)',
    line: { color: '#252525', width: 1 },
    hoverinfo: 'y',
    showlegend: false,
  });
  const labels = order.map((g) => groupNames[g]);
  const longestGroup = Math.max(4, ...labels.map((s) => s.length));
  return {
    data: traces,
    layout: {
      font: FONT,
      title: { text: `${label} by ${grouping}<br><sub>violin: non-zero values (each group's widest bin = full width); box: all values, whiskers at 1.5 IQR</sub>`, font: { size: 14 } },
      height: 480,
      width: Math.max(minWidth, 48 * labels.length + 160),
      margin: { l: 70, r: 30, t: 70, b: 40 + 6.5 * Math.min(longestGroup, 40) },
      xaxis: { title: { text: grouping }, tickmode: 'array', tickvals: labels.map((_, i) => i), ticktext: labels, range: [-0.6, labels.length - 0.4], tickangle: labels.length > 8 ? -45 : 0, automargin: true, zeroline: false, showgrid: false },
      yaxis: { title: { text: `${label} expression` }, zeroline: true },
      hovermode: 'closest',
      plot_bgcolor: '#ffffff',
      paper_bgcolor: '#ffffff',
    },
  };
}
