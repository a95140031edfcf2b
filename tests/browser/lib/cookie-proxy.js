// A forward HTTP proxy for one browser context that drops some Set-Cookie headers of one site:
// a browser that refuses (some of) the module's cookies. Playwright's page.route() cannot do
// this (it does not see redirect hops) and the DevTools Fetch domain hides Set-Cookie.
// Use: const p = await startCookieProxy({ host: '127.0.0.1:8080', refuse: (name) => ... });
//      browser.newContext({ proxy: { server: p.url } })   (Playwright proxies loopback too)
'use strict';
const http = require('node:http');

function startCookieProxy({ host, refuse }) {
  const dropped = [];
  const server = http.createServer((req, res) => {
    let target;
    try {
      target = new URL(req.url); // a forward proxy gets absolute URLs
    } catch {
      res.writeHead(400).end('not a proxy request');
      return;
    }
    const headers = { ...req.headers };
    delete headers['proxy-connection'];
    const up = http.request({
      host: target.hostname, port: target.port || 80, method: req.method,
      path: target.pathname + target.search, headers,
    }, (upRes) => {
      const out = { ...upRes.headers };
      if (target.host === host && out['set-cookie']) {
        out['set-cookie'] = out['set-cookie'].filter((c) => {
          const name = c.split('=')[0].trim();
          if (!refuse(name)) return true;
          dropped.push(name);
          return false;
        });
      }
      res.writeHead(upRes.statusCode, out);
      upRes.pipe(res);
    });
    up.on('error', (e) => res.writeHead(502).end(String(e)));
    req.pipe(up);
  });
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => {
      resolve({
        url: `http://127.0.0.1:${server.address().port}`,
        dropped,
        close: () => new Promise((r) => { server.close(r); server.closeAllConnections(); }),
      });
    });
  });
}

module.exports = { startCookieProxy };
