// The REST API as the portal calls it: the bearer token kept in
// sessionStorage (never in a cookie, never in a URL the server sees), JSON in
// and out, problem+json errors as `Problem`, and 401 as `SignedOut`.

const KEY = 'meshfleet.token';

export function token() {
  return sessionStorage.getItem(KEY);
}

export function setToken(value) {
  sessionStorage.setItem(KEY, value.trim());
}

export function clearToken() {
  sessionStorage.removeItem(KEY);
}

// The JWT's claims, read without checking the signature (the server checks
// it on every call; the page uses them only to choose what to show).
export function claims(value = token()) {
  if (!value) return null;
  const parts = value.trim().split('.');
  if (parts.length !== 3) return null;
  try {
    const b64 = parts[1].replace(/-/g, '+').replace(/_/g, '/');
    const padded = b64 + '='.repeat((4 - (b64.length % 4)) % 4);
    const bytes = Uint8Array.from(atob(padded), (c) => c.charCodeAt(0));
    const json = JSON.parse(new TextDecoder().decode(bytes));
    return json && typeof json === 'object' ? json : null;
  } catch {
    return null;
  }
}

export function roles(c = claims()) {
  return Array.isArray(c?.roles) ? c.roles.map(String) : [];
}

// Why a token cannot be used, judged from its claims; null when it looks usable.
export function unusable(c) {
  if (!c) return 'This is not a meshfleet token (a JWT with tid and roles claims).';
  if (typeof c.tid !== 'string') return 'The token names no tenant (tid claim).';
  if (typeof c.exp === 'number' && c.exp * 1000 <= Date.now()) {
    return `The token expired at ${new Date(c.exp * 1000).toLocaleString()}.`;
  }
  return null;
}

// An error answer of the API (or no answer at all: status 0).
export class Problem extends Error {
  constructor(status, body) {
    const detail = body?.detail || body?.title || `HTTP ${status}`;
    super(detail);
    this.status = status;
    this.detail = detail;
    this.title = body?.title || '';
    this.errors = Array.isArray(body?.errors) ? body.errors : [];
    this.instance = body?.instance || '';
  }
}

// The token is missing, invalid or expired: the page goes back to sign-in.
export class SignedOut extends Error {}

let onSignedOut = () => {};

export function whenSignedOut(handler) {
  onSignedOut = handler;
}

// Signs out once per token: calls still in flight with the same token
// (answering 401 one after the other) do not redraw the sign-in form.
function signOut(used, reason) {
  if (token() === used) {
    clearToken();
    onSignedOut(reason);
  }
  return new SignedOut(reason);
}

async function problemOf(res) {
  const text = await res.text();
  try {
    return JSON.parse(text);
  } catch {
    return { detail: text.trim() || `${res.status} ${res.statusText}` };
  }
}

// Calls the API. `body` (an object) is sent as JSON, or as a merge patch
// with `{mergePatch: true}`. Resolves to {status, etag, headers, body}.
export async function api(method, path, options = {}) {
  const t = token();
  // No token: the page is at sign-in already (or about to be).
  if (!t) throw new SignedOut('Sign in to continue.');
  const why = unusable(claims(t));
  if (why) throw signOut(t, why);
  const headers = { Authorization: `Bearer ${t}`, Accept: 'application/json' };
  if (options.ifMatch) headers['If-Match'] = options.ifMatch;
  let body;
  if (options.body !== undefined) {
    headers['Content-Type'] = options.mergePatch ? 'application/merge-patch+json' : 'application/json';
    body = JSON.stringify(options.body);
  }
  let res;
  try {
    res = await fetch(path, { method, headers, body, cache: 'no-store', credentials: 'omit' });
  } catch (e) {
    throw new Problem(0, { detail: `Cannot reach the meshfleet API (${e.message}); retrying.` });
  }
  if (res.status === 401) {
    const p = await problemOf(res);
    throw signOut(t, `Signed out: ${p.detail || 'the token was refused'}.`);
  }
  if (!res.ok) throw new Problem(res.status, await problemOf(res));
  const type = res.headers.get('Content-Type') || '';
  const payload = res.status === 204 ? null : type.includes('json') ? await res.json() : await res.text();
  return { status: res.status, etag: res.headers.get('ETag'), headers: res.headers, body: payload };
}

export async function get(path) {
  return (await api('GET', path)).body;
}

// A query string from an object, leaving out empty values.
export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== '') q.set(k, String(v));
  }
  const s = q.toString();
  return s ? `?${s}` : '';
}

export const enc = encodeURIComponent;
