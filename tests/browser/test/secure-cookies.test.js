// `cookie_secure on` (the module's default) over plain http: Chromium treats http://localhost
// (and http://127.0.0.1) as a potentially trustworthy origin and keeps Secure cookies there.
// On localhost the provider (http://127.0.0.1:<idp>) is also another *site*, so the way back from
// the provider is a real cross-site top-level redirect: the SameSite=Lax login-state cookie must
// still be sent with it.
'use strict';
const { before, after } = require('node:test');
const assert = require('node:assert/strict');
const { startWorld, launchBrowser, storyTeller } = require('../lib/world');
const { expectLoginForm, submitLogin, identityHeaders, moduleCookies, pageFetch, recordNavigation } = require('../lib/flows');

let world;
let browser;

before(async () => {
  world = await startWorld({ name: 'secure-cookies', cookieSecure: true });
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await world?.stop();
});

const story = storyTeller(() => ({ browser, world }));

for (const host of ['localhost', '127.0.0.1']) {
  const name = `on http://${host} a user logs in with Secure cookies (cookie_secure on)`;
  story(name, async ({ t, context, page, shot }) => {
    const site = `http://${host}:${world.port}`;
    const hops = recordNavigation(page);
    await page.goto(`${site}/secure/page?y=2`);
    await expectLoginForm(page, world);
    await shot(page, 'provider login form');
    const { state } = await moduleCookies(context, site);
    assert.equal(state.length, 1, 'the Secure login-state cookie was kept over http');
    assert.equal(state[0].secure, true);

    await submitLogin(page, site, 'demo', 'demo');
    await shot(page, 'logged in');
    t.diagnostic(`redirects: ${hops.join(' -> ')}`);
    assert.equal(page.url(), `${site}/secure/page?y=2`);
    assert.equal(await page.textContent('#greeting'), 'Hello, demo!');
    assert.equal((await identityHeaders(page))['x-auth-request-email'], 'demo@example.com');

    const c = await moduleCookies(context, site);
    assert.ok(c.session.length >= 1);
    for (const k of c.session) {
      assert.equal(k.secure, true, `${k.name} Secure`);
      assert.equal(k.httpOnly, true);
      assert.equal(k.sameSite, 'Lax');
    }
    assert.equal(c.state.length, 0);

    // Sign-out deletes Secure cookies too (the deleting Set-Cookie must carry Secure as well).
    await page.goto(`${site}/oauth2/sign_out?rd=/public/`);
    await shot(page, 'signed out');
    assert.deepEqual((await moduleCookies(context, site)).session.map((k) => k.name), []);
    assert.equal((await pageFetch(page, '/secure/page')).status, 401);
  });
}
