// The cluster list: filters (label selector, health, connectivity, version)
// kept in the address, and keyset pages.

import { get, query, Problem } from '../api.js';
import { h, fill, table, ago, labels, problemBox, clusterCells, pager } from '../dom.js';
import { fillReleases } from './cluster.js';

const HEALTH = ['', 'Healthy', 'Progressing', 'Degraded', 'Unhealthy', 'Unknown', 'Degraded,Unhealthy'];
const CONNECTIVITY = ['', 'Connected', 'Stale', 'Disconnected', 'Stale,Disconnected'];
const FILTERS = ['labelSelector', 'health', 'connectivity', 'version'];

function select(name, values, current) {
  return h(
    'select',
    { name, id: `filter-${name}` },
    values.map((v) => h('option', { value: v, selected: v === current }, v ? v.replace(',', ' or ') : 'any')),
  );
}

export function componentSummary(c) {
  const comps = c.status.components;
  if (!comps.length) return h('span', { class: 'muted' }, '—');
  const ready = comps.filter((x) => x.ready).length;
  return h('span', { class: ready === comps.length ? '' : 'error' }, `${ready}/${comps.length} ready`);
}

export function view({ search, navigate }) {
  const filters = Object.fromEntries(FILTERS.map((k) => [k, search.get(k) || '']));
  const limit = search.get('limit') || '25';

  const versions = h('datalist', { id: 'known-versions' });
  const form = h(
    'form',
    { class: 'filters', id: 'cluster-filters' },
    h('label', { class: 'field' }, 'Label selector', h('input', { name: 'labelSelector', value: filters.labelSelector, placeholder: 'env=prod,region in (eu,us)', size: 30 })),
    h('label', { class: 'field' }, 'Health', select('health', HEALTH, filters.health)),
    h('label', { class: 'field' }, 'Connectivity', select('connectivity', CONNECTIVITY, filters.connectivity)),
    h('label', { class: 'field' }, 'Desired version', h('input', { name: 'version', value: filters.version, list: 'known-versions', placeholder: '1.28.2', size: 10 })),
    h('label', { class: 'field' }, 'Per page', select('limit', ['10', '25', '50', '100'], limit)),
    h('button', { type: 'submit' }, 'Apply'),
    h('button', { type: 'button', class: 'secondary', onclick: () => navigate('/ui/clusters') }, 'Clear'),
    versions,
  );
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const data = new FormData(form);
    const params = {};
    for (const k of [...FILTERS, 'limit']) params[k] = String(data.get(k) || '').trim();
    navigate(`/ui/clusters${query(params)}`);
  });

  const problem = h('div', { id: 'list-problem' });
  const results = h('div', { id: 'cluster-list' }, h('p', { class: 'loading' }, 'Loading…'));
  const pages = pager(() => refresh());

  async function refresh() {
    let page;
    try {
      page = await get(`/v1/clusters${query({ ...filters, limit, cursor: pages.cursor })}`);
    } catch (e) {
      if (!(e instanceof Problem) || e.status !== 400) throw e;
      fill(problem, problemBox(e));
      fill(results);
      return;
    }
    fill(problem);
    pages.update(page.nextCursor);
    const filtered = FILTERS.some((k) => filters[k]);
    fill(
      results,
      table(
        ['Name', 'Health', 'Connectivity', 'Desired', 'Components', 'Labels', 'Heartbeat'],
        page.items.map((c) =>
          h(
            'tr',
            { dataset: { cluster: c.name } },
            clusterCells(c),
            h('td', {}, componentSummary(c)),
            h('td', {}, labels(c.labels)),
            h('td', { class: 'muted' }, ago(c.status.lastHeartbeatAt)),
          ),
        ),
        filtered ? 'No cluster matches these filters.' : 'No clusters yet. Register one with PUT /v1/clusters/{name}.',
      ),
    );
  }

  fillReleases(versions);

  const root = h(
    'div',
    { id: 'clusters' },
    h('div', { class: 'page-head' }, h('h1', {}, 'Clusters')),
    h('section', { class: 'panel' }, form),
    h('section', { class: 'panel' }, problem, results, pages.root),
  );
  return { title: 'Clusters', root, refresh };
}
