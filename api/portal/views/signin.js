// Sign in by pasting a token (or follow the link `meshfleet up` prints).

import { claims, get, setToken, unusable, clearToken, Problem, SignedOut, roles } from '../api.js';
import { h, fill } from '../dom.js';

export function view({ reason, done }) {
  const area = h('textarea', {
    id: 'token',
    name: 'token',
    rows: 5,
    spellcheck: 'false',
    autocomplete: 'off',
    placeholder: 'eyJhbGciOi…',
    'aria-label': 'Token',
  });
  const message = h('div', { id: 'signin-message' });
  if (reason) fill(message, h('div', { class: 'problem', role: 'alert' }, reason));
  const button = h('button', { type: 'submit', id: 'signin-submit' }, 'Sign in');

  async function submit(e) {
    e.preventDefault();
    const value = area.value.trim();
    const why = unusable(claims(value));
    if (why) {
      fill(message, h('div', { class: 'problem', role: 'alert' }, why));
      return;
    }
    button.disabled = true;
    setToken(value);
    try {
      // One call proves the server takes the token before the page trusts it.
      const tenantRoles = roles().filter((r) => r !== 'sre');
      await get(tenantRoles.length ? '/v1/fleet/summary' : '/v1/ops/fleet/summary');
      done();
    } catch (err) {
      if (!(err instanceof SignedOut)) {
        clearToken();
        const detail = err instanceof Problem ? err.detail : String(err);
        fill(message, h('div', { class: 'problem', role: 'alert' }, `The token was not accepted: ${detail}`));
      }
    } finally {
      button.disabled = false;
    }
  }

  return h(
    'form',
    { class: 'panel signin', id: 'signin', onsubmit: submit },
    h('h1', {}, 'Sign in to meshfleet'),
    h(
      'p',
      { class: 'sub' },
      'Paste a bearer token (a JWT for your tenant). It stays in this browser tab only and is sent to this service alone. ',
      'With ',
      h('code', {}, 'meshfleet up'),
      ', open the portal link its banner prints, or mint one: ',
      h('code', {}, 'cargo run -q -p meshfleet -- token --tenant demo --role owner'),
      '.',
    ),
    message,
    area,
    h('div', { class: 'actions' }, button),
  );
}
