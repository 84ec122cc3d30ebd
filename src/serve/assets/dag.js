// The pipeline's DAG, stages grouped: one box per stage, in columns by the longest path of
// stages leading to it; inside each box one chip per instance, coloured by state. Edges are drawn
// between stages (a matrix of cells would otherwise be a hairball); selecting an instance draws
// its own edges to its upstream and downstream instances.
import { el, clear, cellLabel, STATE_LABEL, fmtDur } from './util.js';

const CHIP_W = 196, CHIP_H = 24, GAP = 4, PAD = 8, HEAD = 30, COL_GAP = 52, ROW_GAP = 18;
const DOT = 14; // stages with many instances show them as small squares

let currentFit = null;
window.addEventListener('resize', () => currentFit?.());

export function layout(instances) {
  const stages = new Map(); // name -> {name, kind, items: [], deps: Set}
  const stageOf = new Map();
  for (const inst of instances) {
    if (!stages.has(inst.stage)) stages.set(inst.stage, { name: inst.stage, kind: inst.kind, items: [], deps: new Set() });
    stages.get(inst.stage).items.push(inst);
    stageOf.set(inst.id, inst.stage);
  }
  for (const inst of instances) {
    for (const d of inst.deps) {
      const ds = stageOf.get(d);
      if (ds && ds !== inst.stage) stages.get(inst.stage).deps.add(ds);
    }
  }
  // Instances come in topological order, so stages do too (by first instance).
  const rank = new Map();
  for (const s of stages.values()) {
    let r = 0;
    for (const d of s.deps) r = Math.max(r, (rank.get(d) ?? 0) + 1);
    rank.set(s.name, r);
  }
  const cols = [];
  for (const s of stages.values()) {
    const r = rank.get(s.name);
    (cols[r] ||= []).push(s);
    const n = s.items.length;
    s.compact = n > 48;
    if (s.compact) {
      s.gc = Math.ceil(Math.sqrt(n * 2));
      s.gr = Math.ceil(n / s.gc);
      s.w = Math.max(PAD * 2 + s.gc * (DOT + 3), 150);
      s.h = HEAD + PAD + s.gr * (DOT + 3) + PAD;
    } else {
      s.gc = Math.ceil(n / 12);
      s.gr = Math.ceil(n / s.gc);
      s.w = PAD * 2 + s.gc * CHIP_W + (s.gc - 1) * GAP;
      s.h = HEAD + s.gr * (CHIP_H + GAP) - GAP + PAD;
    }
  }
  // Within a column, order stages by where their upstream stages sit (fewer crossings).
  let x = 16;
  for (const col of cols.filter(Boolean)) {
    col.forEach((s, k) => {
      const ys = [...s.deps].map((d) => stages.get(d)).filter((d) => d.y !== undefined).map((d) => d.y + d.h / 2);
      s.key = ys.length ? ys.reduce((a, b) => a + b, 0) / ys.length : k;
    });
    col.sort((a, b) => a.key - b.key);
    let y = 16;
    const w = Math.max(...col.map((s) => s.w));
    for (const s of col) {
      s.x = x + (w - s.w) / 2;
      s.y = y;
      y += s.h + ROW_GAP;
    }
    x += w + COL_GAP;
  }
  const pos = new Map();
  for (const s of stages.values()) {
    s.items.forEach((inst, k) => {
      const c = Math.floor(k / s.gr), r = k % s.gr;
      if (s.compact) {
        pos.set(inst.id, { x: s.x + PAD + c * (DOT + 3), y: s.y + HEAD + r * (DOT + 3), w: DOT, h: DOT, stage: s });
      } else {
        pos.set(inst.id, { x: s.x + PAD + c * (CHIP_W + GAP), y: s.y + HEAD + r * (CHIP_H + GAP), w: CHIP_W, h: CHIP_H, stage: s });
      }
    });
  }
  // Stage edges after transitive reduction: `data -> prune` is not drawn when `data -> train ->
  // ... -> prune` is (the selected instance's own edges are drawn in full).
  const order = [...stages.values()];
  const reach = new Map();
  for (const s of order) {
    const r = new Set();
    for (const d of s.deps) { r.add(d); for (const x of reach.get(d)) r.add(x); }
    reach.set(s.name, r);
  }
  for (const s of order) {
    s.drawn = [...s.deps].filter((d) => ![...s.deps].some((o) => o !== d && reach.get(o).has(d)));
  }
  const width = x - COL_GAP + 16;
  const height = Math.max(...[...stages.values()].map((s) => s.y + s.h)) + 16;
  return { stages: [...stages.values()], pos, width, height };
}

function curve(x1, y1, x2, y2) {
  const dx = Math.max(24, (x2 - x1) / 2);
  return `M${x1},${y1} C${x1 + dx},${y1} ${x2 - dx},${y2} ${x2},${y2}`;
}

// Render into `container`; `onSelect(id)` when a chip is clicked. Returns an updater.
export function renderDag(container, instances, onSelect) {
  const L = layout(instances);
  const svg = el('svg', { id: 'dag', width: L.width, height: L.height, viewBox: `0 0 ${L.width} ${L.height}` });
  const edges = el('g', { class: 'edges' });
  for (const s of L.stages) {
    for (const d of s.drawn) {
      const u = L.stages.find((t) => t.name === d);
      edges.append(el('path', { class: 'edge', d: curve(u.x + u.w, u.y + u.h / 2, s.x, s.y + s.h / 2) }));
    }
  }
  svg.append(edges);
  const nodes = new Map();
  for (const s of L.stages) {
    const g = el('g', { class: 'stage', 'data-stage': s.name });
    g.append(el('rect', { class: 'stage-box', x: s.x, y: s.y, width: s.w, height: s.h, rx: 8 }));
    const title = el('title', {});
    g.append(title);
    s.titleNode = title;
    s.nameNode = el('text', { class: 'stage-name', x: s.x + PAD, y: s.y + 19 }, s.name);
    g.append(s.nameNode);
    const count = el('text', { class: 'stage-count', x: s.x + s.w - PAD, y: s.y + 19, 'text-anchor': 'end' });
    g.append(count);
    s.countNode = count;
    for (const inst of s.items) {
      const p = L.pos.get(inst.id);
      const n = el('g', { class: 'node', 'data-id': inst.id, 'data-state': inst.state, tabindex: 0, role: 'button' });
      n.append(el('title', {}, ''));
      n.append(el('rect', { class: 'chip', x: p.x, y: p.y, width: p.w, height: p.h, rx: s.compact ? 3 : 5 }));
      if (!s.compact) {
        n.append(el('rect', { class: 'bar', x: p.x + 1, y: p.y + p.h - 4, width: 0, height: 3, rx: 1.5 }));
        const label = s.items.length === 1 ? STATE_LABEL[inst.state] : cellLabel(inst);
        n.append(el('text', { class: 'chip-label', x: p.x + 9, y: p.y + 16 }, clip(label, 24)));
        n.append(el('text', { class: 'chip-meta', x: p.x + p.w - 8, y: p.y + 16, 'text-anchor': 'end' }, ''));
      }
      n.addEventListener('click', () => onSelect(inst.id));
      n.addEventListener('keydown', (e) => { if (e.key === 'Enter') onSelect(inst.id); });
      g.append(n);
      nodes.set(inst.id, { g: n, inst, stage: s });
    }
    svg.append(g);
  }
  const picks = el('g', { class: 'picks' });
  svg.append(picks);
  clear(container).append(svg);
  // A wide graph is shrunk to the window's width (down to 70 %), then scrolls.
  const fit = () => {
    const k = Math.min(1, Math.max(0.7, (container.clientWidth - 2) / L.width));
    svg.setAttribute('width', Math.round(L.width * k));
    svg.setAttribute('height', Math.round(L.height * k));
  };
  fit();
  currentFit = fit;
  const api = {
    update(inst, initial = false) {
      const n = nodes.get(inst.id);
      if (!n) return;
      n.inst = inst;
      n.g.dataset.state = inst.state;
      const title = n.g.querySelector('title');
      title.textContent = `${inst.id}\n${STATE_LABEL[inst.state]}${inst.duration_s != null ? ' · ' + fmtDur(inst.duration_s) : ''}${inst.device ? ' · ' + inst.device : ''}${n.progress ? '\n' + n.progress : ''}`;
      const meta = n.g.querySelector('.chip-meta');
      if (meta) meta.textContent = metaText(n);
      if (n.stage.items.length === 1 && !n.stage.compact) n.g.querySelector('.chip-label').textContent = STATE_LABEL[inst.state];
      const bar = n.g.querySelector('.bar');
      if (bar) bar.setAttribute('width', inst.state === 'running' && n.fraction != null ? Math.max(0, (L.pos.get(inst.id).w - 2) * n.fraction) : 0);
      if (!initial) api.counts(n.stage);
    },
    progress(id, text, fraction) {
      const n = nodes.get(id);
      if (!n) return;
      n.progress = text;
      if (fraction != null) n.fraction = fraction;
      api.update(n.inst);
    },
    counts(s, measure = true) {
      const by = {};
      for (const i of s.items) { const st = nodes.get(i.id)?.inst.state || i.state; by[st] = (by[st] || 0) + 1; }
      const n = s.items.length;
      const full = Object.entries(by).map(([k, v]) => `${v} ${STATE_LABEL[k]}`).join(', ');
      s.countNode.textContent = n === 1 ? s.kind : `${by.cached || 0}/${n} cached`;
      s.titleNode.textContent = `${s.name} (${s.kind}): ${n} instance${n === 1 ? '' : 's'}${n > 1 ? ', ' + full : ''}`;
      if (measure) fitHeaders([s]);
    },
    // Running chips show their elapsed time (or their share of epochs done): tick once a second.
    tick() {
      for (const n of nodes.values()) {
        if (n.inst.state !== 'running') continue;
        const meta = n.g.querySelector('.chip-meta');
        if (meta) meta.textContent = metaText(n);
      }
    },
    select(id) {
      clear(picks);
      for (const n of nodes.values()) n.g.classList.remove('selected', 'related');
      const n = nodes.get(id);
      if (!n) return;
      n.g.classList.add('selected');
      const p = L.pos.get(id);
      for (const d of n.inst.deps) {
        const q = L.pos.get(d);
        if (!q) continue;
        nodes.get(d).g.classList.add('related');
        picks.append(el('path', { class: 'edge picked', d: curve(q.x + q.w, q.y + q.h / 2, p.x, p.y + p.h / 2) }));
      }
      for (const m of nodes.values()) {
        if (m.inst.deps.includes(id)) {
          m.g.classList.add('related');
          const q = L.pos.get(m.inst.id);
          picks.append(el('path', { class: 'edge picked', d: curve(p.x + p.w, p.y + p.h / 2, q.x, q.y + q.h / 2) }));
        }
      }
      api.reveal(id);
    },
    // Scroll the graph so that instance `id` is in view (after the panel narrowed it, say).
    reveal(id) {
      const p = L.pos.get(id);
      if (!p) return;
      const k = svg.getBoundingClientRect().width / L.width;
      const box = container;
      const x = p.x * k, y = p.y * k, w = p.w * k, h = p.h * k;
      if (x < box.scrollLeft || x + w > box.scrollLeft + box.clientWidth) box.scrollLeft = Math.max(0, x + w / 2 - box.clientWidth / 2);
      if (y < box.scrollTop || y + h > box.scrollTop + box.clientHeight) box.scrollTop = Math.max(0, y + h / 2 - box.clientHeight / 2);
    },
    nodes,
    fit,
  };
  for (const n of nodes.values()) api.update(n.inst, true);
  // Header texts are measured once, all together, after every chip is drawn (one layout).
  for (const s of L.stages) api.counts(s, false);
  fitHeaders(L.stages);
  return api;
}

function metaText(n) {
  const inst = n.inst;
  if (inst.state === 'running') {
    if (n.fraction != null) return `${Math.round(n.fraction * 100)}%`;
    return inst.started_at ? fmtDur(Math.max(0, Date.now() / 1000 - inst.started_at)) : '';
  }
  return inst.duration_s != null ? fmtDur(inst.duration_s) : '';
}

// Hide a header's right-hand text where the stage name leaves no room for it (long names).
// Measures every header first, then writes, so the browser lays out once.
function fitHeaders(stages) {
  const live = stages.filter((s) => s.nameNode.isConnected);
  const fits = live.map((s) => s.countNode.getComputedTextLength() <= s.w - 3 * PAD - s.nameNode.getComputedTextLength());
  live.forEach((s, k) => { s.countNode.style.visibility = fits[k] ? '' : 'hidden'; });
}

function clip(s, n) { return s.length > n ? s.slice(0, n - 1) + '…' : s; }
