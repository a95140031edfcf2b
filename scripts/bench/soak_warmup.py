#!/usr/bin/env python3
"""The warm-up of scripts/soak.sh: brings every nginx worker to the state the soak keeps it in,
so that the heap measured after it grows only if something leaks.

- Fills every worker's session cache (src/session/cache.rs: 512 direct-mapped slots per provider
  and worker, each entry ≈ 7 KiB with a 1.5 KB cookie, so ≈ 3.5 MiB once full): SESSIONS
  distinct logins, each cookie sent to every worker right after its login. After n distinct
  sessions a slot is still empty with probability (1 - 1/512)^n: for 2048, 1.8 % — about 9
  slots, ≈ 65 KiB that the soak may still fill, against its 1 MiB limit.
- Runs every path of the soak once in every worker: a request with a session, a refresh (and
  the pre-refresh cookie on every other worker, which takes the stored result), a garbage
  cookie, and with SIGNOUT a sign-out on each worker of the first node, refused afterwards by
  every worker of every node.
- Holds PEAK connections on every worker at once, each with a request whose headers (a session
  cookie, which needs a large header buffer) are half sent: more than the soak's load can put
  on one worker, so that connection and request memory is at its high-water mark already
  (which worker accept() gives the load's connections to is luck; a worker that got few in
  the warm-up grew by ~0.4 MiB when the load gave it more).

Each worker is reached through a `reuseport` listener of its node (one socket per worker, the
kernel spreads connections by their addresses): connections are opened until every worker pid
given answers `GET /_soak/worker` on one of them, and every request below goes over those.

Usage: soak_warmup.py <login URL> <users> <sessions> <due> <signout> <peak> <out> <node>...
  login URL  a protected page on the first node's warm-up listener (logins go there)
  users      comma-separated; each one's password is its name
  sessions   distinct logins for the fill (SESSIONS above)
  due        seconds after a login until its access token is due for refresh
  signout    1: the sign-out path too (two nodes), 0: not
  peak       connections to hold on every worker at once (PEAK above)
  out        the JSON summary to write
  node       <warm-up port>:<worker pid>,<worker pid>... one per nginx node, the first node first
"""
import base64
import http.client
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from login import login  # noqa: E402

PAGE = "/index.html"


class Worker:
    """A keep-alive connection that nginx worker `pid` serves."""

    def __init__(self, node, pid, conn):
        self.node, self.pid, self.conn = node, pid, conn
        self.requests = 0

    def get(self, path, cookie, accept="application/json"):
        hdr = {"Accept": accept}
        if cookie:
            hdr["Cookie"] = cookie
        self.conn.request("GET", path, headers=hdr)
        r = self.conn.getresponse()
        r.read()
        self.requests += 1
        return r


def worker_connection(port):
    """A new connection to the node on `port`, and the pid of the worker that accepted it."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/_soak/worker")
    r = conn.getresponse()
    return int(r.read().decode().strip()), conn


def pin_workers(node_index, port, pids, deadline_s=30):
    """One connection per worker of the node on `port`."""
    want, pinned, end = set(pids), {}, time.time() + deadline_s
    while set(pinned) != want:
        if time.time() > end:
            sys.exit(f"soak_warmup: reached workers {sorted(pinned)} of {sorted(want)} on port {port}")
        pid, conn = worker_connection(port)
        if pid in want and pid not in pinned:
            pinned[pid] = Worker(node_index, pid, conn)
        else:
            conn.close()
    return [pinned[p] for p in pids]


def hold_peak(port, pids, per_worker, cookie, deadline_s=60):
    """PEAK (see above) on the node on `port`; returns once every held request was answered."""
    head = f"GET {PAGE} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: application/json\r\nCookie: {cookie}\r\n"
    held, end = {p: [] for p in pids}, time.time() + deadline_s
    while any(len(c) < per_worker for c in held.values()):
        if time.time() > end:
            sys.exit(f"soak_warmup: held {[len(c) for c in held.values()]} connections of {per_worker} per worker on port {port}")
        pid, conn = worker_connection(port)
        if len(held.get(pid, [None] * per_worker)) < per_worker:
            conn.sock.sendall(head.encode())
            held[pid].append(conn)
        else:
            conn.close()
    for pid, conns in held.items():
        for conn in conns:
            conn.sock.sendall(b"\r\n")
            r = http.client.HTTPResponse(conn.sock)
            r.begin()
            r.read()
            if r.status != 200:
                sys.exit(f"soak_warmup: a held request on worker {pid}: HTTP {r.status}")
            conn.close()


def expect(worker, r, status, what):
    if r.status != status:
        sys.exit(f"soak_warmup: {what} on worker {worker.pid}: HTTP {r.status}, expected {status}")


def session_cookie(r):
    """The `_oidc` value of a response's Set-Cookie, if it sets one."""
    for k, v in r.getheaders():
        if k.lower() == "set-cookie" and v.startswith("_oidc="):
            return v.split(";", 1)[0]
    return None


def garbage_like(cookie):
    """A cookie of the same name and size that no key opens."""
    name, _, value = cookie.split(";", 1)[0].partition("=")
    junk = base64.urlsafe_b64encode(os.urandom(len(value))).decode().rstrip("=")
    return f"{name}=v1.{junk[: len(value) - 3]}"


def main():
    login_url, users, sessions, due_s, signout, peak, out = sys.argv[1:8]
    users, sessions, due_s, peak = users.split(","), int(sessions), float(due_s), int(peak)
    nodes = [(int(port), [int(p) for p in pids.split(",")]) for port, pids in (n.split(":") for n in sys.argv[8:])]
    workers = []
    for i, (port, pids) in enumerate(nodes):
        workers += pin_workers(i, port, pids)
    started = time.time()

    def new_session(i):
        u = users[i % len(users)]
        return time.time(), login(login_url, u, u)

    # The fill: every cookie sent to every worker as soon as it exists (long before its refresh
    # is due). One login at a time: two callbacks in one worker whose discovery cache is still
    # cold can mix up their provider answers (one read the other's discovery document as its
    # token response, a 502), which is not what this soak is about.
    fill_s = time.time()
    for i in range(sessions):
        cookie = new_session(i)[1]
        for w in workers:
            expect(w, w.get(PAGE, cookie), 200, "a fresh session")
    fill_s = time.time() - fill_s

    # One session per worker, which that worker refreshes once it is due (logged in after the
    # fill: oidc-provider's memory adapter keeps its last 1000 objects: the fill's first grants are gone).
    to_refresh = [new_session(i) for i in range(len(workers))]

    garbage = garbage_like(to_refresh[0][1])
    for w in workers:
        expect(w, w.get(PAGE, garbage), 401, "a garbage cookie")

    signouts = 0
    if signout == "1":
        for w in (w for w in workers if w.node == 0):
            cookie = new_session(signouts)[1]
            for other in workers:
                expect(other, other.get(PAGE, cookie), 200, "a session before its sign-out")
            w.get("/oauth2/sign_out", cookie)
            signouts += 1
            for other in workers:
                end = time.time() + 1
                while other.get(PAGE, cookie).status != 401:
                    if time.time() > end:
                        sys.exit(f"soak_warmup: worker {other.pid} accepts a cookie 1 s after its sign-out")
                    time.sleep(0.005)

    # A refresh in every worker; the pre-refresh cookie then works everywhere else, and so does
    # the refreshed one.
    for w, (t0, cookie) in zip(workers, to_refresh):
        end = t0 + due_s + 10
        while True:
            r = w.get(PAGE, cookie)
            expect(w, r, 200, "a session due for refresh")
            refreshed = session_cookie(r)
            if refreshed:
                break
            if time.time() > end:
                sys.exit(f"soak_warmup: worker {w.pid} did not refresh a session {due_s:.0f} s old")
            time.sleep(0.25)
        for other in workers:
            if other is not w:
                expect(other, other.get(PAGE, cookie), 200, "a pre-refresh cookie")
            expect(other, other.get(PAGE, refreshed), 200, "a refreshed cookie")

    for w in workers:
        w.conn.close()
    for port, pids in nodes:
        hold_peak(port, pids, peak, refreshed)

    summary = {
        "seconds": round(time.time() - started, 1),
        "fill_seconds": round(fill_s, 1),
        "sessions_per_worker": sessions + len(workers) + signouts,
        "refreshes": len(workers),
        "signouts": signouts,
        "peak_connections_per_worker": peak,
        "requests_per_worker": {str(w.pid): w.requests for w in workers},
    }
    json.dump(summary, open(out, "w"))
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
