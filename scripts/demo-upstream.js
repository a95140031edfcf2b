// A tiny upstream for scripts/demo.sh (and tests/browser): greets the user that nginx logged in
// and lists the X-Auth-Request-* headers it received. No npm dependencies.
// Usage: node scripts/demo-upstream.js [port]   (default 8090, listens on 127.0.0.1)
'use strict';
const http = require('node:http');

const port = Number(process.argv[2] || process.env.PORT || 8090);

function esc(s) {
  return String(s).replace(/[&<>"']/g, (c) => ({
    '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;',
  })[c]);
}

// What each header carries, for the table.
const LABELS = {
  'x-auth-request-user': 'user',
  'x-auth-request-email': 'email',
  'x-auth-request-preferred-username': 'preferred_username',
  'x-auth-request-groups': 'groups',
  'x-auth-request-access-token': 'access token',
};

const STYLE = `
:root{color-scheme:light;--accent:#0b6bcb;--muted:#5f6b7a;--line:#e3e8ee}
*{box-sizing:border-box}
body{font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;margin:0;
  background:#f5f7fa;color:#1d2733}
header{background:#1d2733;color:#fff;padding:.8em 2em;display:flex;align-items:center;gap:1em}
header .brand{font-weight:600;letter-spacing:.02em}
header nav{margin-left:auto;display:flex;gap:1.2em;align-items:center}
header a{color:#cfe3ff;text-decoration:none}
header a.signout{background:#fff;color:#1d2733;padding:.35em .9em;border-radius:6px;font-weight:600}
main{max-width:960px;margin:2em auto;padding:0 2em}
.card{background:#fff;border:1px solid var(--line);border-radius:10px;padding:1.4em 1.6em;margin-bottom:1.4em}
h1{margin:.1em 0 .2em;font-size:1.7em}
p.lead{color:var(--muted);margin:0}
code{background:#eef2f6;padding:.1em .35em;border-radius:4px;font-size:.92em}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;vertical-align:top;padding:.55em .7em;border-bottom:1px solid var(--line)}
th{width:1%;white-space:nowrap;font-weight:600;padding-right:2.5em}
h2{margin:0 0 .6em;font-size:1.2em}
th small{display:block;font-weight:400;color:var(--muted)}
td{word-break:break-all}
.chips{display:flex;flex-wrap:wrap;gap:.3em}
.chip{background:#e8f1fb;color:#0b4f94;border-radius:999px;padding:.05em .6em;font-size:.88em}
.more{color:var(--muted);font-size:.88em}
footer{color:var(--muted);font-size:.88em;text-align:center;margin:2em 0}
`;

function renderValue(h, v) {
  if (h === 'x-auth-request-groups' && v) {
    const groups = v.split(',');
    const shown = groups.slice(0, 12).map((g) => `<span class="chip">${esc(g)}</span>`).join('');
    const more = groups.length > 12 ? `<span class="more">… and ${groups.length - 12} more</span>` : '';
    return `<div class="chips">${shown}${more}</div>`;
  }
  if (h === 'x-auth-request-access-token' && v.length > 40) return `<code>${esc(v.slice(0, 40))}…</code>`;
  return esc(v);
}

const server = http.createServer((req, res) => {
  const name = req.headers['x-auth-request-preferred-username'];
  const email = req.headers['x-auth-request-email'];
  const headers = Object.keys(req.headers).filter((h) => h.startsWith('x-auth-request-')).sort();
  const rows = headers.map((h) => {
    const v = String(req.headers[h]);
    const label = LABELS[h] ? `<small>${esc(LABELS[h])}</small>` : '';
    return `<tr data-header="${esc(h)}"><th>${esc(h)}${label}</th><td data-value="${esc(v)}">${renderValue(h, v)}</td></tr>`;
  }).join('\n');
  const nav = name
    ? `<span>${esc(name)}</span><a class="signout" href="/oauth2/sign_out?rd=/public/">Sign out</a>`
    : '<a href="/">Sign in</a>';
  const body = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>ngx-oidc demo</title>
<meta name="viewport" content="width=device-width,initial-scale=1">
<style>${STYLE}</style>
</head><body>
<header><span class="brand">ngx-oidc demo</span>
<nav><a href="/">Home</a><a href="/public/">Public page</a>${nav}</nav></header>
<main>
<section class="card">
<h1 id="greeting">${name ? `Hello, ${esc(name)}!` : 'Hello, stranger.'}</h1>
<p class="lead">${name
    ? `nginx logged you in${email ? ` as <strong>${esc(email)}</strong>` : ''} and told this upstream who you are.`
    : 'This page is not protected: nginx passed no identity to the upstream.'}
You asked for <code>${esc(req.method)} ${esc(req.url)}</code>.</p>
</section>
<section class="card">
<h2>Identity headers from nginx</h2>
${rows ? `<table class="identity">\n${rows}\n</table>` : '<p>None: this location is not protected.</p>'}
</section>
<footer>Served by <code>scripts/demo-upstream.js</code> behind nginx + ngx_http_oidc_module.
${name ? '<a href="/oauth2/sign_out?rd=/public/">Sign out</a>' : ''}</footer>
</main>
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
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => {
  server.close(() => process.exit(0));
  server.closeAllConnections();
});
