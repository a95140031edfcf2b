// An HTTPS listener with `http2 on`: Chromium logs in over HTTP/2 (it trusts the test server's
// key), and a session too big for one cookie opens from its chunks, which Chromium sends over
// HTTP/2 as separate cookie fields ("crumbs", RFC 9113 8.2.3) that nginx joins.
'use strict';
const { before, after } = require('node:test');
const assert = require('node:assert/strict');
const { startWorld, launchBrowser, storyTeller } = require('../lib/world');
const { expectLoginForm, submitLogin, identityHeaders, moduleCookies, pageFetch } = require('../lib/flows');

let world;
let browser;

before(async () => {
  world = await startWorld({ name: 'http2', cookieSecure: true, tls: true });
  browser = await launchBrowser({ spki: world.spki });
});

after(async () => {
  await browser?.close();
  await world?.stop();
});

const story = storyTeller(() => ({ browser, world }));

/** The protocol the page's own navigation was fetched with ('h2' for HTTP/2). */
const protocol = (page) => page.evaluate(() => performance.getEntriesByType('navigation')[0].nextHopProtocol);

for (const [user, chunked] of [['demo', false], ['chunky', true]]) {
  story(`over https with HTTP/2 ${user} logs in${chunked ? ' with a chunked session' : ''}`, async ({ context, page, shot }) => {
    await page.goto(`${world.base}/secure/page?h2=1`);
    await expectLoginForm(page, world);
    await submitLogin(page, world.base, user, user);
    await shot(page, 'logged in');
    assert.equal(page.url(), `${world.base}/secure/page?h2=1`);
    assert.equal(await protocol(page), 'h2', 'the page came over HTTP/2');
    assert.equal(await page.textContent('#greeting'), `Hello, ${user}!`);

    const { session } = await moduleCookies(context, world.base);
    if (chunked) assert.ok(session.length >= 3, `a chunked session: ${session.map((c) => c.name)}`);
    for (const c of session) assert.equal(c.secure, true, `${c.name} is Secure over https`);

    // The next page and an API call from the page open the session from the cookies alone.
    await page.goto(`${world.base}/secure/again`);
    assert.equal(await protocol(page), 'h2');
    assert.equal((await identityHeaders(page))['x-auth-request-user'], user);
    const api = await pageFetch(page, '/secure/api', { Accept: 'application/json' });
    assert.equal(api.status, 200, api.body);
  });
}
