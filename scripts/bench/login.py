#!/usr/bin/env python3
"""Logs in through nginx + the OpenID Provider like a browser and prints the session cookie.

Usage: login.py <protected url> <user> <password> [<cookie name>]
Prints one line: the Cookie header value holding the session (`_oidc=...; _oidc_1=...`; the
cookie name defaults to the module's `_oidc`, oauth2-proxy's is `_oauth2_proxy`).
Other scripts import `login()` (scripts/bench/soak_warmup.py logs in thousands of times).
"""
import html
import http.cookiejar
import re
import sys
import urllib.parse
import urllib.request


class LoopbackIsSecure(http.cookiejar.DefaultCookiePolicy):
    """Sends `Secure` cookies to http://127.0.0.1 as browsers do (a trustworthy origin):
    Keycloak sets its login cookies `Secure` even over http."""

    def return_ok_secure(self, cookie, request):
        host = urllib.parse.urlsplit(request.full_url).hostname
        return host in ("127.0.0.1", "localhost") or super().return_ok_secure(cookie, request)


class LoginFailed(Exception):
    """The flow did not end with a session cookie; the text says where it stopped."""


def login(start, user, password, name="_oidc"):
    """Follows the code flow from `start` as `user` and returns the session's Cookie header
    value; raises LoginFailed."""
    jar = http.cookiejar.CookieJar(LoopbackIsSecure())
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    # A page navigation: the module answers 302 to the provider (not 401).
    opener.addheaders = [("Accept", "text/html"), ("User-Agent", "ngx-oidc-bench-login")]
    with opener.open(start, timeout=20) as r:
        page = r.read().decode("utf-8", "replace")
        form_url = r.geturl()
    m = re.search(r'<form[^>]*id="kc-form-login"[^>]*>', page) or re.search(r"<form[^>]*>", page)
    if not m:
        raise LoginFailed(f"login.py: no login form at {form_url}")
    a = re.search(r'action="([^"]*)"', m.group(0))
    if not a:
        raise LoginFailed(f"login.py: the login form at {form_url} has no action")
    action = urllib.parse.urljoin(form_url, html.unescape(a.group(1)))
    body = urllib.parse.urlencode({"username": user, "password": password}).encode()
    with opener.open(action, data=body, timeout=20) as r:
        r.read()
        final = r.geturl()
        status = r.status
    cookies = {c.name: c.value for c in jar if re.fullmatch(re.escape(name) + r"(_[0-9]+)?", c.name)}
    if name not in cookies:
        raise LoginFailed(f"login.py: no {name} cookie after the login (ended at {final}, HTTP {status})")
    names = sorted(cookies, key=lambda n: 0 if n == name else int(n.split("_")[-1]))
    return "; ".join(f"{n}={cookies[n]}" for n in names)


def main():
    name = sys.argv[4] if len(sys.argv) > 4 else "_oidc"
    try:
        print(login(*sys.argv[1:4], name))
    except LoginFailed as e:
        sys.exit(str(e))


if __name__ == "__main__":
    main()
