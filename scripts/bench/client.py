#!/usr/bin/env python3
"""Exactly N keep-alive GET requests (for the callgrind runs of scripts/bench.sh).

Usage: client.py wait <port> [timeout seconds]
       client.py get <port> <path> <n> <expected status> [Cookie header value]
"""
import http.client
import socket
import sys
import time


def wait(port, timeout):
    end = time.time() + timeout
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    sys.exit(f"client.py: nothing listens on 127.0.0.1:{port} after {timeout}s")


def get(port, path, n, expected, cookie):
    headers = {"Accept": "application/json"}
    if cookie:
        headers["Cookie"] = cookie
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    for i in range(n):
        conn.request("GET", path, headers=headers)
        r = conn.getresponse()
        r.read()
        if r.status != expected:
            sys.exit(f"client.py: request {i + 1} got HTTP {r.status}, expected {expected}")
    conn.close()


if __name__ == "__main__":
    a = sys.argv[1:]
    if a[0] == "wait":
        wait(int(a[1]), float(a[2]) if len(a) > 2 else 60)
    else:
        get(int(a[1]), a[2], int(a[3]), int(a[4]), a[5] if len(a) > 5 else "")
