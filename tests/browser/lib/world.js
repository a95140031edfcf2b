// Harness for the browser tests: starts the test OpenID Provider (tests/idp/server.js), the demo
// upstream (scripts/demo-upstream.js) and nginx with the module (nginx-conf/demo.conf rendered
// like scripts/demo.sh does) on free ports, plus headless Chromium (Debian's /usr/bin/chromium,
// driven by playwright-core; never a downloaded browser).
//
// Env: NGX_OIDC_NGINX, NGX_OIDC_MODULE (default target/ngx-oidc/...), CHROMIUM (default
// /usr/bin/chromium), NGX_OIDC_BROWSER_OUT (default target/browser: screenshots and logs).
'use strict';
const { execFileSync, spawn } = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const net = require('node:net');
const tls = require('node:tls');
const path = require('node:path');
const { test } = require('node:test');
const { chromium } = require('playwright-core');

const ROOT = path.resolve(__dirname, '..', '..', '..');
const TARGET = process.env.CARGO_TARGET_DIR || path.join(ROOT, 'target');
const OUT = process.env.NGX_OIDC_BROWSER_OUT || path.join(TARGET, 'browser');
const NGINX = process.env.NGX_OIDC_NGINX || path.join(TARGET, 'ngx-oidc/sbin/nginx');
const MODULE = process.env.NGX_OIDC_MODULE
  || path.join(TARGET, 'ngx-oidc/modules/ngx_http_oidc_module.so');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function slug(s) {
  return String(s).toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-|-$/g, '').slice(0, 60);
}

function tail(file, n = 30) {
  try {
    return fs.readFileSync(file, 'utf8').split('\n').slice(-n - 1).join('\n');
  } catch (e) {
    return `<${e.message}>`;
  }
}

async function waitHttp(url, what, child, timeoutMs = 20000) {
  const start = Date.now();
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`${what} exited (${child.exitCode ?? child.signalCode}) during startup`);
    }
    try {
      const r = await fetch(url, { redirect: 'manual' });
      if (r.status < 500) return;
    } catch { /* not up yet */ }
    if (Date.now() - start > timeoutMs) throw new Error(`${what} did not answer at ${url}`);
    await sleep(100);
  }
}

/** Waits until a TLS handshake with `port` succeeds, verifying the server against `ca` (PEM). */
async function waitTls(port, ca, what, child, timeoutMs = 20000) {
  const start = Date.now();
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`${what} exited (${child.exitCode ?? child.signalCode}) during startup`);
    }
    const ok = await new Promise((resolve) => {
      const s = tls.connect({ host: '127.0.0.1', port, ca, servername: 'localhost' }, () => {
        s.end();
        resolve(true);
      });
      s.on('error', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() - start > timeoutMs) throw new Error(`${what} did not answer TLS on ${port}`);
    await sleep(100);
  }
}

/**
 * A throwaway CA and a server certificate for 127.0.0.1 and localhost in `dir` (the `openssl`
 * command, as scripts/keycloak.sh does). `spki` is the base64 SHA-256 of the server's public
 * key, for Chromium's `--ignore-certificate-errors-spki-list` (it trusts that key only).
 */
function makeTestTls(dir) {
  const run = (...args) => execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
  fs.writeFileSync(path.join(dir, 'san.cnf'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\n');
  run('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', '/CN=ngx-oidc test CA',
    '-keyout', 'ca.key', '-out', 'ca.pem');
  run('req', '-newkey', 'rsa:2048', '-nodes', '-subj', '/CN=127.0.0.1', '-keyout', 'server.key',
    '-out', 'server.csr');
  run('x509', '-req', '-in', 'server.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial',
    '-days', '2', '-extfile', 'san.cnf', '-out', 'server.pem');
  const cert = new crypto.X509Certificate(fs.readFileSync(path.join(dir, 'server.pem')));
  const der = cert.publicKey.export({ type: 'spki', format: 'der' });
  return {
    ca: fs.readFileSync(path.join(dir, 'ca.pem')),
    cert: path.join(dir, 'server.pem'),
    key: path.join(dir, 'server.key'),
    spki: crypto.createHash('sha256').update(der).digest('base64'),
  };
}

/** `KEY=value` lines of a scripts/keycloak.sh `keycloak.env` as an object. */
function readEnvFile(file) {
  return Object.fromEntries(fs.readFileSync(file, 'utf8').split('\n')
    .filter((l) => l.includes('=')).map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]));
}

/**
 * A real Keycloak (scripts/keycloak.sh, realms from tests/keycloak/): the one of the test run
 * when `NGX_OIDC_KEYCLOAK_ENV` names its keycloak.env (scripts/test.sh), else one of our own
 * under target/browser/run/keycloak-server. Returns its settings and `stop()` (a no-op for the
 * run's).
 */
async function startKeycloak() {
  if (process.env.NGX_OIDC_KEYCLOAK_ENV) {
    return { env: readEnvFile(process.env.NGX_OIDC_KEYCLOAK_ENV), stop: async () => {} };
  }
  const dir = path.join(OUT, 'run', 'keycloak-server');
  const script = path.join(ROOT, 'scripts/keycloak.sh');
  const run = (args) => new Promise((resolve, reject) => {
    const child = spawn(script, args, {
      env: { ...process.env, NGX_OIDC_KEYCLOAK_OWNER_PID: String(process.pid) },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let err = '';
    child.stderr.on('data', (d) => { err += d; });
    child.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`keycloak.sh ${args[0]}: ${err}`))));
  });
  await run(['start', dir]);
  return { env: readEnvFile(path.join(dir, 'keycloak.env')), stop: () => run(['stop', dir]) };
}

/**
 * Starts provider + upstream + nginx. Options:
 *   name          a label for the output dir (target/browser/run/<name>)
 *   cookieSecure  false (default): `cookie_secure off`; true: `cookie_secure on`
 *   keycloak      the `env` of startKeycloak(): a real Keycloak (realm test, client test) is the
 *                 provider instead of the stand-in tests/idp
 *   tls           false (default): plain http; true: `listen ... ssl` with `http2 on` and a test
 *                 CA's certificate (`world.spki` for launchBrowser), sites are https://
 */
async function startWorld({ name = 'world', cookieSecure = false, keycloak = null, tls: https = false } = {}) {
  for (const f of [NGINX, MODULE]) {
    if (!fs.existsSync(f)) throw new Error(`${f} not found: run scripts/build.sh first`);
  }
  const dir = path.join(OUT, 'run', slug(name));
  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(path.join(dir, 'tmp'), { recursive: true });
  const port = await freePort();
  const idpPort = keycloak ? Number(keycloak.KC_HTTP_PORT) : await freePort();
  const upstreamPort = await freePort();
  const children = [];
  const scheme = https ? 'https' : 'http';
  const testTls = https ? makeTestTls(dir) : null;
  const world = {
    dir, port, idpPort, upstreamPort,
    base: `${scheme}://127.0.0.1:${port}`,
    localBase: `${scheme}://localhost:${port}`,
    spki: testTls?.spki,
    issuer: `http://127.0.0.1:${idpPort}/realms/test`,
    logs: {
      idp: path.join(dir, 'idp.log'),
      upstream: path.join(dir, 'upstream.log'),
      nginx: path.join(dir, 'error.log'),
      access: path.join(dir, 'access.log'),
    },
  };
  const spawnLogged = (cmd, args, env, log) => {
    const fd = fs.openSync(log, 'a');
    const child = spawn(cmd, args, { cwd: ROOT, env: { ...process.env, ...env }, stdio: ['ignore', fd, fd] });
    fs.closeSync(fd);
    children.push(child);
    return child;
  };

  world.stop = async () => {
    for (const c of children.slice().reverse()) {
      if (c.exitCode !== null || c.signalCode !== null) continue;
      const done = new Promise((r) => c.once('exit', r));
      c.kill(c === world.nginxProc ? 'SIGQUIT' : 'SIGTERM');
      const t = setTimeout(() => c.kill('SIGKILL'), 5000);
      await done;
      clearTimeout(t);
    }
  };
  world.diagnostics = () => [
    `---- nginx error.log (${world.logs.nginx})`, tail(world.logs.nginx),
    `---- provider log (${world.logs.idp})`, tail(world.logs.idp),
  ].join('\n');

  try {
    const keys = path.join(dir, 'cookie-keys');
    fs.writeFileSync(keys, crypto.randomBytes(32).toString('base64') + '\n', { mode: 0o600 });

    const sites = [world.base, world.localBase];
    const upstream = spawnLogged('node', [path.join(ROOT, 'scripts/demo-upstream.js'), String(upstreamPort)],
      {}, world.logs.upstream);
    const ready = [waitHttp(`http://127.0.0.1:${upstreamPort}/`, 'the demo upstream', upstream)];
    if (keycloak) {
      world.logs.idp = keycloak.KC_LOG;
    } else {
      const idp = spawnLogged('node', [path.join(ROOT, 'tests/idp/server.js')], {
        IDP_PORT: String(idpPort), IDP_REALM: 'test', IDP_CLIENT_ID: 'test', IDP_CLIENT_SECRET: 'secret',
        IDP_REDIRECT_URIS: sites.map((s) => `${s}/oauth2/callback`).join(','),
        IDP_POST_LOGOUT_REDIRECT_URIS: sites.flatMap((s) => [`${s}/`, `${s}/public/`]).join(","),
      }, world.logs.idp);
      ready.push(waitHttp(`http://127.0.0.1:${idpPort}/_test/health`, 'the test provider', idp));
    }
    await Promise.all(ready);

    // Same rendering as scripts/demo.sh, so the tests also cover the demo's config.
    let conf = fs.readFileSync(path.join(ROOT, 'nginx-conf/demo.conf'), 'utf8')
      .replaceAll('@MODULE@', MODULE)
      .replaceAll('@PREFIX@', dir)
      .replaceAll('@USER@', process.getuid && process.getuid() === 0 ? 'user root;' : '')
      .replaceAll('@PORT@', String(port))
      .replaceAll('@IDP_PORT@', String(idpPort))
      .replaceAll('@UPSTREAM_PORT@', String(upstreamPort));
    conf = conf.replace(/cookie_secure\s+\w+;/, `cookie_secure ${cookieSecure ? 'on' : 'off'};`);
    if (keycloak) conf = conf.replace(/client_secret\s+\S+;/, 'client_secret test-client-secret;');
    if (testTls) {
      conf = conf.replace(`listen 127.0.0.1:${port};`, `listen 127.0.0.1:${port} ssl;
        http2 on;
        ssl_certificate ${testTls.cert};
        ssl_certificate_key ${testTls.key};`);
    }
    const confFile = path.join(dir, 'nginx.conf');
    fs.writeFileSync(confFile, conf);
    const nginx = spawnLogged(NGINX, ['-p', `${dir}/`, '-e', world.logs.nginx, '-c', confFile], {},
      path.join(dir, 'nginx.stderr'));
    world.nginxProc = nginx;
    if (testTls) await waitTls(port, testTls.ca, 'nginx', nginx);
    else await waitHttp(`${world.base}/public/`, 'nginx', nginx);
  } catch (e) {
    const diag = world.diagnostics();
    await world.stop();
    e.message += `\n${diag}\n---- nginx stderr\n${tail(path.join(dir, 'nginx.stderr'))}`;
    throw e;
  }
  return world;
}

/**
 * Headless Debian Chromium with a fresh profile (Playwright makes a temp user-data-dir).
 * `spki` (a world's `spki`): trust the test server's key, as a machine with the test CA would.
 */
async function launchBrowser({ spki = null } = {}) {
  if (!fs.existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} not found: apt-get install chromium`);
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      '--disable-dev-shm-usage',
      ...(spki ? [`--ignore-certificate-errors-spki-list=${spki}`] : []),
    ],
  });
}

/** A screenshot helper for one test: shot('step name') → target/browser/<test>/<nn>-<step>.png */
function shooter(testName) {
  const dir = path.join(OUT, slug(testName));
  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(dir, { recursive: true });
  let n = 0;
  return async (page, step) => {
    n += 1;
    const file = path.join(dir, `${String(n).padStart(2, '0')}-${slug(step)}.png`);
    await page.screenshot({ path: file, fullPage: true }).catch(() => {});
    return file;
  };
}

/**
 * `story(name, fn, opts)` defines a test that runs `fn({ t, context, page, shot })` in a fresh
 * browser context (empty cookie jar); on failure it saves a screenshot and adds the server logs.
 * `env()` gives `{ browser, world }` once the file's `before` hook has made them.
 * `opts.contextOptions`, an async function, gives extra `browser.newContext` options.
 */
function storyTeller(env) {
  return function story(name, fn, opts = {}) {
    const { contextOptions, ...testOptions } = opts;
    test(name, testOptions, async (t) => {
      const { browser, world } = env();
      const extra = typeof contextOptions === 'function' ? await contextOptions() : {};
      const context = await browser.newContext({ viewport: { width: 1000, height: 700 }, ...extra });
      const page = await context.newPage();
      const shot = shooter(name);
      try {
        await fn({ t, context, page, shot });
      } catch (e) {
        await shot(page, 'failure');
        e.message += `\n(page at ${page.url()})\n${world.diagnostics()}`;
        throw e;
      } finally {
        await context.close();
      }
    });
  };
}

module.exports = {
  ROOT, OUT, CHROMIUM, startWorld, startKeycloak, launchBrowser, storyTeller, slug, sleep,
};
