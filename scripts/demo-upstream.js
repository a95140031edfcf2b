// A tiny upstream for scripts/demo.sh: greets the user that nginx logged in and lists the
// X-Auth-Request-* headers it received. No npm dependencies.
// Usage: node scripts/demo-upstream.js [port]   (default 8090, listens on 127.0.0.1)
'use strict';
const http = require('node:http');

const port = Number(process.argv[2] || process.env.PORT || 8090);

function esc(s) {
  return String(s).replace(/[&<>"']/g, (c) => ({
    '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;',
  })[c]);
}

const server = http.createServer((req, res) => {
  const name = req.headers['x-auth-request-preferred-username'];
  const rows = Object.keys(req.headers)
    .filter((h) => h.startsWith('x-auth-request-'))
    .sort()
    .map((h) => `<tr><th>${esc(h)}</th><td>${esc(req.headers[h])}</td></tr>`)
    .join('\n');
  const body = `<!doctype html>
<html><head><meta charset="utf-8"><title>ngx-oidc demo</title>
<style>body{font-family:sans-serif;margin:2em}th{text-align:left;padding-right:1em}</style>
</head><body>
<h1>${name ? `Hello, ${esc(name)}!` : 'Hello, stranger.'}</h1>
<p>You asked for <code>${esc(req.method)} ${esc(req.url)}</code>.</p>
<h2>Identity headers from nginx</h2>
${rows ? `<table>\n${rows}\n</table>` : '<p>None: this location is not protected.</p>'}
<p><a href="/oauth2/sign_out">Sign out</a> · <a href="/public/">a public page</a></p>
</body></html>
`;
  res.writeHead(200, {
    'Content-Type': 'text/html; charset=utf-8',
    'Content-Length': Buffer.byteLength(body),
    'Cache-Control': 'no-store',
  });
  res.end(body);
});

server.listen(port, '127.0.0.1', () => {
  console.log(`demo upstream on http://127.0.0.1:${port}/`);
});
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => server.close(() => process.exit(0)));
