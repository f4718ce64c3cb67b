// Building the page. Data only ever reaches the DOM as text nodes or
// attribute values (never as HTML), so nothing an API answer holds can run.

const SVG_NS = 'http://www.w3.org/2000/svg';

function setProps(el, props) {
  for (const [k, v] of Object.entries(props || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') {
      el.setAttribute('class', Array.isArray(v) ? v.filter(Boolean).join(' ') : v);
    } else if (k === 'dataset') {
      for (const [dk, dv] of Object.entries(v)) el.dataset[dk] = String(dv);
    } else if (k.startsWith('on') && typeof v === 'function') {
      el.addEventListener(k.slice(2), v);
    } else if (k === 'href') {
      // Only links into this origin: a value from data can never be `javascript:`.
      const href = String(v);
      el.setAttribute('href', href.startsWith('/') || href.startsWith('#') ? href : '#');
    } else if (k === 'value' || k === 'checked' || k === 'disabled' || k === 'selected') {
      el[k] = v;
    } else {
      el.setAttribute(k, v === true ? '' : String(v));
    }
  }
}

function appendAll(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
}

// An HTML element: h('td', {class: 'num'}, 'text', child, ...).
export function h(tag, props, ...children) {
  const el = document.createElement(tag);
  setProps(el, props);
  appendAll(el, children);
  return el;
}

// An SVG element.
export function s(tag, props, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  setProps(el, props);
  appendAll(el, children);
  return el;
}

// Replaces an element's children.
export function fill(el, ...children) {
  el.replaceChildren();
  appendAll(el, children);
  return el;
}

export function badge(state, text = state) {
  return h('span', { class: ['badge', state], dataset: { state } }, text);
}

export function readyBadge(ready) {
  return ready ? badge('ready', 'Ready') : h('span', { class: 'badge notready', dataset: { state: 'NotReady' } }, 'Not ready');
}

export function empty(text) {
  return h('p', { class: 'empty' }, text);
}

export function problemBox(problem) {
  if (!problem) return null;
  const where = problem.status ? ` (HTTP ${problem.status})` : '';
  return h('div', { class: 'problem', role: 'alert' }, `${problem.detail}${where}`);
}

export function table(headers, rows, emptyText) {
  if (!rows.length) return empty(emptyText);
  return h(
    'table',
    {},
    h('thead', {}, h('tr', {}, headers.map((x) => (typeof x === 'string' ? h('th', {}, x) : x)))),
    h('tbody', {}, rows),
  );
}

export function labels(map) {
  const entries = Object.entries(map || {});
  if (!entries.length) return h('span', { class: 'muted' }, '—');
  return entries.map(([k, v]) => h('span', { class: 'label-chip' }, `${k}=${v}`));
}

export function when(at) {
  if (!at) return '—';
  const d = new Date(at);
  return d.toLocaleString();
}

export function ago(at) {
  if (!at) return 'never';
  const secs = Math.round((Date.now() - new Date(at).getTime()) / 1000);
  if (secs < 0) return 'just now';
  if (secs < 60) return `${secs}s ago`;
  if (secs < 3600) return `${Math.floor(secs / 60)}m ago`;
  if (secs < 86400) return `${Math.floor(secs / 3600)}h ago`;
  return `${Math.floor(secs / 86400)}d ago`;
}

export function seconds(x) {
  if (x === null || x === undefined) return '—';
  if (x < 1) return `${Math.round(x * 1000)} ms`;
  if (x < 120) return `${x.toFixed(1)} s`;
  return `${(x / 60).toFixed(1)} min`;
}

// A link that the page follows without reloading.
export function link(path, text, props = {}) {
  return h('a', { ...props, href: path, dataset: { link: '', ...(props.dataset || {}) } }, text);
}

export function clusterPath(name) {
  return `/ui/clusters/${encodeURIComponent(name)}`;
}

export function section(title, ...children) {
  return h('section', { class: 'panel' }, h('h2', {}, title), children);
}

// Copies text, with the Clipboard API where the page may, else by selection.
export async function copy(text) {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    const area = h('textarea', { readonly: true }, text);
    document.body.append(area);
    area.select();
    const done = document.execCommand('copy');
    area.remove();
    return done;
  }
}

// The cells every cluster table starts with: the name (a link to `path`),
// health, connectivity and desired version.
export function clusterCells(c, path = clusterPath(c.name)) {
  return [
    h('td', {}, link(path, c.name)),
    h('td', {}, badge(c.status.health)),
    h('td', {}, badge(c.status.connectivity)),
    h('td', {}, c.desiredVersion),
  ];
}

// Keyset paging over `nextCursor`: Previous / Next buttons that call `load`
// (which reads `cursor` and reports the page's `nextCursor` to `update`).
export function pager(load) {
  const before = [];
  let cursor = '';
  let next = null;
  const prev = h('button', { type: 'button', class: 'secondary', disabled: true }, '← Previous');
  const forward = h('button', { type: 'button', class: 'secondary', disabled: true }, 'Next →');
  const info = h('span', { class: 'page-info' });
  prev.addEventListener('click', () => {
    cursor = before.pop() ?? '';
    load();
  });
  forward.addEventListener('click', () => {
    if (!next) return;
    before.push(cursor);
    cursor = next;
    load();
  });
  return {
    root: h('div', { class: 'pager' }, prev, forward, info),
    get cursor() {
      return cursor;
    },
    reset() {
      before.length = 0;
      cursor = '';
    },
    update(nextCursor) {
      next = nextCursor;
      prev.disabled = before.length === 0;
      forward.disabled = !next;
      fill(info, before.length || next ? `Page ${before.length + 1}` : '');
    },
  };
}

// `1 cluster`, `2 clusters`.
export function plural(n, word) {
  return `${n} ${word}${n === 1 ? '' : 's'}`;
}
