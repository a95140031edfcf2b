#!/usr/bin/env bash
# Soak (issue 6, "Load"): SOAK_SECONDS of load on nginx (2 workers) with the module, against
# two test OpenID Providers:
#   short  access/ID tokens live IDP_TTL s (20), `refresh_leeway` LEEWAY s (5): sessions refresh
#          every TTL-LEEWAY s. One python client per user (demo, alice, bob) loops GETs and
#          follows Set-Cookie like a browser (a refreshed cookie replaces the old one).
#   long   tokens live a day: wrk at full speed with one valid session (raw throughput), and a
#          second wrk with garbage session cookies (expects 401 on every request).
# Every 30 s: each worker's RSS (VmRSS) and open fds (/proc/PID/fd). At the end, checks:
#   zero non-2xx and zero socket errors for valid sessions; every invalid-cookie request a 401;
#   RSS growth < 1 MiB per worker after warm-up (first sample); idle fd count the same before
#   and after;
#   refresh_token calls at the short provider within ±(1 per user) of users*elapsed/(TTL-LEEWAY);
#   no [alert] / crashed worker in error.log.
# Results: target/soak/summary.txt (+ samples.tsv, raw wrk output, logs in target/soak/run/).
#
# Environment: SOAK_SECONDS (600), SOAK_CONNECTIONS (16, per wrk), SOAK_TTL (20),
#   SOAK_LEEWAY (5), SOAK_SAMPLE (30 s), NGX_OIDC_SKIP_BUILD=1 uses the last build as is.
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"
cd "$NGX_OIDC_ROOT"

secs="${SOAK_SECONDS:-600}"
conns="${SOAK_CONNECTIONS:-16}"
ttl="${SOAK_TTL:-20}"
leeway="${SOAK_LEEWAY:-5}"
sample_every="${SOAK_SAMPLE:-30}"
users=(demo alice bob)
[ "$ttl" -gt "$leeway" ] || die "SOAK_TTL must be larger than SOAK_LEEWAY"

out="$NGX_OIDC_TARGET/soak"
run="$out/run"
helpers="$NGX_OIDC_ROOT/scripts/bench"

build_unless_skipped
ensure_idp_deps
ensure_commands wrk python3

rm -rf "$run" "$out/raw"
mkdir -p "$run/tmp" "$run/html" "$out/raw"
copy_binaries "$run"
printf '%s\n' '<!doctype html><title>ngx-oidc soak</title><p>soak' >"$run/html/index.html"
path=/index.html
(umask 077 && head -c 32 /dev/urandom | base64 >"$run/cookie-keys")

read -r P_S P_L P_IDS P_IDL < <(free_ports 4)

idp_s="" idp_l="" nginx_pid="" bg_pids=()
cleanup() {
    trap - INT TERM EXIT
    local p
    for p in "${bg_pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    if [ -n "$nginx_pid" ]; then kill -QUIT "$nginx_pid" 2>/dev/null || true; fi
    if [ -n "$idp_s" ]; then kill -TERM "$idp_s" 2>/dev/null || true; fi
    if [ -n "$idp_l" ]; then kill -TERM "$idp_l" 2>/dev/null || true; fi
    wait 2>/dev/null || true
}
trap cleanup EXIT
trap 'cleanup; exit 130' INT TERM
say "starting the providers: short TTL ${ttl}s on $P_IDS, long TTL on $P_IDL"
start_test_idp "$P_IDS" "$P_S" "$ttl" "$run/idp-short.log"
idp_s=$!
start_test_idp "$P_IDL" "$P_L" 86400 "$run/idp-long.log"
idp_l=$!
wait_port "$P_IDS" 30
wait_port "$P_IDL" 30

{
    nginx_conf_prelude "$run" "$run/ngx_http_oidc_module.so" on 2
    cat <<EOF
    root $run/html;

$(oidc_provider_block short "$P_IDS" "$run/cookie-keys" "refresh_leeway     ${leeway}s;")
$(oidc_provider_block long "$P_IDL" "$run/cookie-keys")
    server {
        listen 127.0.0.1:$P_S;
        location /_oidc { internal; proxy_pass \$oidc_fetch_url; }
        location /oauth2/ { oidc_endpoints short; }
        location / { oidc_auth short; }
    }
    server {
        listen 127.0.0.1:$P_L;
        location /_oidc { internal; proxy_pass \$oidc_fetch_url; }
        location /oauth2/ { oidc_endpoints long; }
        location / { oidc_auth long; }
    }
}
EOF
} >"$run/nginx.conf"
"$run/nginx" -p "$run/" -e "$run/error.log" -c "$run/nginx.conf" -t -q || die "nginx -t failed"
say "starting nginx (2 workers; short site $P_S, long site $P_L)"
"$run/nginx" -p "$run/" -e "$run/error.log" -c "$run/nginx.conf" &
nginx_pid=$!
wait_port "$P_S" 30
sleep 0.5
workers() { tr ' ' '\n' <"/proc/$nginx_pid/task/$nginx_pid/children" | grep -v '^$' | sort -n; }
mapfile -t wpids < <(workers)
[ "${#wpids[@]}" = 2 ] || die "expected 2 nginx workers, found: ${wpids[*]:-none}"

say "logging in: ${users[*]} (short), demo (long)"
declare -A ucookie
for u in "${users[@]}"; do
    ucookie[$u]="$(python3 "$helpers/login.py" "http://127.0.0.1:$P_S$path" "$u" "$u")" \
        || die "login as $u failed (see $run/error.log, $run/idp-short.log)"
done
cookie_long="$(python3 "$helpers/login.py" "http://127.0.0.1:$P_L$path" demo demo)" || die "login (long) failed"
cookie_garbage="$(garbage_cookie "$cookie_long")"
# Refreshes from now on only.
python3 -c 'import urllib.request,sys; urllib.request.urlopen(urllib.request.Request(sys.argv[1], method="POST")).read()' \
    "http://127.0.0.1:$P_IDS/_test/reset"

# A browser-like client: GETs in a loop for SECS, the session cookie replaced by every Set-Cookie.
cat >"$run/session_client.py" <<'PY'
import http.client, json, sys, time
port, path, secs, cookie, outfile = int(sys.argv[1]), sys.argv[2], float(sys.argv[3]), sys.argv[4], sys.argv[5]
jar = dict(p.strip().split("=", 1) for p in cookie.split(";") if "=" in p)
stats = {"requests": 0, "status": {}, "errors": 0, "cookie_updates": 0, "first_bad": None}
end = time.time() + secs
conn = None
while time.time() < end:
    try:
        if conn is None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        hdr = {"Accept": "text/html", "Cookie": "; ".join(f"{k}={v}" for k, v in jar.items())}
        conn.request("GET", path, headers=hdr)
        r = conn.getresponse()
        r.read()
        stats["requests"] += 1
        stats["status"][str(r.status)] = stats["status"].get(str(r.status), 0) + 1
        if not 200 <= r.status < 300 and stats["first_bad"] is None:
            stats["first_bad"] = f"{time.strftime('%H:%M:%S')} HTTP {r.status}"
        for k, v in r.getheaders():
            if k.lower() == "set-cookie":
                nv = v.split(";", 1)[0]
                name, _, val = nv.partition("=")
                if "max-age=0" in v.lower() or "1970" in v or val == "":
                    jar.pop(name, None)
                else:
                    jar[name] = val
                stats["cookie_updates"] += 1
    except Exception as e:  # noqa: BLE001
        stats["errors"] += 1
        if stats["first_bad"] is None:
            stats["first_bad"] = f"{time.strftime('%H:%M:%S')} {e!r}"
        conn = None
    time.sleep(0.02)
json.dump(stats, open(outfile, "w"))
PY

sample() { # elapsed -> one line per worker in samples.tsv
    local w rss fds
    for w in "${wpids[@]}"; do
        rss="$(awk '/^VmRSS:/ {print $2}' "/proc/$w/status" 2>/dev/null || echo 0)"
        fds="$(find "/proc/$w/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)"
        printf '%s\t%s\t%s\t%s\n' "$1" "$w" "${rss:-0}" "$fds" >>"$out/samples.tsv"
    done
}
printf 'elapsed_s\tworker\trss_kib\tfds\n' >"$out/samples.tsv"

say "soak: ${secs}s — ${#users[@]} refreshing sessions (TTL ${ttl}s, leeway ${leeway}s), wrk -c$conns valid (long TTL), wrk -c$conns garbage cookies"
sample 0
started=$(date +%s)
for u in "${users[@]}"; do
    python3 "$run/session_client.py" "$P_S" "$path" "$secs" "${ucookie[$u]}" "$out/raw/client-$u.json" &
    bg_pids+=($!)
done
wrk -t1 -c"$conns" -d"${secs}s" -s "$helpers/wrk-json.lua" -H "Cookie: $cookie_long" \
    "http://127.0.0.1:$P_L$path" >"$out/raw/wrk-valid.txt" 2>&1 &
bg_pids+=($!)
wrk -t1 -c"$conns" -d"${secs}s" -s "$helpers/wrk-json.lua" -H "Cookie: $cookie_garbage" \
    "http://127.0.0.1:$P_L$path" >"$out/raw/wrk-invalid.txt" 2>&1 &
bg_pids+=($!)
next=$sample_every
while :; do
    now=$(($(date +%s) - started))
    if [ "$now" -ge "$next" ]; then
        sample "$now"
        say "  ${now}s: $(tail -n "${#wpids[@]}" "$out/samples.tsv" | awk '{printf "worker %s rss %s KiB fds %s; ", $2, $3, $4}')"
        next=$((next + sample_every))
    fi
    alive=0
    for p in "${bg_pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ "$alive" = 1 ] || break
    sleep 1
done
for p in "${bg_pids[@]}"; do wait "$p" || true; done
bg_pids=()
elapsed=$(($(date +%s) - started))
sleep 2 # let the load's connections close: the last sample is idle, like the first
sample "$elapsed"
python3 -c 'import urllib.request,sys; print(urllib.request.urlopen(sys.argv[1]).read().decode())' \
    "http://127.0.0.1:$P_IDS/_test/stats" >"$out/raw/idp-short-stats.json"
mapfile -t now_workers < <(workers)
cp "$run/error.log" "$out/raw/error.log"

python3 - "$out" "$elapsed" "$ttl" "$leeway" "${#users[@]}" "${wpids[*]}" "${now_workers[*]}" <<'PY'
import glob, json, os, re, sys
out, elapsed, ttl, leeway, nusers = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
wpids, now_workers = sys.argv[6].split(), sys.argv[7].split()
rows, checks = [], []
def check(name, ok, detail):
    checks.append((name, ok, detail))
def wrk(name):
    t = open(f"{out}/raw/{name}.txt").read()
    m = re.search(r"WRKJSON (\{.*\})", t)
    if not m:
        return None, t[-400:]
    return json.loads(m.group(1)), None
valid, verr = wrk("wrk-valid")
invalid, ierr = wrk("wrk-invalid")
sock = lambda j: j["err_connect"] + j["err_read"] + j["err_write"] + j["err_timeout"]
if valid:
    rows.append(("wrk valid session (long TTL)", f'{valid["requests"]} req, {valid["requests"]/elapsed:.0f} req/s, p99 {valid["p99_us"]} us, non-2xx {valid["err_status"]}, socket errors {sock(valid)}'))
    check("valid sessions (wrk): zero non-2xx, zero socket errors", valid["err_status"] == 0 and sock(valid) == 0 and valid["requests"] > 0, f'{valid["err_status"]} non-2xx, {sock(valid)} socket errors')
else:
    check("wrk valid ran", False, verr)
if invalid:
    rows.append(("wrk garbage cookies", f'{invalid["requests"]} req, {invalid["requests"]/elapsed:.0f} req/s, p99 {invalid["p99_us"]} us, non-2xx {invalid["err_status"]}, socket errors {sock(invalid)}'))
    check("garbage cookies (wrk): every request refused, zero socket errors", invalid["err_status"] == invalid["requests"] and sock(invalid) == 0 and invalid["requests"] > 0, f'{invalid["requests"] - invalid["err_status"]} 2xx/3xx, {sock(invalid)} socket errors')
else:
    check("wrk invalid ran", False, ierr)
tot_bad = 0
for f in sorted(glob.glob(f"{out}/raw/client-*.json")):
    u = os.path.basename(f)[7:-5]
    c = json.load(open(f))
    bad = sum(n for s, n in c["status"].items() if not s.startswith("2")) + c["errors"]
    tot_bad += bad
    rows.append((f"refreshing session {u}", f'{c["requests"]} req, status {c["status"]}, errors {c["errors"]}, Set-Cookie {c["cookie_updates"]}' + (f', first bad: {c["first_bad"]}' if c["first_bad"] else "")))
check("refreshing sessions: zero non-2xx, zero errors", tot_bad == 0, f"{tot_bad} bad")
st = json.load(open(f"{out}/raw/idp-short-stats.json"))
refresh = st["token_requests"]["refresh_token"]
expected = nusers * elapsed / (ttl - leeway)
rows.append(("refresh_token calls", f"{refresh} (expected ≈ {expected:.1f} = {nusers} users × {elapsed}s / ({ttl}-{leeway})s)"))
check("refresh calls ≈ expected (± 1 per user)", abs(refresh - expected) <= nusers + 0.01, f"{refresh} vs {expected:.1f}")
samples = [l.split("\t") for l in open(f"{out}/samples.tsv").read().splitlines()[1:]]
for w in wpids:
    s = [(int(e), int(r), int(f)) for e, pid, r, f in samples if pid == w]
    warm = [x for x in s if x[0] > 0]
    base = warm[0] if len(warm) > 1 else s[0]
    last = s[-1]
    series = " ".join(f"{r//1024}.{(r%1024)*10//1024}" for _, r, _ in s)
    rows.append((f"worker {w} RSS MiB", series))
    rows.append((f"worker {w} fds", " ".join(str(f) for _, _, f in s)))
    check(f"worker {w}: RSS growth after warm-up ({base[0]}s) < 1 MiB", last[1] - base[1] < 1024, f"{last[1] - base[1]:+d} KiB")
    check(f"worker {w}: fd count flat (idle before vs idle after)", last[2] <= s[0][2], f"{s[0][2]} -> {last[2]} (under load {min(x[2] for x in warm[:-1] or s)}..{max(x[2] for x in warm[:-1] or s)})")
check("same workers at the end (none crashed)", sorted(wpids) == sorted(now_workers), f"{wpids} -> {now_workers}")
log = open(f"{out}/raw/error.log").read()
bad_lines = [l for l in log.splitlines() if "[alert]" in l or "[emerg]" in l or "exited on signal" in l]
check("error.log: no [alert]/[emerg]/crash", not bad_lines, bad_lines[0][:200] if bad_lines else "clean")
errs = sum(1 for l in log.splitlines() if "[error]" in l)
rows.append(("error.log", f"{errs} [error] lines, {sum(1 for l in log.splitlines() if '[warn]' in l)} [warn] lines"))
w = max(len(k) for k, _ in rows)
lines = [f"soak: {elapsed}s", ""] + [f"{k:<{w}}  {v}" for k, v in rows] + [""]
lines += [f"[{'PASS' if ok else 'FAIL'}] {n}: {d}" for n, ok, d in checks]
text = "\n".join(lines)
open(f"{out}/summary.txt", "w").write(text + "\n")
print(text)
sys.exit(0 if all(ok for _, ok, _ in checks) else 1)
PY
