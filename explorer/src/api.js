// The read API as the page uses it: JSON and Arrow GETs on the same origin, 503s waited out after
// their Retry-After, errors turned into the server's own message.
import { tableFromIPC } from 'apache-arrow';

const ARROW = 'application/vnd.apache.arrow.stream';
const MAX_RETRIES = 4;

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

export function apiUrl(path, params = []) {
  const query = new URLSearchParams();
  for (const [key, value] of params) if (value !== null && value !== undefined && value !== '') query.append(key, value);
  const text = query.toString();
  return path + (text ? `?${text}` : '');
}

export const seg = (name) => encodeURIComponent(name);

async function get(path, params, accept) {
  const url = apiUrl(path, params);
  for (let attempt = 0; ; attempt += 1) {
    const response = await fetch(url, { headers: { Accept: accept } });
    if (response.ok) return response;
    if ((response.status === 503 || response.status === 429) && attempt < MAX_RETRIES) {
      const wait = Number(response.headers.get('Retry-After')) || 2 ** attempt;
      await sleep(Math.min(wait, 30) * 1000);
      continue;
    }
    let message = `${response.status} ${response.statusText}`;
    try {
      const body = await response.json();
      if (body && body.message) message = body.message;
    } catch (_) {
      // not JSON: keep the status line
    }
    throw new ApiError(response.status, message);
  }
}

export async function getJson(path, params = []) {
  return (await get(path, params, 'application/json')).json();
}

// Every page of an Arrow listing (cells, a feature's values), following next_cursor (which pins the
// first page's version). `onPage(table, metadata)` runs per page; the page is yielded to the event
// loop between pages so that a million cells do not freeze the page.
export async function eachArrowPage(path, params, onPage) {
  let cursor = null;
  for (;;) {
    const response = await get(path, [...params, ['format', 'arrow'], ['cursor', cursor]], ARROW);
    const table = tableFromIPC(new Uint8Array(await response.arrayBuffer()));
    const metadata = Object.fromEntries(table.schema.metadata);
    await onPage(table, metadata);
    cursor = metadata.next_cursor || null;
    if (!cursor) return;
    await sleep(0);
  }
}

// The routes and parameters the server has (from /openapi.json): views that arrive later (violin
// distributions, markers, crossed groupings, the embedding sample) appear in the page when they do.
export async function serverFeatures() {
  const schema = await getJson('/openapi.json');
  const paths = schema.paths || {};
  const find = (suffix) => Object.keys(paths).find((p) => p.endsWith(suffix));
  const aggregates = find('/aggregates');
  const aggregateParams = ((paths[aggregates] || {}).get || {}).parameters || [];
  return {
    distributions: find('/distributions') || null,
    markers: find('/markers') || null,
    embeddingSample: Object.keys(paths).find((p) => /embedding.*sample|sample.*embedding/.test(p)) || null,
    crossed: aggregateParams.some((p) => p.name === 'by'),
  };
}
