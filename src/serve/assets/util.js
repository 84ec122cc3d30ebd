// Small helpers shared by the page's modules. Everything from the server is put into the page
// as text (textContent / attributes), never as HTML.

export class ApiError extends Error {
  constructor(status, body) {
    super(body && body.error ? body.error : `HTTP ${status}`);
    this.status = status;
    this.hint = body && body.hint;
  }
}

export async function api(path) {
  return parse(await fetch(path, { credentials: 'same-origin', headers: { Accept: 'application/json' } }));
}

// A fetch response as JSON, or an ApiError with the server's message and hint.
export async function parse(res) {
  let body = null;
  try { body = await res.json(); } catch (_) { /* not JSON */ }
  if (!res.ok) throw new ApiError(res.status, body);
  return body;
}

// el('div', {class: 'x', onclick: f}, 'text', child, ...)
export function el(tag, attrs, ...children) {
  const svg = SVG_TAGS.has(tag);
  const e = svg ? document.createElementNS('http://www.w3.org/2000/svg', tag) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') e.addEventListener(k.slice(2), v);
    else if (k === 'dataset') Object.assign(e.dataset, v);
    else e.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

const SVG_TAGS = new Set(['svg', 'g', 'rect', 'path', 'line', 'circle', 'text', 'title', 'polyline', 'tspan', 'defs', 'marker', 'clipPath']);

export function enc(s) { return encodeURIComponent(s); }

export function instUrl(pipeline, id, rest = '') {
  return `/api/pipelines/${enc(pipeline)}/instances/${enc(id)}${rest}`;
}

export function fmtDur(s) {
  if (s === null || s === undefined || !isFinite(s)) return '';
  if (s < 60) return `${s.toFixed(1)} s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(Math.floor(s % 60)).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}

export function fmtTime(unix) {
  if (!unix) return '';
  const d = new Date(unix * 1000);
  const p = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}

export function fmtBytes(n) {
  if (n === null || n === undefined) return '';
  const u = ['B', 'KB', 'MB', 'GB', 'TB'];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return `${i === 0 ? n : n.toFixed(n < 10 ? 1 : 0)} ${u[i]}`;
}

export function short(digest) { return digest ? digest.slice(0, 12) : ''; }

export const STATES = ['cached', 'running', 'waiting', 'failed', 'blocked', 'interrupted', 'stale', 'never_run'];
export const STATE_LABEL = {
  cached: 'cached', running: 'running', waiting: 'waiting', failed: 'failed', blocked: 'blocked',
  interrupted: 'interrupted', stale: 'stale', never_run: 'never run',
};

export function pill(state) {
  return el('span', { class: `pill st-${state}` }, STATE_LABEL[state] || state);
}

// The label of an instance inside its stage group: its matrix values, else the stage name.
export function cellLabel(inst) {
  const vals = Object.values(inst.cell || {});
  return vals.length ? vals.join(' · ') : inst.stage;
}

export function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); return node; }
