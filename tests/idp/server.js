// Keycloak-shaped OpenID Provider for ngx-oidc end-to-end tests, built on `oidc-provider`.
// Start: node tests/idp/server.js   (see README.md for env vars, users and endpoints)
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

import { importJWK, SignJWT } from 'jose';
import Provider from 'oidc-provider';

import { bySub, byUsername, keycloakClaims } from './users.js';

const HERE = path.dirname(fileURLToPath(import.meta.url));

// ---------------------------------------------------------------- configuration
const env = process.env;
const HOST = '127.0.0.1';
const PORT = parseInt(env.IDP_PORT || '8081', 10);
const REALM = env.IDP_REALM || 'test';
const REALM_PATH = `/realms/${REALM}`;
// IDP_ISSUER_TRAILING_SLASH=1: the issuer ends in "/" (like authentik's
// https://host/application/o/<app>/); discovery stays at <realm path>/.well-known/...
const ISSUER = `http://${HOST}:${PORT}${REALM_PATH}${env.IDP_ISSUER_TRAILING_SLASH === '1' ? '/' : ''}`;
const CLIENT_ID = env.IDP_CLIENT_ID || 'test';
const CLIENT_SECRET = env.IDP_CLIENT_SECRET || 'secret';
const list = (v, d) => (v || d).split(',').map((s) => s.trim()).filter(Boolean);
const REDIRECT_URIS = list(env.IDP_REDIRECT_URIS, 'http://127.0.0.1:8080/oauth2/callback');
const POST_LOGOUT_URIS = list(env.IDP_POST_LOGOUT_REDIRECT_URIS, 'http://127.0.0.1:8080/');
const ttlEnv = (name, d) => {
  const n = parseInt(env[name] || String(d), 10);
  if (!Number.isFinite(n) || n <= 0) throw new Error(`${name} must be a positive integer`);
  return n;
};
// `let`: POST /_test/set-token-ttls changes them for tokens issued from then on.
let ACCESS_TTL = ttlEnv('IDP_ACCESS_TOKEN_TTL', 300);
let ID_TTL = ttlEnv('IDP_ID_TOKEN_TTL', 300);
const REFRESH_TTL = ttlEnv('IDP_REFRESH_TOKEN_TTL', 1800);
const SESSION_TTL = ttlEnv('IDP_SESSION_TTL', 3600);
const ROTATE_REFRESH = env.IDP_ROTATE_REFRESH !== '0';
// Keycloak's default "roles" client scope puts realm_access/resource_access in the access
// token only; `1` also maps them into the ID token (an administrator's choice).
const ROLES_IN_ID_TOKEN = env.IDP_ROLES_IN_ID_TOKEN === '1';
// `1`: the client has Keycloak's Audience mapper, so access tokens say `aud: <client_id>`
// instead of `aud: account`.
const AUDIENCE_MAPPER = env.IDP_AUDIENCE_MAPPER === '1';
// The realm's signing algorithm: RS256 (Keycloak's default), ES512 or Ed448 (EdDSA).
const SIGNING_ALGS = {
  RS256: { type: 'rsa', opts: { modulusLength: 2048 }, alg: 'RS256', hash: 'sha256' },
  ES512: { type: 'ec', opts: { namedCurve: 'P-521' }, alg: 'ES512', hash: 'sha512', dsaEncoding: 'ieee-p1363' },
  Ed448: { type: 'ed448', opts: {}, alg: 'EdDSA', hash: null },
};
const SIGNING = SIGNING_ALGS[env.IDP_SIGNING_ALG || 'RS256'];
if (!SIGNING) throw new Error(`IDP_SIGNING_ALG must be one of ${Object.keys(SIGNING_ALGS)}`);
// IDP_NUMBERS=fractional: non-integer iat/exp/nbf/auth_time in ID and access tokens (RFC 7519
// NumericDate allows them) and expires_in/refresh_expires_in as strings ("300").
const FRACTIONAL_NUMBERS = env.IDP_NUMBERS === 'fractional';
// Fields left out of every token response (IDP_OMIT_FIELDS) or of refresh answers only
// (IDP_REFRESH_OMIT_FIELDS), e.g. expires_in, refresh_token: optional in RFC 6749 §5.1, §6.
const OMIT_FIELDS = list(env.IDP_OMIT_FIELDS, '');
const REFRESH_OMIT_FIELDS = list(env.IDP_REFRESH_OMIT_FIELDS, '');

// Resource indicator used (implicitly) for every access token; its audience is "account"
// like Keycloak 19+ access tokens.
const ACCOUNT_RESOURCE = `${ISSUER}/account`;
const SCOPES = ['openid', 'offline_access', 'profile', 'email', 'roles', 'groups', 'web-origins', 'acr'];
const KC = '/protocol/openid-connect';
const INTERNAL_HEADER = 'x-test-idp-internal';
const INTERNAL_TOKEN = crypto.randomBytes(16).toString('hex');

// ---------------------------------------------------------------- signing key
function loadOrGenerateKey() {
  let jwk;
  if (env.IDP_KEYS_FILE) {
    if (SIGNING.alg !== 'RS256') throw new Error('IDP_KEYS_FILE holds an RSA key: only with IDP_SIGNING_ALG=RS256');
    const file = path.resolve(process.cwd(), env.IDP_KEYS_FILE);
    const data = JSON.parse(fs.readFileSync(file, 'utf8'));
    const keys = Array.isArray(data.keys) ? data.keys : [data];
    jwk = keys.find((k) => k.kty === 'RSA' && k.d);
    if (!jwk) throw new Error(`${file}: no private RSA JWK found`);
    jwk = { ...jwk };
  } else {
    const { privateKey } = crypto.generateKeyPairSync(SIGNING.type, SIGNING.opts);
    jwk = privateKey.export({ format: 'jwk' });
  }
  if (!jwk.kid) {
    const { d, p, q, dp, dq, qi, ...pub } = jwk;
    const canon = JSON.stringify(Object.fromEntries(Object.entries(pub).sort()));
    jwk.kid = crypto.createHash('sha256').update(canon).digest('base64url');
  }
  jwk.alg = SIGNING.alg;
  jwk.use = 'sig';
  return jwk;
}
const SIGNING_JWK = loadOrGenerateKey();
const PRIVATE_KEY = crypto.createPrivateKey({ key: SIGNING_JWK, format: 'jwk' });
const PUBLIC_KEY = crypto.createPublicKey(PRIVATE_KEY);

// ---------------------------------------------------------------- counters
const stats = {
  token_requests: { authorization_code: 0, refresh_token: 0 },
  discovery_requests: 0,
  jwks_requests: 0,
  userinfo_requests: 0,
  // The query of the last authorization request, as the provider received it (tests check
  // that parameters such as extra_auth_args arrive).
  last_authorization_request: null,
};
function resetStats() {
  stats.token_requests = { authorization_code: 0, refresh_token: 0 };
  stats.discovery_requests = 0;
  stats.jwks_requests = 0;
  stats.userinfo_requests = 0;
  stats.last_authorization_request = null;
}

// ---------------------------------------------------------------- faults
// POST /_test/fault?what=token|discovery|jwks&kind=500|badjson|huge|hugechunked[&n=N] makes
// the next N (default: all, until cleared) answers of that endpoint a 500, invalid JSON or a
// 10 MB body;
// POST /_test/fault?what=..&kind=hold&n=N holds the next N answers of that endpoint until all
// N requests have arrived, then answers them together: N provider calls certainly in flight at
// once (no timing luck);
// POST /_test/fault?clear=1 ends every fault and releases held requests.
const FAULT_WHATS = ['token', 'discovery', 'jwks'];
const holds = new Map();
async function holdIfAsked(what) {
  const h = holds.get(what);
  if (!h) return;
  await new Promise((release) => {
    h.waiting.push(release);
    if (h.waiting.length >= h.n) {
      holds.delete(what);
      h.waiting.forEach((r) => r());
    }
  });
}
const FAULT_KINDS = ['500', 'badjson', 'huge', 'hugechunked'];
const faults = new Map();
function serveFault(req, res, what) {
  const f = faults.get(what);
  if (!f) return false;
  req.resume(); // drain any request body
  if (f.left !== null) {
    f.left -= 1;
    if (f.left <= 0) faults.delete(what);
  }
  f.served = (f.served || 0) + 1;
  if (f.kind === '500') {
    send(res, 500, 'internal server error', 'text/plain');
  } else if (f.kind === 'badjson') {
    send(res, 200, '{"issuer": "http://x", "oops": [1, 2,', 'application/json');
  } else {
    // 10 MB of valid JSON, announced by Content-Length (huge) or streamed in chunks of
    // unknown total length (hugechunked).
    const body = `{"pad":"${'a'.repeat(10 * 1024 * 1024)}"}`;
    if (f.kind === 'huge') {
      send(res, 200, body, 'application/json', { 'content-length': Buffer.byteLength(body) });
    } else {
      res.writeHead(200, { 'content-type': 'application/json', 'transfer-encoding': 'chunked' });
      for (let i = 0; i < body.length; i += 64 * 1024) res.write(body.slice(i, i + 64 * 1024));
      res.end();
    }
  }
  return true;
}

// ---------------------------------------------------------------- helpers
const esc = (s) => String(s).replace(/[&<>"']/g, (c) => ({
  '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;',
}[c]));

function page(title, body) {
  return `<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>${esc(title)}</title></head>
<body><div id="kc-content"><h1 id="kc-page-title">${esc(title)}</h1>
${body}
</div></body></html>`;
}

function send(res, status, body, type = 'text/html; charset=utf-8', headers = {}) {
  res.writeHead(status, {
    'content-type': type,
    'cache-control': 'no-store',
    ...headers,
  });
  res.end(body);
}

function sendJson(res, status, obj, headers = {}) {
  send(res, status, JSON.stringify(obj), 'application/json; charset=utf-8', headers);
}

async function readBody(req, limit = 1 << 20) {
  const chunks = [];
  let size = 0;
  for await (const c of req) {
    size += c.length;
    if (size > limit) throw new Error('body too large');
    chunks.push(c);
  }
  return Buffer.concat(chunks).toString('utf8');
}

function b64json(part) {
  return JSON.parse(Buffer.from(part, 'base64url').toString('utf8'));
}

// Verifies a JWT issued by this server (signature, iss, exp). Returns payload or null.
function verifyOwnJwt(token) {
  if (typeof token !== 'string') return null;
  const parts = token.split('.');
  if (parts.length !== 3) return null;
  try {
    const header = b64json(parts[0]);
    if (header.alg !== SIGNING.alg || header.kid !== SIGNING_JWK.kid) return null;
    const ok = crypto.verify(
      SIGNING.hash,
      Buffer.from(`${parts[0]}.${parts[1]}`),
      SIGNING.dsaEncoding ? { key: PUBLIC_KEY, dsaEncoding: SIGNING.dsaEncoding } : PUBLIC_KEY,
      Buffer.from(parts[2], 'base64url'),
    );
    if (!ok) return null;
    const payload = b64json(parts[1]);
    if (payload.iss !== ISSUER) return null;
    if (typeof payload.exp !== 'number' || payload.exp <= Math.floor(Date.now() / 1000)) return null;
    return { header, payload };
  } catch {
    return null;
  }
}

function looksLikeJwt(token) {
  return typeof token === 'string' && token.split('.').length === 3;
}

function clientFromRequest(req, form) {
  let id;
  let secret;
  const auth = req.headers.authorization || '';
  if (/^basic /i.test(auth)) {
    const dec = Buffer.from(auth.slice(6).trim(), 'base64').toString('utf8');
    const i = dec.indexOf(':');
    if (i >= 0) {
      id = decodeURIComponent(dec.slice(0, i).replace(/\+/g, '%20'));
      secret = decodeURIComponent(dec.slice(i + 1).replace(/\+/g, '%20'));
    }
  } else {
    id = form.get('client_id');
    secret = form.get('client_secret');
  }
  return id === CLIENT_ID && secret === CLIENT_SECRET ? id : null;
}

// ---------------------------------------------------------------- provider
const configuration = {
  clients: [{
    client_id: CLIENT_ID,
    client_secret: CLIENT_SECRET,
    redirect_uris: REDIRECT_URIS,
    post_logout_redirect_uris: POST_LOGOUT_URIS,
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    // client_secret_basic and client_secret_post are interchangeable in oidc-provider
    // (both are accepted when either is registered).
    token_endpoint_auth_method: 'client_secret_basic',
    id_token_signed_response_alg: SIGNING.alg,
    require_auth_time: true,
    // Only used so that oidc-provider puts `sid` into ID tokens (Keycloak always does).
    backchannel_logout_uri: process.env.IDP_BACKCHANNEL_LOGOUT_URI || `http://${HOST}:${PORT}/_test/backchannel-logout`,
    backchannel_logout_session_required: true,
  }],
  jwks: { keys: [SIGNING_JWK] },
  cookies: {
    // Plain http on 127.0.0.1: cookies must not be `secure` (oidc-provider only sets
    // secure when the request itself is https, and we never set `proxy`).
    keys: [crypto.randomBytes(32).toString('hex')],
    long: { httpOnly: true, sameSite: 'lax', signed: true },
    short: { httpOnly: true, sameSite: 'lax', signed: true },
  },
  scopes: SCOPES,
  // Keycloak puts profile/email/roles/groups claims into tokens for the default client
  // scopes even when only `openid` is requested, so everything hangs off `openid` too.
  claims: {
    openid: ['sub', 'preferred_username', 'email', 'email_verified', 'name', 'given_name',
      'family_name', 'groups', ...(ROLES_IN_ID_TOKEN ? ['realm_access', 'resource_access'] : [])],
    profile: ['name', 'given_name', 'family_name', 'preferred_username'],
    email: ['email', 'email_verified'],
    ...(ROLES_IN_ID_TOKEN ? { roles: ['realm_access', 'resource_access'] } : {}),
    groups: ['groups'],
  },
  conformIdTokenClaims: false,
  async findAccount(ctx, sub) {
    const user = bySub.get(sub);
    if (!user) return undefined;
    return {
      accountId: sub,
      async claims() {
        return keycloakClaims(user, CLIENT_ID);
      },
    };
  },
  enabledJWA: {
    idTokenSigningAlgValues: ['RS256', 'ES512', 'EdDSA'],
  },
  features: {
    devInteractions: { enabled: false },
    introspection: { enabled: true },
    revocation: { enabled: true },
    userinfo: { enabled: true },
    backchannelLogout: { enabled: true },
    rpInitiatedLogout: {
      enabled: true,
      async logoutSource(ctx, form) {
        // Only reached by clients without id_token_hint (those are handled by the
        // redirect-only wrapper below). Keycloak-like confirm page.
        ctx.body = page('Logging out', `<p>Do you want to log out?</p>
${form.replace('</form>', '<input type="hidden" name="logout" value="yes"/></form>')}
<button id="kc-logout" type="submit" form="op.logoutForm">Logout</button>`);
      },
      async postLogoutSuccessSource(ctx) {
        ctx.body = page('You are logged out', '<p>You are logged out.</p>');
      },
    },
    resourceIndicators: {
      enabled: true,
      defaultResource: async () => ACCOUNT_RESOURCE,
      useGrantedResource: async () => true,
      getResourceServerInfo: async (ctx, resourceIndicator) => {
        if (resourceIndicator !== ACCOUNT_RESOURCE) {
          throw new Provider.errors.InvalidTarget();
        }
        return {
          scope: SCOPES.join(' '),
          audience: AUDIENCE_MAPPER ? CLIENT_ID : 'account',
          accessTokenTTL: ACCESS_TTL,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: SIGNING.alg } },
        };
      },
    },
  },
  async extraTokenClaims(ctx, token) {
    if (token.kind !== 'AccessToken') return undefined;
    const user = bySub.get(token.accountId);
    const extra = { azp: token.clientId, typ: 'Bearer' };
    if (token.sid) extra.sid = token.sid;
    if (user) {
      const c = keycloakClaims(user, token.clientId);
      extra.preferred_username = c.preferred_username;
      extra.email = c.email;
      extra.email_verified = c.email_verified;
      extra.name = c.name;
      extra.realm_access = c.realm_access;
      if (c.resource_access) extra.resource_access = c.resource_access;
    }
    return extra;
  },
  issueRefreshToken: async (ctx, client) => client.grantTypeAllowed('refresh_token'),
  rotateRefreshToken: () => ROTATE_REFRESH,
  pkce: { required: () => false },
  clientBasedCORS: () => true,
  interactions: {
    url: async (ctx, interaction) => `${REALM_PATH}/interaction/${interaction.uid}`,
  },
  ttl: {
    AccessToken: () => ACCESS_TTL,
    IdToken: () => ID_TTL,
    RefreshToken: REFRESH_TTL,
    Session: SESSION_TTL,
    Grant: Math.max(SESSION_TTL, REFRESH_TTL) * 2,
    Interaction: 3600,
    AuthorizationCode: 60,
  },
  routes: {
    authorization: `${KC}/auth`,
    token: `${KC}/token`,
    jwks: `${KC}/certs`,
    userinfo: `${KC}/userinfo`,
    end_session: `${KC}/logout`,
    revocation: `${KC}/revoke`,
    introspection: `${KC}/token/introspect`,
  },
  async renderError(ctx, out) {
    ctx.type = 'html';
    ctx.body = page('We are sorry...', Object.entries(out)
      .map(([k, v]) => `<p class="kc-error"><strong>${esc(k)}</strong>: ${esc(v)}</p>`).join('\n'));
  },
};

const provider = new Provider(ISSUER, configuration);

// Keycloak always sends `azp` in the ID token; oidc-provider never does.
{
  const origIssue = provider.IdToken.prototype.issue;
  provider.IdToken.prototype.issue = function issue(opts = {}) {
    if (opts.use === 'idtoken' && this.client) {
      this.set('azp', this.client.clientId);
    }
    return origIssue.call(this, opts);
  };
}

// A JWT of this server with its payload changed by `edit`, signed again with the same key.
function resign(token, edit) {
  const [h, p] = token.split('.');
  const payload = JSON.parse(Buffer.from(p, 'base64url').toString('utf8'));
  edit(payload);
  const body = `${h}.${Buffer.from(JSON.stringify(payload)).toString('base64url')}`;
  const key = SIGNING.dsaEncoding ? { key: PRIVATE_KEY, dsaEncoding: SIGNING.dsaEncoding } : PRIVATE_KEY;
  return `${body}.${crypto.sign(SIGNING.hash, Buffer.from(body), key).toString('base64url')}`;
}

// OpenID Connect Core §3.1.3.6: the left half of the SHA-256 of the access token.
function atHash(accessToken) {
  return crypto.createHash('sha256').update(accessToken).digest().subarray(0, 16).toString('base64url');
}

// Token answers in the shapes other providers send (see FRACTIONAL_NUMBERS, OMIT_FIELDS).
// Registered first, so it runs last: it sees the Keycloak fields added below.
provider.use(async (ctx, next) => {
  await next();
  if (ctx.oidc?.route !== 'token' || ctx.status !== 200 || !ctx.body || typeof ctx.body !== 'object') return;
  const body = { ...ctx.body };
  if (FRACTIONAL_NUMBERS) {
    const fractional = (c) => {
      if (typeof c.iat === 'number') { c.iat += 0.25; c.nbf = c.iat - 0.5; }
      if (typeof c.exp === 'number') c.exp += 0.75;
      if (typeof c.auth_time === 'number') c.auth_time += 0.5;
    };
    if (looksLikeJwt(body.access_token)) body.access_token = resign(body.access_token, fractional);
    if (body.id_token) {
      body.id_token = resign(body.id_token, (c) => {
        fractional(c);
        if (c.at_hash) c.at_hash = atHash(body.access_token);
      });
    }
    for (const f of ['expires_in', 'refresh_expires_in']) {
      if (typeof body[f] === 'number') body[f] = String(body[f]);
    }
  }
  const omit = ctx.oidc.params?.grant_type === 'refresh_token' ? [...OMIT_FIELDS, ...REFRESH_OMIT_FIELDS] : OMIT_FIELDS;
  for (const f of omit) delete body[f];
  ctx.body = body;
});

// Token endpoint: count grants; add Keycloak's refresh_expires_in.
provider.use(async (ctx, next) => {
  await next();
  if (ctx.oidc?.route !== 'token') return;
  const gt = ctx.oidc.params?.grant_type;
  if (gt === 'authorization_code' || gt === 'refresh_token') stats.token_requests[gt] += 1;
  if (ctx.status === 200 && ctx.body && typeof ctx.body === 'object' && ctx.body.refresh_token) {
    const rt = ctx.oidc.entities?.RefreshToken;
    let left = REFRESH_TTL;
    if (rt && typeof rt.exp === 'number') left = Math.max(0, rt.exp - Math.floor(Date.now() / 1000));
    ctx.body = { ...ctx.body, refresh_expires_in: left, 'not-before-policy': 0 };
    if (ctx.oidc.entities?.Session?.uid) ctx.body.session_state = ctx.oidc.entities.Session.uid;
  }
});

provider.on('server_error', (ctx, err) => {
  console.error(`server_error: ${err?.stack || err}`);
});

const providerCallback = provider.callback();

// ---------------------------------------------------------------- interactions
function loginForm(uid, { error, username } = {}) {
  const action = `${REALM_PATH}/interaction/${encodeURIComponent(uid)}/login`;
  return page('Sign in to your account', `${error ? `<div id="input-error" class="alert-error"><span class="kc-feedback-text">${esc(error)}</span></div>` : ''}
<form id="kc-form-login" method="post" action="${esc(action)}">
  <label for="username">Username or email</label>
  <input id="username" name="username" type="text" autofocus autocomplete="username" value="${esc(username || '')}"/>
  <label for="password">Password</label>
  <input id="password" name="password" type="password" autocomplete="current-password"/>
  <input type="hidden" id="id-hidden-input" name="credentialId"/>
  <input id="kc-login" name="login" type="submit" value="Sign In"/>
</form>`);
}

// Grant everything that was requested (no consent screen, like a Keycloak client with
// "Consent required" off).
async function autoConsent(interaction) {
  const { prompt: { details = {} }, params, session } = interaction;
  const accountId = session?.accountId;
  let grant;
  if (interaction.grantId) {
    grant = await provider.Grant.find(interaction.grantId);
  }
  if (!grant) {
    grant = new provider.Grant({ accountId, clientId: params.client_id });
  }
  const requested = String(params.scope || 'openid').split(' ').filter(Boolean);
  grant.addOIDCScope([...new Set([...requested, ...(details.missingOIDCScope || [])])].join(' '));
  if (details.missingOIDCClaims?.length) grant.addOIDCClaims(details.missingOIDCClaims);
  grant.addResourceScope(ACCOUNT_RESOURCE, requested.join(' '));
  for (const [indicator, scopes] of Object.entries(details.missingResourceScopes || {})) {
    grant.addResourceScope(indicator, scopes.join(' '));
  }
  const grantId = await grant.save();
  grantIds.add(grantId);
  return grantId;
}

// Every grant ever given, so a test can end all logins the way an admin's "sign out all
// sessions" does in Keycloak: their refresh tokens then get invalid_grant.
const grantIds = new Set();

async function finishInteraction(req, res, result) {
  const to = await provider.interactionResult(req, res, result, { mergeWithLastSubmission: false });
  res.writeHead(302, { location: to, 'cache-control': 'no-store' });
  res.end();
}

async function handleInteraction(req, res, uid, action) {
  let interaction;
  try {
    interaction = await provider.interactionDetails(req, res);
  } catch (err) {
    send(res, 400, page('We are sorry...', `<p class="kc-error">${esc(err.error_description || err.message)}</p>`));
    return;
  }
  if (interaction.uid !== uid) {
    send(res, 400, page('We are sorry...', '<p class="kc-error">interaction mismatch</p>'));
    return;
  }
  const promptName = interaction.prompt.name;

  if (req.method === 'GET' && !action) {
    if (promptName === 'login') {
      send(res, 200, loginForm(uid));
      return;
    }
    if (promptName === 'consent') {
      const grantId = await autoConsent(interaction);
      await finishInteraction(req, res, { consent: { grantId } });
      return;
    }
    send(res, 400, page('We are sorry...', `<p class="kc-error">unsupported prompt ${esc(promptName)}</p>`));
    return;
  }

  if (req.method === 'POST' && action === 'login') {
    const form = new URLSearchParams(await readBody(req));
    const username = (form.get('username') || '').trim();
    const password = form.get('password') || '';
    const user = byUsername.get(username)
      || [...byUsername.values()].find((u) => u.email === username);
    if (!user || user.password !== password) {
      send(res, 200, loginForm(uid, { error: 'Invalid username or password.', username }));
      return;
    }
    // Log in and grant consent in one go.
    const interactionWithAccount = {
      ...interaction,
      session: { ...(interaction.session || {}), accountId: user.sub },
    };
    const grantId = await autoConsent(interactionWithAccount);
    await finishInteraction(req, res, {
      login: { accountId: user.sub, amr: ['pwd'], acr: '1' },
      consent: { grantId },
    });
    return;
  }
  send(res, 405, 'method not allowed', 'text/plain');
}

// ---------------------------------------------------------------- redirect-only logout
// oidc-provider always shows a confirmation form for RP-initiated logout. Keycloak (with a
// valid id_token_hint) redirects straight to the post_logout_redirect_uri, so for GET
// requests carrying id_token_hint we drive oidc-provider's own GET + confirm POST
// server-side and hand the final redirect (and cookie changes) back to the client.
function mergeCookies(cookieHeader, setCookies) {
  const jar = new Map();
  for (const part of (cookieHeader || '').split(';')) {
    const i = part.indexOf('=');
    if (i > 0) jar.set(part.slice(0, i).trim(), part.slice(i + 1).trim());
  }
  for (const sc of setCookies) {
    const first = sc.split(';')[0];
    const i = first.indexOf('=');
    if (i <= 0) continue;
    const name = first.slice(0, i).trim();
    const value = first.slice(i + 1).trim();
    if (/expires=Thu, 01 Jan 1970/i.test(sc) || value === '') jar.delete(name);
    else jar.set(name, value);
  }
  return [...jar].map(([k, v]) => `${k}=${v}`).join('; ');
}

async function handleLogoutWithHint(req, res) {
  const base = `http://${HOST}:${PORT}`;
  const headers = { [INTERNAL_HEADER]: INTERNAL_TOKEN };
  if (req.headers.cookie) headers.cookie = req.headers.cookie;
  const first = await fetch(base + req.url, { headers, redirect: 'manual' });
  const firstBody = await first.text();
  const firstCookies = first.headers.getSetCookie();
  const m = firstBody.match(/name="xsrf" value="([^"]+)"/);
  if (first.status !== 200 || !m) {
    // Error (bad hint, unregistered post_logout_redirect_uri, ...): pass it through.
    const h = { 'content-type': first.headers.get('content-type') || 'text/html' };
    if (firstCookies.length) h['set-cookie'] = firstCookies;
    if (first.headers.get('location')) h.location = first.headers.get('location');
    res.writeHead(first.status, h);
    res.end(firstBody);
    return;
  }
  const confirm = await fetch(`${base}${REALM_PATH}${KC}/logout/confirm`, {
    method: 'POST',
    redirect: 'manual',
    headers: {
      ...headers,
      'content-type': 'application/x-www-form-urlencoded',
      cookie: mergeCookies(req.headers.cookie, firstCookies),
    },
    body: new URLSearchParams({ xsrf: m[1], logout: 'yes' }).toString(),
  });
  await confirm.text();
  const location = confirm.headers.get('location');
  const allCookies = [...firstCookies, ...confirm.headers.getSetCookie()];
  const h = { 'cache-control': 'no-store' };
  if (allCookies.length) h['set-cookie'] = allCookies;
  if (location) {
    h.location = location;
    res.writeHead(302, h);
    res.end();
  } else {
    res.writeHead(confirm.status, h);
    res.end();
  }
}

// ---------------------------------------------------------------- userinfo / introspection
// oidc-provider refuses audience-restricted (aud=account) JWT access tokens at userinfo and
// refuses to introspect/revoke structured tokens; Keycloak accepts them, so we serve those
// cases ourselves.
async function handleUserinfo(req, res) {
  let token;
  const auth = req.headers.authorization || '';
  if (/^bearer /i.test(auth)) token = auth.slice(7).trim();
  if (!token && req.method === 'POST') {
    token = new URLSearchParams(await readBody(req)).get('access_token') || undefined;
  }
  const v = verifyOwnJwt(token);
  const user = v && v.payload.typ === 'Bearer' ? bySub.get(v.payload.sub) : null;
  if (!user || !String(v.payload.scope || '').split(' ').includes('openid')) {
    send(res, 401, JSON.stringify({ error: 'invalid_token', error_description: 'Token verification failed' }),
      'application/json', { 'www-authenticate': 'Bearer realm="' + REALM + '", error="invalid_token", error_description="Token verification failed"' });
    return;
  }
  sendJson(res, 200, keycloakClaims(user, v.payload.azp || CLIENT_ID));
}

async function handleTokenIntrospectOrRevoke(req, res, kind) {
  const raw = await readBody(req);
  const form = new URLSearchParams(raw);
  const token = form.get('token');
  if (!looksLikeJwt(token)) return raw; // opaque (refresh token): let oidc-provider do it
  if (!clientFromRequest(req, form)) {
    sendJson(res, 401, { error: 'invalid_client', error_description: 'Invalid client credentials' });
    return null;
  }
  if (kind === 'revoke') {
    send(res, 200, '', 'text/plain');
    return null;
  }
  const v = verifyOwnJwt(token);
  if (!v) {
    sendJson(res, 200, { active: false });
    return null;
  }
  sendJson(res, 200, {
    ...v.payload,
    client_id: v.payload.azp || v.payload.client_id,
    username: v.payload.preferred_username,
    token_type: v.payload.typ || 'Bearer',
    active: true,
  });
  return null;
}

// ---------------------------------------------------------------- HTTP front
const server = http.createServer(async (req, res) => {
  const started = Date.now();
  const internal = req.headers[INTERNAL_HEADER] === INTERNAL_TOKEN;
  const [pathname] = req.url.split('?');
  if (!internal) {
    res.on('finish', () => {
      // Path only (no query string): query strings may carry id_token_hint/code.
      console.log(`${new Date().toISOString()} ${req.method} ${pathname} ${res.statusCode} ${Date.now() - started}ms`);
    });
  }
  try {
    // --- test hooks
    if (pathname === '/_test/health') return send(res, 200, 'ok', 'text/plain');
    if (pathname === '/_test/stats' && req.method === 'GET') return sendJson(res, 200, stats);
    if (pathname === '/_test/reset' && req.method === 'POST') {
      resetStats();
      return sendJson(res, 200, stats);
    }
    if (pathname === '/_test/revoke-grants' && req.method === 'POST') {
      let revoked = 0;
      for (const id of grantIds) {
        const grant = await provider.Grant.find(id);
        if (grant) {
          await grant.destroy();
          revoked += 1;
        }
      }
      grantIds.clear();
      return sendJson(res, 200, { revoked });
    }
    // POST /_test/set-token-ttls?access=S&id=S: tokens issued from now on (refreshes too) live
    // that many seconds, so a test can let the first tokens expire fast and the refreshed ones
    // live long enough that the rest of the test cannot race their expiry.
    if (pathname === '/_test/set-token-ttls' && req.method === 'POST') {
      const q = new URLSearchParams(req.url.split('?')[1] || '');
      const secs = (k) => {
        const n = parseInt(q.get(k) || '', 10);
        return Number.isFinite(n) && n > 0 ? n : null;
      };
      const access = secs('access');
      const id = secs('id');
      if (access === null || id === null) return sendJson(res, 400, { error: 'access and id: seconds > 0' });
      ACCESS_TTL = access;
      ID_TTL = id;
      return sendJson(res, 200, { access, id });
    }
    // POST /_test/set-groups?user=NAME&groups=/a,/b: an admin changes a user's groups; tokens
    // issued from now on (refreshes too) carry the new ones.
    if (pathname === '/_test/set-groups' && req.method === 'POST') {
      const q = new URLSearchParams(req.url.split('?')[1] || '');
      const user = byUsername.get(q.get('user'));
      if (!user) return sendJson(res, 404, { error: 'no such user' });
      user.groups = (q.get('groups') || '').split(',').filter(Boolean);
      return sendJson(res, 200, { user: user.username, groups: user.groups });
    }
    // POST /_test/set-roles?user=NAME&realm=a,b&client=c,d: an admin changes a user's realm
    // and client roles; tokens issued from now on (refreshes too) carry the new ones.
    if (pathname === '/_test/set-roles' && req.method === 'POST') {
      const q = new URLSearchParams(req.url.split('?')[1] || '');
      const user = byUsername.get(q.get('user'));
      if (!user) return sendJson(res, 404, { error: 'no such user' });
      user.realm_roles = (q.get('realm') || '').split(',').filter(Boolean);
      user.client_roles = (q.get('client') || '').split(',').filter(Boolean);
      return sendJson(res, 200, { user: user.username, realm: user.realm_roles, client: user.client_roles });
    }
    // POST /_test/set-claims?user=NAME with a JSON object body: these claims replace the
    // user's own in tokens issued from now on (any value, control characters included).
    if (pathname === '/_test/set-claims' && req.method === 'POST') {
      const q = new URLSearchParams(req.url.split('?')[1] || '');
      const user = byUsername.get(q.get('user'));
      if (!user) return sendJson(res, 404, { error: 'no such user' });
      user.overrides = JSON.parse((await readBody(req)) || '{}');
      return sendJson(res, 200, { user: user.username, claims: user.overrides });
    }
    if (pathname === '/_test/fault' && req.method === 'POST') {
      const q = new URLSearchParams(req.url.split('?')[1] || '');
      if (q.get('clear')) {
        faults.clear();
        holds.forEach((h) => h.waiting.forEach((r) => r()));
        holds.clear();
        return sendJson(res, 200, { faults: {} });
      }
      const what = q.get('what');
      const kind = q.get('kind');
      if (kind === 'hold' && FAULT_WHATS.includes(what)) {
        const n = parseInt(q.get('n') || '', 10);
        if (!(n > 1)) return sendJson(res, 400, { error: 'hold needs n > 1' });
        holds.set(what, { n, waiting: [] });
        return sendJson(res, 200, { holding: what, n });
      }
      if (!FAULT_WHATS.includes(what) || !FAULT_KINDS.includes(kind)) {
        return sendJson(res, 400, { error: `what must be one of ${FAULT_WHATS}, kind one of ${FAULT_KINDS}` });
      }
      const n = q.get('n') ? parseInt(q.get('n'), 10) : null;
      faults.set(what, { kind, left: Number.isFinite(n) && n > 0 ? n : null });
      return sendJson(res, 200, { faults: Object.fromEntries(faults) });
    }
    // POST /_test/mint?kind=id|logout|refresh&user=NAME[&sid=none]: a token of this client for NAME, signed
    // with the realm key and valid (iss, aud = client, exp), shaped like the provider's other
    // tokens: an ID token as oidc-provider makes it (nonce, at_hash, no typ), a Keycloak 24+
    // logout token (header typ logout+jwt, typ Logout, events) and a Keycloak refresh token
    // (typ Refresh). oidc-provider's refresh tokens are opaque and its logout tokens go to the
    // relying party only, so tests that present them as bearer tokens take these.
    if (pathname === '/_test/mint' && req.method === 'POST') {
      const q = new URLSearchParams(req.url.split('?')[1] || '');
      const user = byUsername.get(q.get('user'));
      const kind = q.get('kind');
      if (!user || !['id', 'logout', 'refresh'].includes(kind)) {
        return sendJson(res, 400, { error: 'kind must be id, logout or refresh; user a known user' });
      }
      const now = Math.floor(Date.now() / 1000);
      const { sub } = user;
      const base = { iss: ISSUER, aud: CLIENT_ID, azp: CLIENT_ID, sub, iat: now, exp: now + 300,
        jti: crypto.randomUUID(), sid: crypto.randomUUID() };
      const claims = {
        id: { ...base, nonce: crypto.randomBytes(8).toString('hex'), at_hash: 'x'.repeat(22),
          ...keycloakClaims(user, CLIENT_ID) },
        logout: { ...base, typ: 'Logout',
          events: { 'http://schemas.openid.net/event/backchannel-logout': {} } },
        refresh: { ...base, typ: 'Refresh', scope: 'openid profile email' },
      }[kind];
      // &sid=none: a logout token with only `sub`, as from a client without "Backchannel
      // logout session required".
      if (q.get('sid') === 'none') delete claims.sid;
      const typ = kind === 'logout' ? 'logout+jwt' : 'JWT';
      const key = await importJWK(SIGNING_JWK, SIGNING.alg);
      const token = await new SignJWT(claims)
        .setProtectedHeader({ alg: SIGNING.alg, typ, kid: SIGNING_JWK.kid })
        .sign(key);
      return send(res, 200, token, 'text/plain');
    }
    if (pathname === '/_test/backchannel-logout') {
      await readBody(req);
      return send(res, 200, '', 'text/plain');
    }

    if (pathname !== REALM_PATH && !pathname.startsWith(`${REALM_PATH}/`)) {
      return send(res, 404, 'Not Found', 'text/plain');
    }
    const sub = pathname.slice(REALM_PATH.length) || '/';

    // --- interaction (login) pages
    const im = sub.match(/^\/interaction\/([^/]+)(?:\/(login))?\/?$/);
    if (im) return await handleInteraction(req, res, decodeURIComponent(im[1]), im[2]);

    if (sub === `${KC}/auth` && req.method === 'GET') {
      stats.last_authorization_request = Object.fromEntries(new URLSearchParams(req.url.split('?')[1] || ''));
    }
    if (sub === '/.well-known/openid-configuration') stats.discovery_requests += 1;
    if (sub === `${KC}/certs`) stats.jwks_requests += 1;
    if (sub === '/.well-known/openid-configuration') await holdIfAsked('discovery');
    if (sub === '/.well-known/openid-configuration' && serveFault(req, res, 'discovery')) return undefined;
    if (sub === `${KC}/certs` && serveFault(req, res, 'jwks')) return undefined;
    if (sub === `${KC}/token` && req.method === 'POST' && serveFault(req, res, 'token')) {
      stats.token_requests.faulted = (stats.token_requests.faulted || 0) + 1;
      return undefined;
    }
    if (sub === `${KC}/userinfo`) {
      stats.userinfo_requests += 1;
      if (req.method !== 'OPTIONS') return await handleUserinfo(req, res);
    }
    if (!internal && req.method === 'GET' && sub === `${KC}/logout`
      && new URLSearchParams(req.url.split('?')[1] || '').get('id_token_hint')) {
      return await handleLogoutWithHint(req, res);
    }

    let replayBody;
    if (req.method === 'POST' && (sub === `${KC}/token/introspect` || sub === `${KC}/revoke`)) {
      replayBody = await handleTokenIntrospectOrRevoke(req, res, sub.endsWith('revoke') ? 'revoke' : 'introspect');
      if (replayBody === null) return undefined;
    }

    // --- hand over to oidc-provider, mounted at the realm path (express-style mount)
    req.originalUrl = req.url;
    req.url = req.url.slice(REALM_PATH.length) || '/';
    if (replayBody !== undefined) {
      // body already consumed: give oidc-provider a parsed copy
      req.body = Object.fromEntries(new URLSearchParams(replayBody));
    }
    return await providerCallback(req, res);
  } catch (err) {
    console.error(`error handling ${req.method} ${pathname}: ${err?.stack || err}`);
    if (!res.headersSent) send(res, 500, 'internal error', 'text/plain');
    else res.end();
    return undefined;
  }
});

server.listen(PORT, HOST, () => {
  console.log(`test IdP listening: issuer=${ISSUER} client_id=${CLIENT_ID} rotate_refresh=${ROTATE_REFRESH} alg=${SIGNING.alg} numbers=${FRACTIONAL_NUMBERS ? 'fractional' : 'integer'} omit=${OMIT_FIELDS} refresh_omit=${REFRESH_OMIT_FIELDS} kid=${SIGNING_JWK.kid}`);
});

for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => {
    server.close();
    process.exit(0);
  });
}
