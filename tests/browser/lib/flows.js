// Browser steps shared by the tests: the provider's login form, cookies, fetch from a page.
'use strict';
const assert = require('node:assert/strict');

/** Waits for the provider's (Keycloak-like) login form. */
async function expectLoginForm(page, world) {
  await page.waitForSelector('#kc-form-login', { timeout: 15000 });
  assert.ok(page.url().startsWith(`http://127.0.0.1:${world.idpPort}/realms/test/`),
    `login form is served by the provider, got ${page.url()}`);
}

/** Types the credentials, submits, and waits until the browser is back on `site` (not /oauth2/). */
async function submitLogin(page, site, user, password) {
  await page.fill('#username', user);
  await page.fill('#password', password);
  await Promise.all([
    page.waitForURL((u) => u.origin === site && !u.pathname.startsWith('/oauth2/'), { timeout: 15000 }),
    page.click('#kc-login'),
  ]);
  await page.waitForLoadState('load');
}

/** The demo upstream's table of X-Auth-Request-* headers as an object. */
async function identityHeaders(page) {
  return page.$$eval('table.identity tr', (rows) => Object.fromEntries(rows.map((r) => [
    r.dataset.header, r.querySelector('td').dataset.value,
  ])));
}

/** The module's cookies in the browser: session (`_oidc`, `_oidc_1`, ...) and login state. */
async function moduleCookies(context, site) {
  const all = await context.cookies(site);
  return {
    all,
    session: all.filter((c) => /^_oidc(_\d+)?$/.test(c.name)),
    state: all.filter((c) => c.name.startsWith('_oidc_st_')),
  };
}

/** fetch() from inside the page (same origin), as a single-page app would. */
function pageFetch(page, url, headers = {}) {
  return page.evaluate(async ({ url, headers }) => {
    const r = await fetch(url, { headers, credentials: 'same-origin' });
    return {
      status: r.status,
      redirected: r.redirected,
      url: r.url,
      contentType: r.headers.get('content-type'),
      wwwAuthenticate: r.headers.get('www-authenticate'),
      body: await r.text(),
    };
  }, { url, headers });
}

/** XMLHttpRequest from inside the page, with X-Requested-With like jQuery sends. */
function pageXhr(page, url) {
  return page.evaluate((url) => new Promise((resolve) => {
    const x = new XMLHttpRequest();
    x.open('GET', url);
    x.setRequestHeader('X-Requested-With', 'XMLHttpRequest');
    x.onloadend = () => resolve({
      status: x.status, contentType: x.getResponseHeader('content-type'), body: x.responseText,
    });
    x.send();
  }), url);
}

/** Records every main-frame response (status + URL without query) for the report. */
function recordNavigation(page) {
  const hops = [];
  page.on('response', (r) => {
    if (r.request().frame() !== page.mainFrame() || !r.request().isNavigationRequest()) return;
    const u = new URL(r.url());
    hops.push(`${r.status()} ${r.request().method()} ${u.host}${u.pathname}`);
  });
  return hops;
}

module.exports = {
  expectLoginForm, submitLogin, identityHeaders, moduleCookies, pageFetch, pageXhr, recordNavigation,
};
