// One cluster: its spec, components (desired/observed versions, readiness),
// status history as a timeline, events, pending upgrade, and the actions:
// change the version (PATCH with If-Match; the API's field errors shown at
// the field), issue a bootstrap token, copy the agent's install command.

import { api, get, enc, Problem, SignedOut, roles } from '../api.js';
import { h, fill, badge, readyBadge, table, empty, labels, when, ago, problemBox, copy } from '../dom.js';

const HISTORY_LIMIT = 15;
const EVENTS_LIMIT = 15;

function dl(pairs) {
  return h('dl', { class: 'spec' }, pairs.filter(Boolean).map(([k, v]) => [h('dt', {}, k), h('dd', {}, v)]));
}

function policy(up) {
  return up.mode === 'manual' ? `manual, pinned to ${up.version}` : `automatic, following the ${up.channel} channel`;
}

function windowText(w) {
  if (!w || !w.slots?.length) return 'any time';
  return w.slots.map((x) => `${x.day} ${x.start} UTC for ${x.durationMinutes} min`).join('; ');
}

// The spec and what the agent says about the cluster.
export function specList(c) {
  const m = c.mesh;
  const f = c.status.facts || {};
  return dl([
    ['Labels', labels(c.labels)],
    ['Mesh', m.mode],
    ['Upgrades', policy(m.upgrade)],
    ['Desired version', h('span', { id: 'desired-version' }, c.desiredVersion)],
    ['Maintenance window', windowText(m.maintenanceWindow)],
    ['mTLS', m.mtls],
    ['Enrolled namespaces', m.enrolledNamespaces.length ? m.enrolledNamespaces.join(', ') : 'none'],
    ['Waypoints', m.waypoints.length ? m.waypoints.map((w) => `${w.namespace}/${w.name} (${w.trafficType}, ×${w.replicas})`).join(', ') : 'none'],
    ['istiod replicas', String(m.components.istiod.replicas)],
    ['ztunnel log level', m.components.ztunnel.logLevel],
    ['Generation', `${c.generation} (observed ${c.status.observedGeneration ?? 'never'})`],
    ['Kubernetes', f.kubernetesVersion ? `${f.kubernetesVersion}${f.nodeCount ? `, ${f.nodeCount} nodes` : ''}${f.platform ? `, ${f.platform}` : ''}` : '—'],
    ['Agent', f.agentVersion || 'not registered'],
    ['Last heartbeat', c.status.lastHeartbeatAt ? `${when(c.status.lastHeartbeatAt)} (${ago(c.status.lastHeartbeatAt)})` : 'never'],
    ['Created', when(c.createdAt)],
  ]);
}

function conditionText(x) {
  return `${x.type}=${x.status}${x.reason ? ` (${x.reason})` : ''}${x.message ? `: ${x.message}` : ''}`;
}

export function componentsTable(c) {
  return table(
    ['Component', 'Desired', 'Observed', 'Ready', 'Replicas', 'Message'],
    c.status.components.map((x) =>
      h(
        'tr',
        { dataset: { component: x.name, ready: x.ready } },
        h('td', {}, x.name),
        h('td', {}, x.desiredVersion || '—'),
        h('td', { class: x.observedVersion && x.observedVersion !== x.desiredVersion ? 'error' : '' }, x.observedVersion || '—'),
        h('td', {}, readyBadge(x.ready)),
        h('td', { class: 'num' }, x.desiredReplicas === null ? '—' : `${x.readyReplicas ?? 0}/${x.desiredReplicas}`),
        h('td', { class: 'wrap' }, x.message || '', x.conditions.filter((k) => k.status !== 'True').map((k) => h('div', { class: 'muted' }, conditionText(k)))),
      ),
    ),
    'The agent has reported no components yet.',
  );
}

export function conditionsList(conditions) {
  if (!conditions.length) return null;
  return h(
    'ul',
    { id: 'conditions' },
    conditions.map((x) => h('li', { class: x.status === 'True' ? '' : 'error' }, conditionText(x), x.lastTransitionTime ? h('span', { class: 'muted' }, ` — since ${when(x.lastTransitionTime)}`) : null)),
  );
}

export function timeline(entries) {
  if (!entries.length) return empty('No status reported yet.');
  return h(
    'ol',
    { class: 'timeline', id: 'history' },
    entries.map((e) => {
      const bad = e.components.filter((x) => !x.ready);
      return h(
        'li',
        { class: e.health, dataset: { health: e.health } },
        h('div', {}, badge(e.health), ` generation ${e.observedGeneration ?? '—'}`),
        h('div', { class: 'when' }, `${when(e.at)} (${ago(e.at)})`),
        bad.map((x) => h('div', { class: 'muted' }, `${x.name}: ${x.message || 'not ready'}`)),
      );
    }),
  );
}

function detailText(d) {
  if (d === null || d === undefined) return '';
  if (typeof d !== 'object') return String(d);
  const clip = (t) => (t.length > 120 ? `${t.slice(0, 119)}…` : t);
  return Object.entries(d)
    .map(([k, v]) => `${k}: ${clip(typeof v === 'object' && v !== null ? JSON.stringify(v) : String(v))}`)
    .join(', ');
}

export function eventsTable(events) {
  return table(
    ['When', 'Action', 'Actor', 'Detail'],
    events.map((e) =>
      h(
        'tr',
        { dataset: { action: e.action } },
        h('td', { class: 'nowrap', title: when(e.at) }, ago(e.at)),
        h('td', {}, h('code', {}, e.action)),
        h('td', {}, e.actor),
        h('td', { class: 'muted wrap' }, detailText(e.detail)),
      ),
    ),
    'No events.',
  );
}

function pendingText(p) {
  if (!p) return null;
  return h(
    'div',
    { class: 'ok', id: 'pending-upgrade' },
    `Pending upgrade to ${p.version}: ${p.reason}`,
    p.notBefore ? ` (not before ${when(p.notBefore)})` : '',
  );
}

// Fills a <datalist> with the catalog's versions (suggestions only: a
// failure leaves it empty and the field still takes any version).
export function fillReleases(datalist) {
  get('/v1/releases')
    .then((r) => fill(datalist, r.items.filter((x) => !x.retired).map((x) => h('option', { value: x.version }, x.channels.length ? `channels: ${x.channels.join(', ')}` : ''))))
    .catch(() => {});
}

// The version form: mode, version or channel; errors at their fields.
function versionForm(state, ctx) {
  const mode = h('select', { id: 'upgrade-mode', name: 'mode' }, h('option', { value: 'manual' }, 'manual (pinned version)'), h('option', { value: 'automatic' }, 'automatic (follow a channel)'));
  const version = h('input', { id: 'version-input', name: 'version', list: 'release-versions', size: 12, autocomplete: 'off' });
  const channel = h('select', { id: 'channel-input', name: 'channel' }, ['rapid', 'regular', 'stable'].map((c) => h('option', { value: c }, c)));
  const errors = {
    '/mesh/upgrade/mode': h('div', { class: 'field-error', id: 'mode-error', role: 'alert' }),
    '/mesh/upgrade/version': h('div', { class: 'field-error', id: 'version-error', role: 'alert' }),
    '/mesh/upgrade/channel': h('div', { class: 'field-error', id: 'channel-error', role: 'alert' }),
  };
  const inputs = { '/mesh/upgrade/mode': mode, '/mesh/upgrade/version': version, '/mesh/upgrade/channel': channel };
  const outcome = h('div', { id: 'version-outcome' });
  const save = h('button', { type: 'submit', id: 'version-save' }, 'Save');
  const releases = h('datalist', { id: 'release-versions' });
  const versionField = h('label', { class: 'field' }, 'Version', version, errors['/mesh/upgrade/version']);
  const channelField = h('label', { class: 'field' }, 'Channel', channel, errors['/mesh/upgrade/channel']);
  let dirty = false;

  function showMode() {
    versionField.hidden = mode.value !== 'manual';
    channelField.hidden = mode.value !== 'automatic';
  }
  function clearErrors() {
    for (const [pointer, el] of Object.entries(errors)) {
      fill(el);
      inputs[pointer].removeAttribute('aria-invalid');
    }
    fill(outcome);
  }
  for (const el of [mode, version, channel]) {
    el.addEventListener('input', () => {
      dirty = true;
      showMode();
    });
  }

  const form = h(
    'form',
    { id: 'version-form', class: 'filters' },
    h('label', { class: 'field' }, 'Upgrades', mode, errors['/mesh/upgrade/mode']),
    versionField,
    channelField,
    save,
    releases,
  );
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    clearErrors();
    const upgrade =
      mode.value === 'manual'
        ? { mode: 'manual', version: version.value.trim(), channel: null }
        : { mode: 'automatic', channel: channel.value, version: null };
    save.disabled = true;
    try {
      const r = await api('PATCH', `/v1/clusters/${enc(state.name)}`, {
        body: { mesh: { upgrade } },
        mergePatch: true,
        ifMatch: state.etag,
      });
      state.etag = r.etag;
      dirty = false;
      fill(outcome, h('div', { class: 'ok' }, `Saved: generation ${r.body.generation}, desired version ${r.body.desiredVersion}.`));
      await ctx.reload();
    } catch (err) {
      if (err instanceof SignedOut) return;
      if (!(err instanceof Problem)) throw err;
      const general = [];
      for (const fe of err.errors) {
        const el = errors[fe.pointer];
        if (el) {
          el.append(h('div', { dataset: { pointer: fe.pointer } }, fe.detail));
          inputs[fe.pointer].setAttribute('aria-invalid', 'true');
        } else {
          general.push(`${fe.pointer}: ${fe.detail}`);
        }
      }
      const hint =
        err.status === 412
          ? ' The cluster changed since this page read it; it has been read again: check and save again.'
          : '';
      if (err.status === 412) await ctx.reload();
      if (!err.errors.length || general.length || hint) {
        fill(outcome, h('div', { class: 'problem', role: 'alert' }, `${err.detail}${hint}`, general.map((g) => h('div', {}, g))));
      }
    } finally {
      save.disabled = false;
    }
  });

  fillReleases(releases);

  return {
    root: h('div', {}, form, outcome),
    // Shows the cluster's current policy unless the user is editing it.
    update(c) {
      if (dirty) return;
      mode.value = c.mesh.upgrade.mode;
      version.value = c.mesh.upgrade.version || c.desiredVersion;
      channel.value = c.mesh.upgrade.channel || 'regular';
      showMode();
    },
  };
}

// Bootstrap token and install command (shown once; never polled).
function agentActions(state) {
  const out = h('div', { id: 'agent-output' });
  const issue = h('button', { type: 'button', id: 'issue-token', class: 'secondary' }, 'Issue a bootstrap token');
  const install = h('button', { type: 'button', id: 'install-command', class: 'secondary' }, 'Install command');

  function commandBox(text, label) {
    const status = h('span', { class: 'muted' });
    const button = h(
      'button',
      {
        type: 'button',
        class: 'secondary',
        onclick: async () => fill(status, (await copy(text)) ? ' Copied.' : ' Select the text and copy it.'),
      },
      `Copy ${label}`,
    );
    return [h('pre', { class: 'command', id: 'command-text' }, text), h('div', {}, button, status)];
  }

  async function run(button, work) {
    button.disabled = true;
    try {
      fill(out, await work());
    } catch (err) {
      if (err instanceof SignedOut) return;
      fill(out, problemBox(err));
    } finally {
      button.disabled = false;
    }
  }

  issue.addEventListener('click', () =>
    run(issue, async () => {
      const r = await api('POST', `/v1/clusters/${enc(state.name)}/bootstrap-tokens`);
      const t = r.body;
      return [
        h('p', {}, `A one-time bootstrap token, valid until ${when(t.expiresAt)}. It is shown only now.`),
        commandBox(t.token, 'token'),
      ];
    }),
  );
  install.addEventListener('click', () =>
    run(install, async () => {
      const r = await api('GET', `/v1/clusters/${enc(state.name)}/agent-manifest`);
      const command = `kubectl apply -f - <<'EOF'\n${String(r.body).trimEnd()}\nEOF\n`;
      return [
        h('p', {}, 'Run this against the cluster to install its agent (namespace meshfleet-system, with a fresh one-time bootstrap token):'),
        commandBox(command, 'install command'),
      ];
    }),
  );
  return h('div', {}, h('div', { class: 'actions' }, issue, install), out);
}

export function view(ctx, name) {
  const state = { name, etag: null };
  const canWrite = roles().some((r) => r === 'owner' || r === 'contributor');
  const head = h('div', { class: 'page-head' }, h('div', {}, h('h1', {}, name), h('div', { class: 'sub' }, 'Loading…')));
  const problem = h('div', { id: 'cluster-problem' });
  const spec = h('div', { id: 'spec' });
  const components = h('div', { id: 'components' });
  const conditions = h('div');
  const history = h('div');
  const events = h('div', { id: 'events' });
  const pending = h('div');
  const reloadBox = { reload: async () => refresh() };
  const form = canWrite ? versionForm(state, reloadBox) : null;
  const body = h(
    'div',
    { id: 'cluster-body', hidden: true },
    h(
      'div',
      { class: 'grid two' },
      h('section', { class: 'panel' }, h('h2', {}, 'Spec'), spec),
      h(
        'div',
        {},
        h('section', { class: 'panel' }, h('h2', {}, 'Version'), pending, form ? form.root : h('p', { class: 'muted' }, 'Changing the version needs the contributor or owner role.')),
        canWrite ? h('section', { class: 'panel' }, h('h2', {}, 'Agent'), agentActions(state)) : null,
      ),
    ),
    h('section', { class: 'panel' }, h('h2', {}, 'Components'), components, conditions),
    h('div', { class: 'grid two' }, h('section', { class: 'panel' }, h('h2', {}, 'Status history'), history), h('section', { class: 'panel' }, h('h2', {}, 'Events'), events)),
  );

  async function refresh() {
    let r;
    try {
      r = await api('GET', `/v1/clusters/${enc(name)}`);
    } catch (e) {
      if (!(e instanceof Problem) || e.status !== 404) throw e;
      body.hidden = true;
      fill(head, h('div', {}, h('h1', {}, name), h('div', { class: 'sub' }, 'Not found')));
      fill(problem, h('div', { class: 'panel' }, empty(`Your tenant has no cluster named "${name}" (it may have been deleted).`), h('a', { href: '/ui/clusters', dataset: { link: '' } }, 'Back to the cluster list')));
      return;
    }
    const c = r.body;
    state.etag = r.etag;
    const [hist, ev] = await Promise.all([
      get(`/v1/clusters/${enc(name)}/status/history?limit=${HISTORY_LIMIT}`),
      get(`/v1/events?cluster=${enc(name)}&limit=${EVENTS_LIMIT}`),
    ]);
    fill(problem);
    body.hidden = false;
    fill(
      head,
      h(
        'div',
        {},
        h('h1', {}, name, ' ', h('span', { id: 'cluster-health' }, badge(c.status.health)), ' ', h('span', { id: 'cluster-connectivity' }, badge(c.status.connectivity))),
        h('div', { class: 'sub' }, `Desired ${c.desiredVersion} · generation ${c.generation} · id ${c.id}`),
        c.deletionOperation ? h('div', { class: 'problem' }, `Being deleted (operation ${c.deletionOperation}): the agent is uninstalling the mesh.`) : null,
      ),
    );
    fill(spec, specList(c));
    fill(pending, pendingText(c.status.pendingUpgrade));
    if (form) form.update(c);
    fill(components, componentsTable(c));
    fill(conditions, conditionsList(c.status.conditions));
    fill(history, timeline(hist.items));
    fill(events, eventsTable(ev.items));
  }

  return { title: name, root: h('div', { id: 'cluster' }, head, problem, body), refresh };
}
