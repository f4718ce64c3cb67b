// The portal's shell: sign-in from the URL fragment, routing on the path
// (history API), the navigation, and the poll that keeps the open view
// up to date.

import { SignedOut, claims, clearToken, roles, setToken, token, unusable, whenSignedOut } from './api.js';
import { fill, h } from './dom.js';
import * as signin from './views/signin.js';
import * as overview from './views/overview.js';
import * as clusters from './views/clusters.js';
import * as cluster from './views/cluster.js';
import * as rollouts from './views/rollouts.js';
import * as service from './views/service.js';

const POLL_MS = 2500;
const TENANT_ROLES = ['reader', 'contributor', 'owner'];

// [pattern, nav item, view, who may see it]
const ROUTES = [
  [/^\/(?:ui\/?)?$/, 'overview', overview.view, 'tenant'],
  [/^\/ui\/clusters\/?$/, 'clusters', clusters.view, 'tenant'],
  [/^\/ui\/clusters\/([^/]+)\/?$/, 'clusters', cluster.view, 'tenant'],
  [/^\/ui\/rollouts\/?$/, 'rollouts', rollouts.list, 'tenant'],
  [/^\/ui\/rollouts\/([^/]+)\/?$/, 'rollouts', rollouts.detail, 'tenant'],
  [/^\/ui\/service\/?$/, 'service', service.view, 'sre'],
  [/^\/ui\/service\/clusters\/([^/]+)\/([^/]+)\/?$/, 'service', service.cluster, 'sre'],
];

const main = document.getElementById('main');
const banner = document.getElementById('banner');
const updated = document.getElementById('updated');

let generation = 0;
let current = null;

function isTenantUser() {
  return roles().some((r) => TENANT_ROLES.includes(r));
}

function isSre() {
  return roles().includes('sre');
}

function setBanner(text, kind = 'error') {
  if (!text) {
    banner.hidden = true;
    banner.replaceChildren();
    return;
  }
  banner.className = `banner ${kind}`;
  fill(banner, text);
  banner.hidden = false;
}

function showChrome(signedIn) {
  document.getElementById('nav').hidden = !signedIn;
  document.getElementById('who').hidden = !signedIn;
  if (!signedIn) return;
  const c = claims();
  for (const a of document.querySelectorAll('#nav a[data-nav]')) {
    a.hidden = a.dataset.nav === 'service' ? !isSre() : !isTenantUser();
  }
  const exp = typeof c.exp === 'number' ? `, until ${new Date(c.exp * 1000).toLocaleString()}` : '';
  fill(document.getElementById('who-text'), `${c.sub || 'user'} · tenant ${c.tid} · ${roles().join(', ')}${exp}`);
}

function highlight(nav) {
  for (const a of document.querySelectorAll('#nav a[data-nav]')) {
    a.classList.toggle('active', a.dataset.nav === nav);
  }
}

function navigate(path, { replace = false } = {}) {
  if (replace) history.replaceState(null, '', path);
  else history.pushState(null, '', path);
  render();
}

function showSignIn(reason) {
  generation += 1;
  current = null;
  showChrome(false);
  highlight(null);
  setBanner(null);
  fill(updated);
  const back = location.pathname.startsWith('/ui/signin') ? '/ui/' : location.pathname + location.search;
  fill(
    main,
    signin.view({
      reason,
      done: () => navigate(back, { replace: true }),
    }),
  );
  document.title = 'Sign in · meshfleet';
}

function notFound() {
  return {
    title: 'Not found',
    root: h('div', { class: 'panel' }, h('h1', {}, 'No such page'), h('p', {}, 'The portal has no page at this address. ', h('a', { href: '/ui/', dataset: { link: '' } }, 'Go to the overview'), '.')),
    refresh: async () => {},
  };
}

function forbidden(what) {
  return {
    title: 'Not allowed',
    root: h('div', { class: 'panel' }, h('h1', {}, 'Not allowed'), h('p', {}, what)),
    refresh: async () => {},
  };
}

function resolve(path) {
  for (const [pattern, nav, make, who] of ROUTES) {
    const m = path.match(pattern);
    if (!m) continue;
    const params = m.slice(1).map(decodeURIComponent);
    if (who === 'tenant' && !isTenantUser()) {
      if (nav === 'overview' && isSre()) return { redirect: '/ui/service' };
      return { nav, view: forbidden('Your token has no reader, contributor or owner role in its tenant.') };
    }
    if (who === 'sre' && !isSre()) {
      return { nav, view: forbidden('The service-wide view is for tokens with the sre role in the operator tenant.') };
    }
    return { nav, view: make({ navigate, setBanner, search: new URLSearchParams(location.search) }, ...params) };
  }
  return { nav: null, view: notFound() };
}

async function refresh(gen) {
  if (!current || gen !== generation) return;
  try {
    await current.refresh();
    if (gen !== generation) return;
    setBanner(null);
    fill(updated, `Updated ${new Date().toLocaleTimeString()} · refreshes every ${POLL_MS / 1000} s`);
  } catch (e) {
    if (e instanceof SignedOut || gen !== generation) return;
    setBanner(`Could not refresh: ${e.detail || e.message}`);
    console.error(e);
  }
}

async function poll(gen) {
  while (gen === generation) {
    await new Promise((r) => setTimeout(r, POLL_MS));
    if (gen !== generation) return;
    if (!document.hidden) await refresh(gen);
  }
}

function render() {
  const t = token();
  const why = t ? unusable(claims(t)) : 'Paste a token to sign in.';
  if (why) {
    if (t) clearToken();
    showSignIn(t ? why : null);
    return;
  }
  generation += 1;
  const gen = generation;
  showChrome(true);
  setBanner(null);
  const route = resolve(location.pathname);
  if (route.redirect) {
    navigate(route.redirect, { replace: true });
    return;
  }
  current = route.view;
  highlight(route.nav);
  document.title = `${current.title} · meshfleet`;
  fill(main, current.root);
  refresh(gen).then(() => poll(gen));
}

// A link from `meshfleet up` carries the token in the fragment (which never
// reaches the server); keep it for this tab only and take it out of the URL.
function takeTokenFromFragment() {
  const m = location.hash.match(/^#token=([^&]+)/);
  if (!m) return;
  setToken(decodeURIComponent(m[1]));
  history.replaceState(null, '', location.pathname + location.search);
}

whenSignedOut((reason) => showSignIn(reason));

document.addEventListener('click', (e) => {
  const a = e.target.closest('a[data-link]');
  if (!a || e.ctrlKey || e.metaKey || e.shiftKey || e.button !== 0) return;
  e.preventDefault();
  navigate(a.getAttribute('href'));
});

document.getElementById('signout').addEventListener('click', () => {
  clearToken();
  showSignIn('You signed out.');
});

document.addEventListener('visibilitychange', () => {
  if (!document.hidden && current) refresh(generation);
});

window.addEventListener('popstate', render);

// An action's failure that no view caught: say so instead of failing silently.
window.addEventListener('unhandledrejection', (e) => {
  e.preventDefault();
  if (e.reason instanceof SignedOut) return;
  setBanner(`Failed: ${e.reason?.detail || e.reason?.message || e.reason}`);
  console.error(e.reason);
});

takeTokenFromFragment();
render();
