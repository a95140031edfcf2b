// Headless Chromium against nginx + ngx_http_oidc_module + a real Keycloak (scripts/keycloak.sh,
// realm tests/keycloak/realm-test.json): the user logs in on Keycloak's own login page.
'use strict';
const { before, after } = require('node:test');
const assert = require('node:assert/strict');
const { startWorld, startKeycloak, launchBrowser, storyTeller } = require('../lib/world');
const {
  expectLoginForm, submitLogin, identityHeaders, moduleCookies, recordNavigation,
} = require('../lib/flows');

let keycloak;
let world;
let browser;

// Keycloak's first start on 2 cores takes a minute or two.
before(async () => {
  keycloak = await startKeycloak();
  world = await startWorld({ name: 'keycloak', keycloak: keycloak.env });
  browser = await launchBrowser();
}, { timeout: 15 * 60 * 1000 });

after(async () => {
  await browser?.close();
  await world?.stop();
  await keycloak?.stop();
});

const story = storyTeller(() => ({ browser, world }));

story('a user logs in on the real Keycloak login page and the upstream shows who they are',
  async ({ t, context, page, shot }) => {
    const hops = recordNavigation(page);
    await page.goto(`${world.base}/deep/link?x=1`);
    await expectLoginForm(page, world);
    assert.match(await page.title(), /Sign in to ngx-oidc tests/, 'Keycloak\'s own page for the realm');
    await shot(page, 'Keycloak login page');

    await submitLogin(page, world.base, 'alice', 'alice');
    await shot(page, 'back on the deep link');
    t.diagnostic(`redirects: ${hops.join(' -> ')}`);

    assert.equal(page.url(), `${world.base}/deep/link?x=1`);
    const h = await identityHeaders(page);
    assert.equal(h['x-auth-request-user'], 'alice');
    assert.equal(h['x-auth-request-email'], 'alice@example.com');
    assert.equal(h['x-auth-request-groups'], '/admins,/admins/security');
    const c = await moduleCookies(context, world.base);
    assert.ok(c.session.length >= 1, 'session cookie set');
    assert.equal(c.state.length, 0, 'the login-state cookie is gone after the callback');

    await page.goto(`${world.base}/another/page`);
    assert.equal((await identityHeaders(page))['x-auth-request-user'], 'alice');
  });
