// Rollouts: the list, and one rollout's stages and clusters with its
// pause / resume / approve / cancel buttons.

import { api, get, query, enc, Problem, SignedOut, roles } from '../api.js';
import { h, fill, badge, table, empty, link, ago, when, clusterPath, problemBox, pager, plural } from '../dom.js';
import { progress } from '../charts.js';

const ACTIVE = ['Running', 'WaitingForApproval', 'Paused'];
const STATES = ['', 'Running', 'WaitingForApproval', 'Paused', 'Succeeded', 'RolledBack', 'Cancelled'];

function rolloutPath(id) {
  return `/ui/rollouts/${encodeURIComponent(id)}`;
}

export function list({ search, navigate }) {
  const state = search.get('state') || '';
  const results = h('div', { id: 'rollout-list' }, h('p', { class: 'loading' }, 'Loading…'));
  const pages = pager(() => refresh());
  const filter = h(
    'select',
    { id: 'rollout-state', onchange: (e) => navigate(`/ui/rollouts${query({ state: e.target.value })}`) },
    STATES.map((s) => h('option', { value: s, selected: s === state }, s || 'any state')),
  );

  async function refresh() {
    const page = await get(`/v1/rollouts${query({ state, limit: 25, cursor: pages.cursor })}`);
    pages.update(page.nextCursor);
    fill(
      results,
      table(
        ['Rollout', 'Target', 'Selector', 'State', 'Progress', 'Started'],
        page.items.map((r) =>
          h(
            'tr',
            { dataset: { rollout: r.id, state: r.state } },
            h('td', {}, link(rolloutPath(r.id), r.name)),
            h('td', {}, r.targetVersion),
            h('td', {}, h('code', {}, r.selector || '(all clusters)')),
            h('td', {}, badge(r.state)),
            h('td', {}, progress(r.counts), h('span', { class: 'muted' }, `${r.counts.succeeded}/${r.counts.total} succeeded${r.counts.failed ? `, ${r.counts.failed} failed` : ''}`)),
            h('td', { class: 'muted', title: when(r.createdAt) }, ago(r.createdAt)),
          ),
        ),
        state ? `No rollout is ${state}.` : 'No rollouts yet. Start one with POST /v1/rollouts (see the API docs): stages by label selector or share of the fleet, soak time, approval gates.',
      ),
    );
  }

  const root = h(
    'div',
    { id: 'rollouts' },
    h('div', { class: 'page-head' }, h('h1', {}, 'Rollouts'), h('label', { class: 'field' }, 'State', filter)),
    h('section', { class: 'panel' }, results, pages.root),
  );
  return { title: 'Rollouts', root, refresh };
}

function stageCounts(clusters) {
  const c = { total: clusters.length, succeeded: 0, inProgress: 0, failed: 0, rolledBack: 0, skipped: 0 };
  for (const x of clusters) {
    if (x.state === 'Succeeded') c.succeeded += 1;
    else if (['Upgrading', 'Soaking', 'RollingBack'].includes(x.state)) c.inProgress += 1;
    else if (x.state === 'Failed') c.failed += 1;
    else if (x.state === 'RolledBack') c.rolledBack += 1;
    else if (x.state === 'Skipped') c.skipped += 1;
  }
  return c;
}

function stageCard(s) {
  const clusters = s.clusters || [];
  const c = stageCounts(clusters);
  return h(
    'div',
    { class: 'stage', dataset: { stage: s.name, state: s.state } },
    h('div', { class: 'stage-head' }, h('strong', {}, s.name), badge(s.state)),
    h(
      'div',
      { class: 'muted' },
      `up to ${s.maxConcurrency} at once · soak ${s.soakSeconds}s${s.requireApproval ? ' · needs approval' : ''}`,
      s.startedAt ? ` · started ${ago(s.startedAt)}` : '',
      s.finishedAt ? ` · finished ${ago(s.finishedAt)}` : '',
    ),
    h('div', { class: 'stage-progress' }, progress(c), h('span', { class: 'muted' }, `${c.succeeded}/${c.total} succeeded`)),
    table(
      ['Cluster', 'State', 'Version', 'Reason'],
      clusters.map((x) =>
        h(
          'tr',
          { dataset: { cluster: x.name, state: x.state } },
          h('td', {}, link(clusterPath(x.name), x.name)),
          h('td', {}, badge(x.state)),
          h('td', { class: 'nowrap' }, `${x.fromVersion} → ${x.toVersion}`),
          h('td', { class: 'muted wrap' }, x.reason || ''),
        ),
      ),
      'No clusters in this stage.',
    ),
  );
}

function actionsFor(r, canWrite, act) {
  if (!canWrite) return h('p', { class: 'muted' }, 'Steering a rollout needs the contributor or owner role.');
  const button = (action, label, enabled, cls = '') =>
    h('button', { type: 'button', id: `rollout-${action}`, class: cls, disabled: !enabled, onclick: (e) => act(action, e.target) }, label);
  const userPaused = r.state === 'Paused' && r.pauseReason === 'User';
  return h(
    'div',
    { class: 'actions' },
    button('pause', 'Pause', r.state === 'Running' || r.state === 'WaitingForApproval', 'secondary'),
    button('resume', 'Resume', userPaused, 'secondary'),
    button('approve', 'Approve next stage', r.state === 'WaitingForApproval'),
    button('cancel', 'Cancel rollout', ACTIVE.includes(r.state), 'danger'),
  );
}

export function detail(ctx, id) {
  const canWrite = roles().some((r) => r === 'owner' || r === 'contributor');
  const head = h('div', { class: 'page-head' }, h('h1', {}, 'Rollout'));
  const outcome = h('div', { id: 'rollout-outcome' });
  const actions = h('div', { id: 'rollout-actions' });
  const facts = h('div');
  const stages = h('div', { class: 'stages', id: 'stages' });
  let armedCancel = null;

  async function act(action, button) {
    if (action === 'cancel' && armedCancel === null) {
      // A second click within five seconds confirms (no modal dialog).
      fill(button, 'Click again to cancel');
      armedCancel = setTimeout(() => {
        armedCancel = null;
        fill(button, 'Cancel rollout');
      }, 5000);
      return;
    }
    clearTimeout(armedCancel);
    armedCancel = null;
    button.disabled = true;
    try {
      const r = await api('POST', `/v1/rollouts/${enc(id)}/${action}`);
      fill(outcome, h('div', { class: 'ok' }, `${action}: the rollout is now ${r.body.state}.`));
      render(r.body);
    } catch (err) {
      if (err instanceof SignedOut) return;
      fill(outcome, problemBox(err));
      button.disabled = false;
    }
  }

  function render(r) {
    fill(
      head,
      h(
        'div',
        {},
        h('h1', {}, r.name, ' ', h('span', { id: 'rollout-state', dataset: { state: r.state } }, badge(r.state))),
        h('div', { class: 'sub' }, `to ${r.targetVersion} · ${r.selector ? `clusters matching ${r.selector}` : 'all clusters'} · started ${when(r.createdAt)}`),
        r.pauseReason === 'FailureThreshold' ? h('div', { class: 'problem' }, 'Paused by its failure policy: too many clusters failed. Cancel it, or fix the clusters and start a new rollout.') : null,
      ),
    );
    if (armedCancel === null) fill(actions, actionsFor(r, canWrite, act));
    const fp = r.failurePolicy;
    const limit = [fp.maxFailedClusters != null ? plural(fp.maxFailedClusters, 'cluster') : null, fp.maxFailedPercent != null ? `${fp.maxFailedPercent}%` : null].filter(Boolean).join(' or ') || '0 clusters';
    fill(
      facts,
      h('div', { class: 'stage-progress' }, progress(r.counts)),
      h(
        'p',
        { class: 'muted', id: 'rollout-counts' },
        `${plural(r.counts.total, 'cluster')}: ${r.counts.succeeded} succeeded, ${r.counts.inProgress} in progress, ${r.counts.pending} pending, ${r.counts.failed} failed, ${r.counts.rolledBack} rolled back, ${r.counts.skipped} skipped. `,
        `Failure policy: ${fp.action} when more than ${limit} fail. Progress deadline ${r.progressDeadlineSeconds}s. Operation `,
        h('code', {}, r.operationId),
        '.',
      ),
    );
    fill(stages, r.stages.map(stageCard));
  }

  async function refresh() {
    let r;
    try {
      r = await get(`/v1/rollouts/${enc(id)}`);
    } catch (e) {
      if (!(e instanceof Problem) || (e.status !== 404 && e.status !== 400)) throw e;
      fill(head, h('h1', {}, 'Rollout not found'));
      fill(actions);
      fill(facts, empty(`Your tenant has no rollout with id "${id}".`));
      fill(stages);
      return;
    }
    render(r);
  }

  const root = h(
    'div',
    { id: 'rollout' },
    head,
    outcome,
    h('section', { class: 'panel' }, h('h2', {}, 'Actions'), actions, facts),
    h('section', { class: 'panel' }, h('h2', {}, 'Stages'), stages),
    h('p', {}, link('/ui/rollouts', '← All rollouts')),
  );
  return { title: 'Rollout', root, refresh };
}
