// The dashboard page: pipelines as tabs; views Graph / Sweep / Runs; the instance panel on the
// right. One fetch of the instance list, then server-sent events keep it current (no polling).
// Address: #p=PIPELINE&v=graph|sweep|runs&i=INSTANCE, so any view can be linked to.
import { api, parse, el, clear, STATES, STATE_LABEL } from './util.js';
import { renderDag } from './dag.js';
import * as panel from './panel.js';
import { renderSweep, renderRuns } from './sweep.js';

performance.mark('scripts-loaded');
const S = { pipelines: [], name: null, view: 'graph', data: null, dag: null, es: null, version: null };
const $ = (id) => document.getElementById(id);

function route() {
  const h = new URLSearchParams(location.hash.slice(1));
  return { p: h.get('p'), v: h.get('v') || 'graph', i: h.get('i') };
}

function go(change) {
  const r = { ...route(), ...change };
  const h = new URLSearchParams();
  if (r.p) h.set('p', r.p);
  if (r.v && r.v !== 'graph') h.set('v', r.v);
  if (r.i) h.set('i', r.i);
  location.hash = h.toString();
}

function banner(text, kind = 'error') {
  const b = $('banner');
  clear(b);
  if (text) b.append(el('div', { class: kind }, text));
}

const instancesUrl = (name) => `/api/pipelines/${encodeURIComponent(name)}/instances`;

async function boot() {
  // boot.js asked for both lists before these modules loaded.
  const early = window.__early || {};
  if (early.res) S.early = { name: early.name, data: early.res.then(parse) };
  S.early?.data.catch(() => {});
  try {
    S.pipelines = (await (early.list ? early.list.then(parse) : api('/api/pipelines'))).pipelines;
  } catch (e) {
    banner(`${e.message}${e.hint ? ' — ' + e.hint : ''}`);
    return;
  }
  const nav = $('pipelines');
  for (const p of S.pipelines) {
    nav.append(el('a', { href: `#p=${encodeURIComponent(p.name)}`, 'data-name': p.name }, p.name, ' ', el('span', { class: 'n' }, p.instances)));
  }
  for (const b of document.querySelectorAll('nav.views button')) b.addEventListener('click', () => go({ v: b.dataset.view }));
  document.addEventListener('keydown', (e) => { if (e.key === 'Escape') go({ i: null }); });
  window.addEventListener('hashchange', apply);
  await apply();
}

async function apply() {
  const r = route();
  const name = r.p && S.pipelines.some((p) => p.name === r.p) ? r.p : S.pipelines[0]?.name;
  if (!name) return;
  for (const a of $('pipelines').children) a.classList.toggle('on', a.dataset.name === name);
  if (name !== S.name) await loadPipeline(name);
  if (r.v !== S.view || !S.viewShown) showView(r.v);
  const p = $('panel');
  if (r.i && !panel.isOpen(r.i)) {
    S.dag?.select(r.i);
    panel.open(p, S.name, r.i, (id) => go({ i: id }), () => go({ i: null }));
  } else if (!r.i && !p.hidden) {
    panel.close(p);
    S.dag?.select(null);
  }
  document.body.classList.toggle('with-panel', !!r.i);
  S.dag?.fit();
  if (r.i) S.dag?.reveal(r.i);
}

function showView(v) {
  S.view = v;
  S.viewShown = true;
  for (const b of document.querySelectorAll('nav.views button')) b.classList.toggle('on', b.dataset.view === v);
  for (const name of ['graph', 'sweep', 'runs']) $(`view-${name}`).hidden = name !== v;
  const select = (id) => go({ i: id });
  if (v === 'sweep') renderSweep($('view-sweep'), S.name, select);
  if (v === 'runs') renderRuns($('view-runs'), S.name, select);
}

async function loadPipeline(name) {
  S.name = name;
  S.viewShown = false;
  if (S.es) S.es.close();
  await fetchInstances();
  performance.mark('dag-rendered');
  document.body.dataset.ready = '1';
  connect();
}

async function fetchInstances() {
  let d;
  try {
    const early = S.early && S.early.name === S.name ? S.early.data : null;
    S.early = null;
    d = await (early || api(instancesUrl(S.name)));
  } catch (e) {
    banner(`${e.message}${e.hint ? ' — ' + e.hint : ''}`);
    return;
  }
  performance.mark('data-fetched');
  S.data = d;
  S.version = d.version;
  S.byId = new Map(d.instances.map((i) => [i.id, i]));
  S.dag = renderDag($('view-graph-dag'), d.instances, (id) => go({ i: id }));
  const sel = route().i;
  if (sel) S.dag.select(sel);
  header(d);
  document.body.dataset.version = d.version;
}

function header(d) {
  const c = $('counts');
  clear(c);
  for (const st of STATES) {
    const n = d.counts[st];
    if (n) c.append(el('span', { class: `count st-${st}`, 'data-state': st }, el('b', {}, n), ' ', STATE_LABEL[st]));
  }
  const live = d.live;
  $('runinfo').textContent = live && live.this_pipeline ? `run in progress (${live.user}@${live.host}, ${live.executor})` : live ? 'the cache is in use by a run' : 'no run in progress';
  $('runinfo').className = live ? 'runinfo live' : 'runinfo';
  const problems = [];
  if (d.load_error) problems.push(`The pipeline file has errors; showing its last good version.\n${d.load_error}`);
  for (const p of d.problems || []) problems.push(p);
  banner(problems.join('\n'), 'warn');
}

function connect() {
  const conn = $('conn');
  const es = new EventSource(`/api/pipelines/${encodeURIComponent(S.name)}/events`);
  S.es = es;
  const status = (st, text) => { conn.dataset.state = st; conn.textContent = text; };
  status('connecting', 'connecting…');
  es.onopen = () => status('open', 'live');
  es.onerror = () => status('closed', 'reconnecting…');
  es.addEventListener('hello', async (ev) => {
    status('open', 'live');
    const { version } = JSON.parse(ev.data);
    if (version !== S.version) await refetch();
  });
  es.addEventListener('instances', (ev) => {
    const m = JSON.parse(ev.data);
    for (const inst of m.changed) {
      S.byId.set(inst.id, inst);
      S.dag.update(inst);
      if (panel.isOpen(inst.id)) panel.refresh($('panel'));
    }
    S.data.counts = m.counts;
    S.data.live = m.live;
    S.data.problems = m.problems;
    S.version = m.version;
    document.body.dataset.version = m.version;
    header(S.data);
    if (m.changed.length && S.view !== 'graph') showView(S.view);
  });
  es.addEventListener('progress', (ev) => {
    const m = JSON.parse(ev.data);
    const last = m.epochs.length ? m.epochs[m.epochs.length - 1] : null;
    let fraction = null;
    const t = m.last || last;
    if (t && t.epochs) fraction = ((t.epoch - (t.step != null ? 1 : 0)) + (t.step != null && t.steps ? t.step / t.steps : 0)) / t.epochs;
    S.dag.progress(m.instance, m.text, fraction);
    panel.progress(m.instance, m.text, m.epochs);
  });
  es.addEventListener('reload', () => refetch());
  es.addEventListener('resync', () => refetch());
}

async function refetch() {
  await fetchInstances();
  if (S.view !== 'graph') showView(S.view);
  const i = route().i;
  if (i && panel.isOpen(i)) panel.refresh($('panel'));
}

setInterval(() => S.dag?.tick(), 1000);
boot();
