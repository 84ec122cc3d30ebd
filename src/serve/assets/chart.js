// Line charts as plain SVG: axes with round ticks (powers of ten on a log axis), one polyline
// per series, a circle per point (class `pt`, with the value in its tooltip), a legend.
import { el } from './util.js';

// One fixed colour per series name across every chart of the page (colour-blind-safe palette).
const PALETTE = ['#0072B2', '#E69F00', '#009E73', '#CC79A7', '#56B4E9', '#D55E00', '#000000', '#F0E442'];
const assigned = new Map();
export function colorOf(name) {
  if (name === 'full data') return '#555555';
  if (!assigned.has(name)) assigned.set(name, PALETTE[assigned.size % PALETTE.length]);
  return assigned.get(name);
}

function niceTicks(lo, hi, n = 5) {
  if (!(hi > lo)) { const d = Math.abs(lo) * 0.1 || 1; lo -= d; hi += d; }
  const raw = (hi - lo) / n;
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) || raw;
  const ticks = [];
  for (let t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) ticks.push(+t.toPrecision(12));
  return { lo: Math.min(lo, ticks[0]), hi: Math.max(hi, ticks[ticks.length - 1]), ticks };
}

function intTicks(lo, hi) {
  lo = Math.floor(lo);
  hi = Math.max(Math.ceil(hi), lo + 1);
  const step = Math.max(1, Math.ceil((hi - lo) / 8));
  const ticks = [];
  for (let t = lo; t <= hi; t += step) ticks.push(t);
  return { lo, hi, ticks };
}

function fmtTick(v) {
  const a = Math.abs(v);
  if (a !== 0 && (a < 1e-3 || a >= 1e5)) return v.toExponential(0);
  return String(+v.toPrecision(4));
}

// `xRange: [lo, hi]` fixes the x axis (epochs 1..N); `intX` puts ticks on integers only.
export function lineChart({ title, xLabel, yLabel, series, logX = false, width = 460, height = 220, id, xRange, intX = false }) {
  const legend = series.filter((s) => s.label && s.points.length).length > 1;
  const m = { l: 56, r: legend ? 150 : 12, t: 26, b: 40 };
  const W = width - m.l - m.r, H = height - m.t - m.b;
  const pts = series.flatMap((s) => s.points).filter(([x, y]) => isFinite(x) && isFinite(y) && (!logX || x > 0));
  const svg = el('svg', { class: 'chart', width, height, viewBox: `0 0 ${width} ${height}`, id, 'data-points': pts.length, role: 'img', 'aria-label': title });
  svg.append(el('text', { x: m.l, y: 16, class: 'chart-title' }, title));
  if (!pts.length) {
    svg.append(el('text', { x: m.l + W / 2, y: m.t + H / 2, class: 'chart-empty', 'text-anchor': 'middle' }, 'no points yet'));
    return svg;
  }
  const xs = pts.map((p) => (logX ? Math.log10(p[0]) : p[0]));
  const ys = pts.map((p) => p[1]);
  let xt;
  if (logX) {
    const lo = Math.floor(Math.min(...xs)), hi = Math.ceil(Math.max(...xs));
    xt = { lo, hi: Math.max(hi, lo + 1), ticks: [] };
    for (let k = xt.lo; k <= xt.hi; k++) xt.ticks.push(k);
  } else {
    const lo = xRange ? Math.min(xRange[0], ...xs) : Math.min(...xs);
    const hi = xRange ? Math.max(xRange[1], ...xs) : Math.max(...xs);
    xt = intX ? intTicks(lo, hi) : niceTicks(lo, hi, 6);
  }
  const yt = niceTicks(Math.min(...ys), Math.max(...ys), 4);
  const X = (v) => m.l + ((v - xt.lo) / (xt.hi - xt.lo || 1)) * W;
  const Y = (v) => m.t + H - ((v - yt.lo) / (yt.hi - yt.lo || 1)) * H;
  const g = el('g', { class: 'axes' });
  for (const t of yt.ticks) {
    g.append(el('line', { x1: m.l, x2: m.l + W, y1: Y(t), y2: Y(t), class: 'grid' }));
    g.append(el('text', { x: m.l - 6, y: Y(t) + 4, 'text-anchor': 'end' }, fmtTick(t)));
  }
  for (const t of xt.ticks) {
    g.append(el('line', { x1: X(t), x2: X(t), y1: m.t + H, y2: m.t + H + 4, class: 'tick' }));
    g.append(el('text', { x: X(t), y: m.t + H + 16, 'text-anchor': 'middle' }, logX ? `1e${t}` : fmtTick(t)));
  }
  g.append(el('line', { x1: m.l, x2: m.l + W, y1: m.t + H, y2: m.t + H, class: 'axis' }));
  g.append(el('line', { x1: m.l, x2: m.l, y1: m.t, y2: m.t + H, class: 'axis' }));
  g.append(el('text', { x: m.l + W / 2, y: height - 6, 'text-anchor': 'middle', class: 'label' }, xLabel));
  g.append(el('text', { x: 12, y: m.t + H / 2, 'text-anchor': 'middle', class: 'label', transform: `rotate(-90 12 ${m.t + H / 2})` }, yLabel));
  svg.append(g);
  let ly = m.t + 4;
  for (const s of series) {
    const color = s.color || colorOf(s.label);
    const p = s.points.filter(([x, y]) => isFinite(x) && isFinite(y) && (!logX || x > 0));
    if (!p.length) continue;
    const d = p.map(([x, y]) => `${X(logX ? Math.log10(x) : x).toFixed(1)},${Y(y).toFixed(1)}`).join(' ');
    svg.append(el('polyline', { points: d, fill: 'none', stroke: color, 'stroke-width': 2, 'stroke-dasharray': s.dash || null }));
    if (p.length <= 60) {
      for (const [x, y] of p) {
        svg.append(el('circle', { class: 'pt', cx: X(logX ? Math.log10(x) : x), cy: Y(y), r: 3, fill: color, 'data-x': x, 'data-y': y },
          el('title', {}, `${s.label ? s.label + ': ' : ''}${fmtTick(x)}, ${+y.toPrecision(6)}`)));
      }
    }
    if (legend && s.label) {
      const lx = width - m.r + 12;
      svg.append(el('line', { x1: lx, x2: lx + 16, y1: ly - 2, y2: ly - 2, stroke: color, 'stroke-width': 2.5, 'stroke-dasharray': s.dash || null }));
      svg.append(el('text', { x: lx + 21, y: ly + 2, class: 'legend' }, s.label.length > 20 ? s.label.slice(0, 19) + '…' : s.label));
      ly += 14;
    }
  }
  return svg;
}
