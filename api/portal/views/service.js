// The SRE's service-wide view (tokens with `sre` in the operator tenant):
// every tenant, the triage list worst first, the SLIs; and one cluster of
// any tenant, read-only.

import { get, query, enc, Problem } from '../api.js';
import { h, fill, badge, table, empty, link, ago, seconds, problemBox, clusterCells, pager } from '../dom.js';
import { summaryCards, summaryCharts, failingList } from './overview.js';
import { componentSummary } from './clusters.js';
import { specList, componentsTable, conditionsList, timeline, eventsTable } from './cluster.js';

const WINDOWS = ['15m', '1h', '6h', '24h', '7d'];
const SORTS = [
  ['health', 'worst health first'],
  ['heartbeatAge', 'oldest heartbeat first'],
  ['name', 'tenant and name'],
];

function opsClusterPath(tenant, name) {
  return `/ui/service/clusters/${encodeURIComponent(tenant)}/${encodeURIComponent(name)}`;
}

function percentiles(label, p, id) {
  return h(
    'tr',
    { dataset: { sli: id } },
    h('td', {}, label),
    h('td', { class: 'num' }, seconds(p.p50)),
    h('td', { class: 'num' }, seconds(p.p90)),
    h('td', { class: 'num' }, seconds(p.p99)),
    h('td', { class: 'num' }, String(p.count)),
  );
}

function healthCounts(hc) {
  return Object.entries(hc)
    .filter(([, n]) => n)
    .map(([k, n]) => [badge(k, `${k} ${n}`), ' ']);
}

function triageForm(onApply) {
  const input = (name, placeholder, size) => h('input', { name, placeholder, size });
  const select = (name, options) => h('select', { name }, options.map(([v, t]) => h('option', { value: v }, t)));
  const form = h(
    'form',
    { class: 'filters', id: 'triage-filters' },
    h('label', { class: 'field' }, 'Tenant', input('tenant', 'any', 12)),
    h('label', { class: 'field' }, 'Health', select('health', [['', 'any'], ['Unhealthy,Degraded', 'Unhealthy or Degraded'], ['Unhealthy', 'Unhealthy'], ['Degraded', 'Degraded'], ['Progressing', 'Progressing'], ['Unknown', 'Unknown'], ['Healthy', 'Healthy']])),
    h('label', { class: 'field' }, 'Connectivity', select('connectivity', [['', 'any'], ['Stale,Disconnected', 'Stale or Disconnected'], ['Connected', 'Connected'], ['Stale', 'Stale'], ['Disconnected', 'Disconnected']])),
    h('label', { class: 'field' }, 'Desired version', input('version', '1.28.2', 9)),
    h('label', { class: 'field' }, 'Silent for', input('staleFor', 'e.g. 10m', 8)),
    h('label', { class: 'field' }, 'Order', select('sort', SORTS)),
    h('button', { type: 'submit' }, 'Apply'),
  );
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const data = new FormData(form);
    onApply(Object.fromEntries(['tenant', 'health', 'connectivity', 'version', 'staleFor', 'sort'].map((k) => [k, String(data.get(k) || '').trim()])));
  });
  return form;
}

export function view() {
  let filters = { sort: 'health' };
  let sliWindow = '1h';

  const cards = h('div', { class: 'cards', id: 'ops-cards' });
  const charts = h('div', { class: 'grid three' });
  const tenants = h('div', { id: 'tenants' });
  const failing = h('div');
  const triageProblem = h('div');
  const triage = h('div', { id: 'triage' }, h('p', { class: 'loading' }, 'Loading…'));
  const sli = h('div', { id: 'sli' });
  const pages = pager(() => loadTriage());
  const windowSelect = h('select', { id: 'sli-window' }, WINDOWS.map((w) => h('option', { value: w, selected: w === sliWindow }, w)));

  async function loadTriage() {
    try {
      const page = await get(`/v1/ops/clusters${query({ ...filters, limit: 25, cursor: pages.cursor })}`);
      fill(triageProblem);
      pages.update(page.nextCursor);
      fill(
        triage,
        table(
          ['Tenant', 'Cluster', 'Health', 'Connectivity', 'Desired', 'Components', 'Heartbeat'],
          page.items.map((c) =>
            h(
              'tr',
              { dataset: { tenant: c.tenant, cluster: c.name } },
              h('td', {}, c.tenant),
              clusterCells(c, opsClusterPath(c.tenant, c.name)),
              h('td', {}, componentSummary(c)),
              h('td', { class: 'muted' }, ago(c.status.lastHeartbeatAt)),
            ),
          ),
          'No cluster matches.',
        ),
      );
    } catch (e) {
      if (!(e instanceof Problem) || e.status !== 400) throw e;
      fill(triageProblem, problemBox(e));
    }
  }

  async function refresh() {
    const [s, x] = await Promise.all([get('/v1/ops/fleet/summary'), get(`/v1/ops/sli${query({ window: sliWindow })}`), loadTriage()]);
    fill(cards, summaryCards(s), h('div', { class: 'card', dataset: { card: 'tenants' } }, h('div', { class: 'value' }, String(s.tenants.length)), h('div', { class: 'label' }, 'Tenants')));
    fill(charts, summaryCharts(s));
    fill(
      tenants,
      table(
        ['Tenant', 'Clusters', 'Health', 'Connectivity'],
        s.tenants.map((t) =>
          h(
            'tr',
            { dataset: { tenant: t.tenant } },
            h('td', {}, t.tenant),
            h('td', { class: 'num' }, String(t.clusters)),
            h('td', {}, healthCounts(t.byHealth)),
            h('td', {}, healthCounts(t.byConnectivity)),
          ),
        ),
        'No tenant has registered a cluster yet.',
      ),
    );
    fill(failing, failingList(s.failingComponents));
    fill(
      sli,
      h(
        'table',
        {},
        h('thead', {}, h('tr', {}, h('th', {}, 'Indicator'), h('th', { class: 'num' }, 'p50'), h('th', { class: 'num' }, 'p90'), h('th', { class: 'num' }, 'p99'), h('th', { class: 'num' }, 'samples'))),
        h('tbody', {}, percentiles('Heartbeat age (connected agents)', x.heartbeatAgeSeconds, 'heartbeat'), percentiles(`Desired → observed convergence (last ${sliWindow})`, x.convergenceSeconds, 'convergence')),
      ),
      h('h3', {}, 'Agent versions in the field'),
      table(['Agent version', 'Clusters'], x.agentVersions.map((a) => h('tr', {}, h('td', {}, a.version), h('td', { class: 'num' }, String(a.clusters)))), 'No agent has reported yet.'),
      h('h3', {}, 'API requests (this api process)'),
      table(
        ['Method', 'Route', 'Requests', 'Per second', '4xx', '5xx', '5xx rate'],
        x.requests.slice(0, 15).map((r) =>
          h(
            'tr',
            {},
            h('td', {}, r.method),
            h('td', {}, h('code', {}, r.route)),
            h('td', { class: 'num' }, String(r.requests)),
            h('td', { class: 'num' }, r.requestsPerSecond.toFixed(2)),
            h('td', { class: 'num' }, String(r.clientErrors)),
            h('td', { class: 'num' }, String(r.serverErrors)),
            h('td', { class: ['num', r.serverErrorRate > 0.01 ? 'error' : ''] }, `${(r.serverErrorRate * 100).toFixed(1)}%`),
          ),
        ),
        'No requests counted yet.',
      ),
    );
  }

  const form = triageForm((f) => {
    filters = f;
    pages.reset();
    loadTriage();
  });
  windowSelect.addEventListener('change', () => {
    sliWindow = windowSelect.value;
    refresh();
  });

  const root = h(
    'div',
    { id: 'service' },
    h('div', { class: 'page-head' }, h('div', {}, h('h1', {}, 'The service'), h('div', { class: 'sub' }, 'Every tenant\u2019s clusters, as the SRE sees them'))),
    cards,
    charts,
    h('section', { class: 'panel' }, h('h2', {}, 'Triage'), form, triageProblem, triage, pages.root),
    h('div', { class: 'grid two' }, h('section', { class: 'panel' }, h('h2', {}, 'Tenants'), tenants), h('section', { class: 'panel' }, h('h2', {}, 'Failing components'), failing)),
    h('section', { class: 'panel' }, h('div', { class: 'page-head' }, h('h2', {}, 'Service level indicators'), h('label', { class: 'field' }, 'Window', windowSelect)), sli),
  );
  return { title: 'Service', root, refresh };
}

export function cluster(ctx, tenant, name) {
  const body = h('div', {}, h('p', { class: 'loading' }, 'Loading…'));
  async function refresh() {
    let d;
    try {
      d = await get(`/v1/ops/clusters/${enc(tenant)}/${enc(name)}`);
    } catch (e) {
      if (!(e instanceof Problem) || e.status !== 404) throw e;
      fill(body, h('div', { class: 'panel' }, empty(`Tenant "${tenant}" has no cluster named "${name}".`)));
      return;
    }
    const c = d.cluster;
    fill(
      body,
      h('div', { class: 'page-head' }, h('div', {}, h('h1', {}, `${tenant} / ${name} `, badge(c.status.health), ' ', badge(c.status.connectivity)), h('div', { class: 'sub' }, `Desired ${c.desiredVersion} · generation ${c.generation} · read-only: the ops routes change nothing`))),
      h('div', { class: 'grid two' }, h('section', { class: 'panel' }, h('h2', {}, 'Spec'), specList(c)), h('section', { class: 'panel' }, h('h2', {}, 'Status history'), timeline(d.history))),
      h('section', { class: 'panel' }, h('h2', {}, 'Components'), componentsTable(c), conditionsList(c.status.conditions)),
      h('section', { class: 'panel' }, h('h2', {}, 'Events'), eventsTable(d.events)),
      h('p', {}, link('/ui/service', '← The service')),
    );
  }
  return { title: `${tenant}/${name}`, root: h('div', { id: 'ops-cluster' }, body), refresh };
}
