// Regenerates docs/demo.png: the demo page (scripts/demo-upstream.js behind nginx + the module)
// right after logging in, taken with the same headless Chromium as the tests.
// Usage: node tests/browser/demo-screenshot.js [user] [output]   (default alice, docs/demo.png)
'use strict';
const path = require('node:path');
const { ROOT, startWorld, launchBrowser } = require('./lib/world');
const { expectLoginForm, submitLogin } = require('./lib/flows');

(async () => {
  const user = process.argv[2] || 'alice';
  const out = path.resolve(process.argv[3] || path.join(ROOT, 'docs/demo.png'));
  const world = await startWorld({ name: 'demo-screenshot' });
  const browser = await launchBrowser();
  try {
    const page = await browser.newPage({ viewport: { width: 1000, height: 640 } });
    await page.goto(`${world.base}/dashboard?tab=profile`);
    await expectLoginForm(page, world);
    await submitLogin(page, world.base, user, user);
    await page.screenshot({ path: out, fullPage: true });
    console.log(`wrote ${path.relative(process.cwd(), out)} (${await browser.version()})`);
  } finally {
    await browser.close();
    await world.stop();
  }
})().catch((e) => {
  console.error(e);
  process.exit(1);
});
