// Orders of the dot plot's groups: as the server lists them, by size, by a gene's mean, or by an
// average-linkage hierarchical clustering of their mean profiles (each gene z-scored over the groups).

export const MAX_CLUSTERED_GROUPS = 400;

// profiles[g] = vector over genes (NaN allowed). Returns the groups' indices in leaf order.
export function clusterOrder(profiles) {
  const n = profiles.length;
  if (n <= 2) return [...Array(n).keys()];
  const genes = profiles[0].length;
  const z = profiles.map(() => new Float64Array(genes));
  for (let j = 0; j < genes; j += 1) {
    let sum = 0;
    let count = 0;
    for (let g = 0; g < n; g += 1) if (Number.isFinite(profiles[g][j])) { sum += profiles[g][j]; count += 1; }
    const mean = count ? sum / count : 0;
    let ss = 0;
    for (let g = 0; g < n; g += 1) if (Number.isFinite(profiles[g][j])) ss += (profiles[g][j] - mean) ** 2;
    const sd = count > 1 ? Math.sqrt(ss / (count - 1)) : 0;
    for (let g = 0; g < n; g += 1) {
      const v = profiles[g][j];
      z[g][j] = Number.isFinite(v) && sd > 0 ? (v - mean) / sd : 0;
    }
  }
  // Average linkage over a distance matrix whose slots are clusters: merging k into i keeps slot i.
  const d = new Float64Array(n * n);
  for (let a = 0; a < n; a += 1) {
    for (let b = a + 1; b < n; b += 1) {
      let s = 0;
      for (let j = 0; j < genes; j += 1) s += (z[a][j] - z[b][j]) ** 2;
      d[a * n + b] = d[b * n + a] = Math.sqrt(s);
    }
  }
  const leaves = Array.from({ length: n }, (_, i) => [i]);
  const active = new Uint8Array(n).fill(1);
  for (let left = n; left > 1; left -= 1) {
    let best = Infinity;
    let bi = -1;
    let bk = -1;
    for (let i = 0; i < n; i += 1) {
      if (!active[i]) continue;
      for (let k = i + 1; k < n; k += 1) {
        if (active[k] && d[i * n + k] < best) { best = d[i * n + k]; bi = i; bk = k; }
      }
    }
    const ni = leaves[bi].length;
    const nk = leaves[bk].length;
    for (let c = 0; c < n; c += 1) {
      if (!active[c] || c === bi || c === bk) continue;
      const v = (d[bi * n + c] * ni + d[bk * n + c] * nk) / (ni + nk);
      d[bi * n + c] = d[c * n + bi] = v;
    }
    leaves[bi] = leaves[bi].concat(leaves[bk]);
    active[bk] = 0;
  }
  return leaves[active.indexOf(1)];
}

// indices of `groups` ordered by `how`: 'server' | 'size' | 'cluster' | 'gene' (the colour gene's mean).
export function groupOrder(how, aggregates, colourGene) {
  const n = aggregates.groups.length;
  const identity = [...Array(n).keys()];
  if (how === 'size') return identity.sort((a, b) => aggregates.group_counts[b] - aggregates.group_counts[a]);
  if (how === 'gene') {
    const f = Math.max(0, aggregates.features.indexOf(colourGene));
    const mean = aggregates.stats.mean[f];
    const v = (g) => (mean[g] === null ? -Infinity : mean[g]);
    return identity.sort((a, b) => v(b) - v(a));
  }
  if (how === 'cluster' && n <= MAX_CLUSTERED_GROUPS && aggregates.features.length > 0) {
    const profiles = identity.map((g) => aggregates.features.map((_, f) => (aggregates.stats.mean[f][g] === null ? NaN : aggregates.stats.mean[f][g])));
    return clusterOrder(profiles);
  }
  return identity;
}
