// The sweep table (`orchestrator report`'s table, computed by the server with the report code)
// with filters per axis, sorting by any column and links from each value to the instance it
// comes from; below it the report's plots. And the runs of the pipeline.
import { api, el, clear, fmtTime, fmtDur } from './util.js';
import { lineChart, colorOf } from './chart.js';

const V = { sort: null, desc: false, filters: {} };

export async function renderSweep(box, pipeline, onSelect) {
  let r;
  try {
    r = await api(`/api/pipelines/${encodeURIComponent(pipeline)}/report`);
  } catch (e) {
    clear(box).append(el('p', { class: 'error' }, e.message), e.hint ? el('p', { class: 'muted' }, e.hint) : null);
    return;
  }
  const axes = r.axes.length ? r.axes : ['run'];
  const rows = r.rows.map((row, k) => ({ row, t: r.table[k], k }));
  const filters = el('div', { class: 'filters' });
  for (const [a, axis] of axes.entries()) {
    const values = [...new Set(rows.map((x) => x.t.axis_values[a]))];
    if (values.length < 2) continue;
    const sel = el('select', { 'data-axis': axis, onchange: (e) => { V.filters[axis] = e.target.value; draw(); } },
      el('option', { value: '' }, `all ${axis}`), values.map((v) => el('option', { value: v }, v)));
    sel.value = V.filters[axis] || '';
    filters.append(el('label', {}, sel));
  }
  const table = el('table', { id: 'sweep-table', class: 'sweep' });
  const missing = rows.flatMap((x) => x.row.missing);
  const note = el('p', { class: 'muted' }, 'Accuracies and TAR in %; (±x) = difference to the full-data baseline; bold = best of its group. Click a value to open the instance it comes from.',
    missing.length ? ` — = no current result (${missing.length} stage instance${missing.length === 1 ? '' : 's'} not run yet, or stale).` : '');
  const plots = el('div', { class: 'plots' });
  clear(box).append(...[el('div', { class: 'sweep-head' }, el('h2', {}, `Report of ${pipeline}`), filters), table, note, plots, cleaning(r)].filter(Boolean));

  function draw() {
    let shown = rows.filter((x) => axes.every((a, i) => !V.filters[a] || x.t.axis_values[i] === V.filters[a]));
    if (V.sort !== null) {
      const key = (x) => (V.sort < axes.length ? x.t.axis_values[V.sort] : x.row.values[r.columns[V.sort - axes.length].key]);
      shown = [...shown].sort((p, q) => {
        const a = key(p), b = key(q);
        if (a === undefined) return 1;
        if (b === undefined) return -1;
        const c = typeof a === 'number' && typeof b === 'number' ? a - b : String(a).localeCompare(String(b), undefined, { numeric: true });
        return V.desc ? -c : c;
      });
    }
    const head = el('tr', {}, r.head.map((h, i) => el('th', { class: V.sort === i ? (V.desc ? 'sorted desc' : 'sorted') : '', title: 'sort', onclick: () => { V.desc = V.sort === i ? !V.desc : false; V.sort = i; draw(); } }, h)));
    const body = shown.map((x) => el('tr', { 'data-role': x.row.role, class: x.row.role },
      x.t.axis_values.map((v) => el('td', { class: 'axis' }, v)),
      r.columns.map((c, j) => {
        const src = x.row.sources[c.key];
        const text = x.t.text[j];
        const best = x.row.best.includes(c.key);
        const inner = src ? el('a', { href: '#', onclick: (e) => { e.preventDefault(); onSelect(src); }, title: src }, text) : text;
        return el('td', { class: `num${best ? ' best' : ''}${text === '—' ? ' missing' : ''}` }, inner);
      })));
    clear(table).append(el('thead', {}, head), el('tbody', {}, body));
  }
  draw();
  drawPlots(plots, r);
}

function drawPlots(box, r) {
  const methodAxis = r.axes[0];
  const byMethod = (key) => {
    const m = new Map();
    for (const row of r.rows) {
      const x = row.values.kept_percent, y = row.values[key];
      if (x === undefined || y === undefined) continue;
      const name = row.role === 'baseline' ? 'full data' : (methodAxis ? row.cell[methodAxis] : r.pipeline);
      if (!m.has(name)) m.set(name, []);
      m.get(name).push([x, y]);
    }
    return [...m].map(([label, points]) => ({ label, points: points.sort((a, b) => a[0] - b[0]) }));
  };
  const cols = r.columns.filter((c) => c.key === 'verify.avg' || c.key === 'ijbc.1e-04');
  if (!cols.some((c) => c.key === 'verify.avg')) {
    const first = r.columns.find((c) => c.key.startsWith('verify.'));
    if (first) cols.unshift(first);
  }
  for (const c of cols) {
    const series = byMethod(c.key);
    if (series.some((s) => s.points.length)) box.append(lineChart({ title: `${c.title} vs kept ratio`, xLabel: 'kept %', yLabel: `${c.title} %`, series, width: 480, height: 300 }));
  }
  // ROC per cell: the method's colour (as in the other plots), one dash pattern per other value.
  const dashes = ['', '7 3', '2 3', '10 3 2 3'];
  const others = r.axes.slice(1);
  const valueIndex = new Map();
  const rocs = r.table.map((t, k) => {
    const row = r.rows[k];
    const method = row.role === 'baseline' ? 'full data' : (methodAxis ? row.cell[methodAxis] : r.pipeline);
    const rest = others.map((a) => row.cell[a]).join(' ');
    if (!valueIndex.has(rest)) valueIndex.set(rest, valueIndex.size);
    return { label: t.label, points: t.roc || [], color: colorOf(method), dash: row.role === 'baseline' ? null : dashes[valueIndex.get(rest) % dashes.length] || null };
  }).filter((s) => s.points.length);
  if (rocs.length) box.append(lineChart({ title: 'IJB-C 1:1 ROC per cell', xLabel: 'FAR', yLabel: 'TAR', series: rocs, logX: true, width: 520, height: 300 }));
}

function cleaning(r) {
  if (!r.cleaning.length) return null;
  const pct = (v) => (typeof v === 'number' ? `${(v * 100).toFixed(1)} %` : '—');
  return el('div', {}, el('h3', {}, 'Cleaning against the injected label noise'),
    el('table', { class: 'sweep small' }, el('tr', {}, ['stage', 'flagged', 'mislabeled', 'precision', 'recall'].map((h) => el('th', {}, h))),
      r.cleaning.map((c) => el('tr', {}, el('td', {}, c.stage), el('td', { class: 'num' }, c.flagged ?? '—'), el('td', { class: 'num' }, c.mislabeled ?? '—'), el('td', { class: 'num' }, pct(c.precision)), el('td', { class: 'num' }, pct(c.recall))))));
}

export async function renderRuns(box, pipeline, onSelect) {
  let r;
  try {
    r = await api(`/api/pipelines/${encodeURIComponent(pipeline)}/runs`);
  } catch (e) {
    clear(box).append(el('p', { class: 'error' }, e.message));
    return;
  }
  if (!r.runs.length) {
    clear(box).append(el('p', { class: 'muted' }, `No runs of ${pipeline} in this cache yet.`));
    return;
  }
  const table = el('table', { class: 'runs', id: 'runs-table' },
    el('tr', {}, ['', 'started', 'duration', 'ran', 'cached', 'failed', 'who / where', 'command'].map((h) => el('th', {}, h))));
  for (const run of r.runs) {
    const s = run.summary;
    const dur = run.end ? fmtDur(run.end - run.start) : run.outcome === 'running' ? 'running' : '';
    const c = run.counts || {};
    const details = el('tr', { class: 'run-records', hidden: true }, el('td', { colspan: 8 }, records(run, pipeline, onSelect)));
    const outcome = { ok: 'cached', running: 'running', failed: 'failed', killed: 'interrupted', interrupted: 'interrupted', error: 'failed', unlogged: 'never_run' }[run.outcome];
    table.append(el('tr', { class: 'run', 'data-outcome': run.outcome, onclick: () => { details.hidden = !details.hidden; } },
      el('td', {}, el('span', { class: `pill st-${outcome}` }, run.outcome)),
      el('td', {}, fmtTime(run.start)), el('td', {}, dur),
      el('td', { class: 'num' }, s ? s.ran : (c.ok || 0)), el('td', { class: 'num' }, s ? s.cached : (c.cached || 0)), el('td', { class: 'num' }, s ? s.failed : (c.failed || 0)),
      el('td', {}, run.user ? `${run.user}@${run.host} (${run.executor})` : ''),
      el('td', { class: 'mono muted cmd', title: run.command || '' }, run.command || 'records written before run logs existed')), details);
  }
  clear(box).append(el('h2', {}, `Runs of ${pipeline}`), el('p', { class: 'muted' }, 'Click a run for what each stage instance did in it.'), table);
}

// What each instance did in a run: its last record in the run (ran, cache hit, failed, or
// started and never finished), with the error and the log tail of a failure.
function records(run, pipeline, onSelect) {
  const box = el('div', {});
  if (run.summary?.error) box.append(el('div', { class: 'errbox' }, run.summary.error));
  const last = new Map();
  for (const rec of run.records) last.set(rec.instance, rec);
  const what = { ok: ['cached', 'ran'], cached: ['cached', 'cache hit'], failed: ['failed', 'failed'] };
  const t = el('table', { class: 'hist' });
  for (const rec of [...last.values()].sort((a, b) => a.at - b.at)) {
    const [st, label] = what[rec.status] || (run.outcome === 'running' ? ['running', 'running'] : ['interrupted', 'interrupted']);
    t.append(el('tr', {},
      el('td', {}, el('span', { class: `pill st-${st}` }, label)),
      el('td', {}, el('a', { href: '#', onclick: (e) => { e.preventDefault(); onSelect(rec.instance); } }, rec.instance)),
      el('td', {}, fmtTime(rec.at)), el('td', {}, rec.duration_s ? fmtDur(rec.duration_s) : ''), el('td', {}, rec.device || '')));
    if (rec.status === 'failed') {
      const tail = el('pre', { class: 'log small' }, 'loading the log tail…');
      t.append(el('tr', {}, el('td', {}), el('td', { colspan: 4 }, el('div', { class: 'errbox' }, rec.message || 'failed'), tail)));
      if (rec.run) {
        api(`/api/pipelines/${encodeURIComponent(pipeline)}/instances/${encodeURIComponent(rec.instance)}/log?tail=4096&run=${encodeURIComponent(rec.run)}`)
          .then((p) => { tail.textContent = p.text || '(empty log)'; })
          .catch((e) => { tail.textContent = e.message; });
      } else tail.textContent = '(no log recorded)';
    }
  }
  box.append(t);
  return box;
}
