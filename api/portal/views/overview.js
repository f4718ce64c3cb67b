// The tenant's fleet at a glance: the summary as cards and charts, the
// clusters that need attention first, then rollouts and the rest.

import { get, claims } from '../api.js';
import { h, fill, badge, table, empty, link, clusterPath, ago, when, labels, clusterCells, plural } from '../dom.js';
import { donut, stacked, versionBars, progress } from '../charts.js';

const ATTENTION_LIMIT = 20;

function card(label, value, kind, key) {
  return h('div', { class: ['card', kind], dataset: { card: key } }, h('div', { class: 'value' }, String(value)), h('div', { class: 'label' }, label));
}

// Why a cluster is on the attention list.
function reasons(c) {
  const out = [];
  const st = c.status;
  if (st.health === 'Unhealthy' || st.health === 'Degraded') {
    const bad = st.components.filter((x) => !x.ready);
    if (bad.length) {
      for (const x of bad) out.push(`${x.name}: ${x.message || 'not ready'}`);
    } else {
      const cond = st.conditions.find((x) => x.status === 'False' && x.message);
      out.push(cond ? cond.message : st.health);
    }
  }
  if (st.connectivity !== 'Connected') {
    out.push(`${st.connectivity}: last heartbeat ${ago(st.lastHeartbeatAt)}`);
  }
  if (st.observedGeneration !== c.generation) {
    out.push(
      st.observedGeneration === null
        ? 'no agent has reported yet'
        : `generation ${c.generation} not yet observed (agent on ${st.observedGeneration})`,
    );
  }
  return out;
}

function attentionRows(lists, lagging) {
  const seen = new Map();
  for (const c of lists.flat()) if (!seen.has(c.name)) seen.set(c.name, c);
  const rows = [...seen.values()].map((c) =>
    h(
      'tr',
      { dataset: { cluster: c.name } },
      clusterCells(c),
      h('td', { class: 'wrap' }, reasons(c).map((r) => h('div', {}, r))),
    ),
  );
  for (const l of lagging) {
    if (seen.has(l.name)) continue;
    seen.set(l.name, l);
    rows.push(
      h(
        'tr',
        { dataset: { cluster: l.name } },
        h('td', {}, link(clusterPath(l.name), l.name)),
        h('td', { colspan: 3, class: 'muted' }, 'lagging'),
        h(
          'td',
          {},
          l.observedGeneration === null
            ? `no agent has reported generation ${l.generation} (since ${ago(l.since)})`
            : `generation ${l.generation} not observed (agent on ${l.observedGeneration}) since ${ago(l.since)}`,
        ),
      ),
    );
  }
  return rows;
}

function rolloutRows(rollouts) {
  return rollouts.map((r) =>
    h(
      'tr',
      { dataset: { rollout: r.id } },
      h('td', {}, link(`/ui/rollouts/${encodeURIComponent(r.id)}`, r.name)),
      h('td', {}, r.targetVersion),
      h('td', {}, badge(r.state)),
      h('td', {}, progress(r.counts), h('span', { class: 'muted' }, `${r.counts.succeeded} of ${r.counts.total} done`)),
    ),
  );
}

function clusterRows(items) {
  return items.map((c) =>
    h(
      'tr',
      { dataset: { cluster: c.name } },
      clusterCells(c),
      h('td', {}, labels(c.labels)),
      h('td', { class: 'muted' }, ago(c.status.lastHeartbeatAt)),
    ),
  );
}

// The summary's figures as cards (tenant and service-wide views).
export function summaryCards(s) {
  const hb = s.byHealth;
  const cb = s.byConnectivity;
  const active = s.rollouts.filter((r) => ['Running', 'WaitingForApproval', 'Paused'].includes(r.state));
  const pastSupport = s.endOfSupport.filter((e) => e.past).reduce((a, e) => a + e.clusters, 0);
  return [
    card('Clusters', s.clusters, '', 'clusters'),
    card('Healthy', hb.Healthy, hb.Healthy === s.clusters && s.clusters ? 'good' : '', 'healthy'),
    card('Degraded or unhealthy', hb.Degraded + hb.Unhealthy, hb.Unhealthy ? 'bad' : hb.Degraded ? 'warn' : '', 'unhealthy'),
    card('Stale or disconnected', cb.Stale + cb.Disconnected, cb.Disconnected ? 'bad' : cb.Stale ? 'warn' : '', 'disconnected'),
    card('Lagging', s.laggingTotal, s.laggingTotal ? 'warn' : '', 'lagging'),
    card('Rollouts in flight', active.length, '', 'rollouts'),
    card('Past end of support', pastSupport, pastSupport ? 'warn' : '', 'eos'),
  ];
}

// Health, connectivity and versions as charts.
export function summaryCharts(s) {
  return [
    h('section', { class: 'panel' }, h('h2', {}, 'Health'), donut(s.byHealth, 'health')),
    h('section', { class: 'panel' }, h('h2', {}, 'Connectivity'), stacked(s.byConnectivity, 'connectivity')),
    h('section', { class: 'panel' }, h('h2', {}, 'Versions'), versionBars(s.versions, 'versions')),
  ];
}

// Failing components with their most frequent messages.
export function failingList(items) {
  if (!items.length) return empty('No component is failing.');
  return items.map((f) =>
    h(
      'div',
      { dataset: { component: f.component } },
      h('h3', {}, `${f.component} — ${plural(f.clusters, 'cluster')}`),
      h('ul', {}, f.topMessages.map((m) => h('li', {}, `${m.message} `, h('span', { class: 'muted' }, `×${m.count}`)))),
    ),
  );
}

// Versions with an end-of-support date and how many clusters want them.
function supportTable(s) {
  return [
    table(
      ['Version', 'End of support', 'Clusters'],
      s.endOfSupport.map((e) =>
        h('tr', {}, h('td', {}, e.version), h('td', {}, e.past ? badge('Degraded', `past: ${e.endOfSupport}`) : e.endOfSupport), h('td', { class: 'num' }, String(e.clusters))),
      ),
      'No cluster runs a version with an end-of-support date.',
    ),
    h('p', { class: 'muted' }, `Figures as of ${when(s.generatedAt)}.`),
  ];
}

export function view() {
  const cards = h('div', { class: 'cards', id: 'summary-cards' });
  const charts = h('div', { class: 'grid three', id: 'charts' });
  const attention = h('div', { id: 'attention' }, h('p', { class: 'loading' }, 'Loading…'));
  const failing = h('div', { id: 'failing' });
  const rollouts = h('div', { id: 'overview-rollouts' });
  const support = h('div', { id: 'end-of-support' });
  const all = h('div', { id: 'overview-clusters' });
  const root = h(
    'div',
    { id: 'overview' },
    h('div', { class: 'page-head' }, h('div', {}, h('h1', {}, 'Fleet overview'), h('div', { class: 'sub' }, `Tenant ${claims()?.tid}`))),
    cards,
    charts,
    h('section', { class: 'panel' }, h('h2', {}, 'Needs attention'), attention),
    h('div', { class: 'grid two' }, h('section', { class: 'panel' }, h('h2', {}, 'Failing components'), failing), h('section', { class: 'panel' }, h('h2', {}, 'Rollouts in flight'), rollouts)),
    h('div', { class: 'grid two' }, h('section', { class: 'panel' }, h('h2', {}, 'Clusters'), all), h('section', { class: 'panel' }, h('h2', {}, 'End of support'), support)),
  );

  async function refresh() {
    const [s, bad, gone, first] = await Promise.all([
      get('/v1/fleet/summary'),
      get(`/v1/clusters?health=Unhealthy,Degraded&limit=${ATTENTION_LIMIT}`),
      get(`/v1/clusters?connectivity=Disconnected,Stale&limit=${ATTENTION_LIMIT}`),
      get('/v1/clusters?limit=10'),
    ]);
    fill(cards, summaryCards(s));
    fill(charts, summaryCharts(s));
    const rows = attentionRows([bad.items, gone.items], s.lagging);
    fill(
      attention,
      s.clusters === 0
        ? empty('No clusters yet. Register one with PUT /v1/clusters/{name} (see the API docs), then install its agent from its page.')
        : table(['Cluster', 'Health', 'Connectivity', 'Desired', 'Why'], rows, 'Nothing needs attention: every cluster is healthy, connected and up to date.'),
      bad.nextCursor || gone.nextCursor || s.laggingTotal > s.lagging.length
        ? h('p', {}, link('/ui/clusters?health=Unhealthy,Degraded', 'More in the cluster list…'))
        : null,
    );
    fill(failing, failingList(s.failingComponents));
    fill(rollouts, table(['Rollout', 'Target', 'State', 'Progress'], rolloutRows(s.rollouts), 'No rollouts. Start one with POST /v1/rollouts.'), h('p', {}, link('/ui/rollouts', 'All rollouts…')));
    fill(
      all,
      table(['Name', 'Health', 'Connectivity', 'Desired', 'Labels', 'Heartbeat'], clusterRows(first.items), 'No clusters yet.'),
      h('p', {}, link('/ui/clusters', s.clusters > first.items.length ? `All ${s.clusters} clusters…` : 'Filter and search…')),
    );
    fill(support, supportTable(s));
  }

  return { title: 'Overview', root, refresh };
}
