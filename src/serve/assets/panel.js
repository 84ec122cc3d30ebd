// The instance panel: what it is, why it (re)ran, its log (live while it runs), its training
// curves (a point per finished epoch), inputs and outputs with downloads, params, metrics and
// its history. `open` fetches the detail; `progress` / `refresh` keep an open panel current.
import { api, el, clear, instUrl, fmtDur, fmtTime, fmtBytes, short, pill, enc } from './util.js';
import { lineChart } from './chart.js';

const P = { pipeline: null, id: null, detail: null, log: null, points: new Map(), onSelect: null, timer: null };

function section(title, ...body) {
  return el('section', { class: 'psec' }, el('h3', {}, title), ...body);
}

function kv(rows) {
  return el('dl', { class: 'kv' }, rows.filter(([, v]) => v !== null && v !== undefined && v !== '').flatMap(([k, v]) => [el('dt', {}, k), el('dd', {}, v)]));
}

export async function open(panel, pipeline, id, onSelect, onClose) {
  P.pipeline = pipeline; P.id = id; P.onSelect = onSelect; P.onClose = onClose;
  P.points = new Map();
  panel.hidden = false;
  panel.dataset.id = id;
  clear(panel).append(el('div', { class: 'phead' }, el('h2', {}, id), el('button', { class: 'close', title: 'close', onclick: () => onClose() }, '×')), el('p', { class: 'muted' }, 'loading…'));
  await refresh(panel);
}

export function close(panel) {
  stopLog();
  clearInterval(P.timer);
  P.id = null;
  panel.hidden = true;
  delete panel.dataset.id;
  clear(panel);
}

export function isOpen(id) { return P.id === id; }

export async function refresh(panel) {
  const id = P.id;
  if (!id) return;
  let d;
  try {
    d = await api(instUrl(P.pipeline, id));
  } catch (e) {
    clear(panel).append(el('div', { class: 'phead' }, el('h2', {}, id), el('button', { class: 'close', onclick: () => P.onClose() }, '×')),
      el('p', { class: 'error' }, e.message), e.hint ? el('p', { class: 'muted' }, e.hint) : null);
    return;
  }
  if (P.id !== id) return;
  const prevState = P.detail && P.detail.id === id ? P.detail.state : null;
  P.detail = d;
  P.points = new Map((d.curve?.points || []).map((p) => [p.epoch, p]));
  render(panel, d);
  if (prevState !== d.state || !P.log) startLog(panel, d);
  else attachLog(panel);
}

function render(panel, d) {
  stopLogView();
  clearInterval(P.timer);
  const head = el('div', { class: 'phead' },
    el('div', {}, el('h2', { title: d.id }, d.id), el('div', { class: 'sub' }, pill(d.state), ' ', d.kind, ' · stage ', d.stage)),
    el('button', { class: 'close', title: 'close (Esc)', onclick: () => P.onClose() }, '×'));
  const dur = el('span', { id: 'p-duration' }, d.duration_s != null ? fmtDur(d.duration_s) : '');
  if (d.state === 'running' && d.started_at) {
    const tick = () => { dur.textContent = fmtDur(Date.now() / 1000 - d.started_at) + ' so far'; };
    tick();
    P.timer = setInterval(tick, 1000);
  }
  const body = [
    kv([['device', d.device], ['duration', dur], ['started', d.started_at ? fmtTime(d.started_at) : null], ['finished', fmtTime(d.finished_at)],
      ['defined at', d.location], ['fingerprint', d.key ? el('code', { title: d.key }, short(d.key)) : 'not known yet (an upstream has no result)']]),
  ];
  if (d.error) body.push(el('div', { class: 'errbox' }, el('strong', {}, 'error: '), d.error));
  const why = d.state === 'cached' ? d.why_ran : d.reasons;
  const whyTitle = { cached: 'Why it ran', running: 'Why it runs', failed: 'Why it ran' }[d.state] || 'Why it will run';
  if (why && why.length) body.push(section(whyTitle, el('ul', { class: 'reasons' }, why.map((r) => el('li', {}, r)))));
  if (d.curve) body.push(section('Training', el('div', { id: 'curves' }), d.curve.progress ? el('p', { class: 'muted', id: 'p-progress' }, d.curve.progress) : el('p', { class: 'muted', id: 'p-progress' })));
  body.push(section('Log', el('div', { class: 'loghead' }, el('span', { id: 'log-size', class: 'muted' }), ' ',
    d.log ? el('a', { href: instUrl(P.pipeline, d.id, '/log/raw'), target: '_blank', rel: 'noopener' }, 'full log') : null),
  el('pre', { id: 'log', class: 'log' }, d.log ? '' : 'no log: it never started in this cache')));
  body.push(section('Inputs', inputs(d)));
  body.push(section('Outputs', outputs(d)));
  if (d.command) body.push(section('Command', el('pre', { class: 'code' }, d.command)));
  if (d.params && Object.keys(d.params).length) body.push(section('Params', el('pre', { class: 'code' }, JSON.stringify(d.params, null, 2))));
  if (d.metrics_error) body.push(el('div', { class: 'errbox' }, d.metrics_error));
  if (d.metrics) body.push(el('details', { class: 'psec' }, el('summary', {}, 'metrics.json'), el('pre', { class: 'code' }, JSON.stringify(d.metrics, null, 2))));
  if (d.history.length) body.push(section('History', historyTable(d)));
  clear(panel).append(head, el('div', { class: 'pbody' }, body));
  drawCurves();
}

function inputs(d) {
  if (!d.inputs.length) return el('p', { class: 'muted' }, 'none');
  return el('table', { class: 'io' }, d.inputs.map((i) => el('tr', {},
    el('td', {}, i.name),
    el('td', {}, i.instance ? el('a', { href: '#', onclick: (e) => { e.preventDefault(); P.onSelect(i.instance); } }, `${i.instance}.${i.output}`) : el('code', {}, i.path)),
    el('td', { class: 'muted' }, i.size != null ? fmtBytes(i.size) : ''),
    el('td', { class: 'muted mono', title: i.digest || '' }, short(i.digest)))));
}

function outputs(d) {
  if (!d.outputs.length) return el('p', { class: 'muted' }, 'none');
  return el('table', { class: 'io' }, d.outputs.map((o) => {
    const url = instUrl(P.pipeline, d.id, `/outputs/${enc(o.name)}`);
    let what;
    if (!o.digest) what = el('span', { class: 'muted' }, 'no current result');
    else if (o.dir) {
      const list = el('ul', { class: 'files' });
      what = el('details', { ontoggle: async (e) => { if (e.target.open && !list.childElementCount) fillListing(list, url); } }, el('summary', {}, `${o.files ?? '?'} files`), list);
    } else what = el('a', { href: url, download: o.path.split('/').pop() }, `download (${fmtBytes(o.size)})`);
    return el('tr', {}, el('td', {}, o.name), el('td', {}, el('code', {}, o.path + (o.dir ? '/' : ''))), el('td', {}, what, o.error ? el('div', { class: 'error' }, o.error) : null));
  }));
}

async function fillListing(list, url) {
  try {
    const l = await api(url);
    for (const f of l.files.slice(0, 500)) list.append(el('li', {}, el('a', { href: f.url, download: f.path.split('/').pop() }, f.path), ' ', el('span', { class: 'muted' }, fmtBytes(f.size))));
    if (l.files.length > 500) list.append(el('li', { class: 'muted' }, `… ${l.files.length - 500} more`));
  } catch (e) { list.append(el('li', { class: 'error' }, e.message)); }
}

function historyTable(d) {
  return el('table', { class: 'hist' }, d.history.map((r) => el('tr', {},
    el('td', {}, pill(r.status === 'ok' ? 'cached' : r.status === 'started' ? 'running' : r.status)),
    el('td', {}, r.status), el('td', {}, fmtTime(r.at)), el('td', {}, r.duration_s ? fmtDur(r.duration_s) : ''), el('td', {}, r.device || ''),
    el('td', { class: 'muted' }, r.message ? r.message.split('\n')[0] : ''))));
}

// --- training curves -------------------------------------------------------------------------

function drawCurves() {
  const box = document.getElementById('curves');
  if (!box || !P.detail?.curve) return;
  const pts = [...P.points.values()].sort((a, b) => a.epoch - b.epoch);
  const xy = (f) => pts.filter((p) => typeof f(p) === 'number').map((p) => [p.epoch, f(p)]);
  const sets = new Set(pts.flatMap((p) => Object.keys(p.verification || {})));
  const acc = [...sets].map((s) => ({ label: s, points: xy((p) => p.verification?.[s]?.accuracy != null ? p.verification[s].accuracy * 100 : undefined) }));
  const total = P.detail.curve.epochs;
  const train = P.detail.kind === 'train';
  const lr = xy((p) => p.lr);
  const ex = { xRange: [1, Math.max(total || 1, pts.length)], intX: true };
  const parts = [
    el('p', { class: 'muted', id: 'epochs-done' }, `${pts.length}${total ? ' of ' + total : ''} epochs finished`),
    lineChart({ title: 'loss per epoch', xLabel: 'epoch', yLabel: 'loss', series: [{ label: 'loss', points: xy((p) => p.loss), color: '#0072B2' }], width: 470, height: 190, id: 'chart-loss', ...ex }),
  ];
  if (acc.length) parts.push(lineChart({ title: 'verification accuracy per epoch', xLabel: 'epoch', yLabel: 'accuracy %', series: acc, width: 470, height: 190, id: 'chart-accuracy', ...ex }));
  else if (train) parts.push(el('p', { class: 'muted' }, 'no accuracy curve: this training has no `pairs` input to verify on'));
  if (lr.length || train) parts.push(lineChart({ title: 'learning rate per epoch', xLabel: 'epoch', yLabel: 'lr', series: [{ label: 'lr', points: lr, color: '#009E73' }], width: 470, height: 170, id: 'chart-lr', ...ex }));
  clear(box).append(...parts);
}

// A progress event for instance `id` (from the page's event stream).
export function progress(id, text, epochs) {
  if (P.id !== id) return;
  const t = document.getElementById('p-progress');
  if (t && text) t.textContent = text;
  if (epochs && epochs.length && P.detail && !P.detail.curve) {
    refresh(document.getElementById('panel')); // its first epoch: the detail now has a curve
    return;
  }
  if (epochs && epochs.length && P.detail?.curve) {
    for (const e of epochs) P.points.set(e.epoch, e);
    if (!P.detail.curve.epochs && epochs.length) P.detail.curve.epochs = epochs[epochs.length - 1].epochs;
    drawCurves();
  }
}

// --- log -------------------------------------------------------------------------------------

function stopLog() { if (P.log) { P.log.close(); P.log = null; } }
function stopLogView() { /* the EventSource survives re-renders; its output node is looked up by id */ }

function appendLog(text, size) {
  const pre = document.getElementById('log');
  if (!pre) return;
  const atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
  if (pre.dataset.placeholder) { pre.textContent = ''; delete pre.dataset.placeholder; }
  pre.append(document.createTextNode(text));
  // Keep the panel light: at most ~512 KB of log in the page (the full log is a link away).
  if (pre.textContent.length > 512 * 1024) pre.textContent = pre.textContent.slice(-384 * 1024);
  if (atEnd) pre.scrollTop = pre.scrollHeight;
  const s = document.getElementById('log-size');
  if (s && size != null) s.textContent = `${fmtBytes(size)}`;
}

let logBuffer = '';
let logSize = null;

async function startLog(panel, d) {
  stopLog();
  logBuffer = '';
  logSize = null;
  if (!d.log) return;
  const id = d.id;
  let tail;
  try {
    tail = await api(instUrl(P.pipeline, id, '/log?tail=65536'));
  } catch (e) {
    const pre = document.getElementById('log');
    if (pre) pre.textContent = `${e.message}${e.hint ? '\n' + e.hint : ''}`;
    return;
  }
  if (P.id !== id) return;
  logBuffer = (tail.start > 0 ? `… (${fmtBytes(tail.start)} earlier: see the full log)\n` : '') + tail.text;
  logSize = tail.size;
  attachLog(panel);
  if (d.state !== 'running') return;
  const es = new EventSource(instUrl(P.pipeline, id, `/log/stream?from=${tail.end}`));
  P.log = es;
  es.addEventListener('log', (ev) => {
    const p = JSON.parse(ev.data);
    logBuffer += p.text;
    if (logBuffer.length > 512 * 1024) logBuffer = logBuffer.slice(-384 * 1024);
    logSize = p.size;
    appendLog(p.text, p.size);
  });
  es.addEventListener('end', () => { es.close(); if (P.log === es) P.log = null; });
}

function attachLog() {
  const pre = document.getElementById('log');
  if (!pre || !P.detail?.log) return;
  pre.textContent = logBuffer || (P.detail.state === 'running' ? '(nothing printed yet)' : '(the stage printed nothing)');
  if (logBuffer) delete pre.dataset.placeholder;
  else pre.dataset.placeholder = '1';
  pre.scrollTop = pre.scrollHeight;
  const s = document.getElementById('log-size');
  if (s && logSize != null) s.textContent = fmtBytes(logSize);
}
