#!/usr/bin/env bash
# Soak (issue 6, "Load"): SOAK_SECONDS of load on nginx (2 workers) with the module, against
# two test OpenID Providers:
#   short  access/ID tokens live IDP_TTL s (20), `refresh_leeway` LEEWAY s (5): sessions refresh
#          every TTL-1-LEEWAY s (the module counts a token's life as expires_in minus one second
#          of margin). One python client per user (demo, alice, bob) loops GETs and
#          follows Set-Cookie like a browser (a refreshed cookie replaces the old one).
#   long   tokens live a day: wrk at full speed with one valid session (raw throughput), and a
#          second wrk with garbage session cookies (expects 401 on every request).
# Before the load, a warm-up (scripts/bench/soak_warmup.py, then both wrk for SOAK_WARMUP_WRK s)
# brings every worker to the state the soak keeps it in: SOAK_WARMUP_SESSIONS (2048) distinct
# logins, each sent to every worker, fill its session cache of the short provider (512 entries
# of ≈ 7 KiB: ≈ 3.5 MiB that a healthy worker gains once, not a leak; the long provider's only
# ever holds wrk's one session), and every path of the soak (session, refresh, garbage cookie,
# sign-out) runs once in every worker, and every worker holds more connections at once than
# the load can give it (both wrk's and every client's, requests half sent), all reached through
# a `reuseport` listener per node that only the warm-up uses.
# nginx runs with glibc's heap trimming off (GLIBC_TUNABLES trim_threshold): otherwise an idle
# worker's free() may hand the top of its heap back, which the next load takes again at once,
# and idle samples wander by up to ~0.9 MiB; without trimming a worker's heap is its high-water
# mark, which only a leak (or new fragmentation) moves.
# After the warm-up (idle), every SOAK_SAMPLE s and after the load (idle again): each worker's
# memory from /proc/PID/status — heap and other private memory (RssAnon), the shared zones
# (RssShmem), mapped files and code (RssFile) — and open fds (/proc/PID/fd). At the end, checks:
#   zero non-2xx and zero socket errors for valid sessions; every invalid-cookie request a 401;
#   RssAnon growth < 1 MiB per worker from after the warm-up to the end (what a leak grows);
#   idle fd count the same before and after; RssShmem (against the zones' size) and RssFile
#   growth are shown, not checked: pages of the zones and of the code count once a worker
#   first touches them;
#   refresh_token calls at the short provider within ±(1 per user) of users*elapsed/(TTL-1-LEEWAY);
#   no [alert] / crashed worker in error.log.
# SOAK_NODES=2 (issue 14): two nginx masters (nodes A and B, one key file) sharing a real
#   redis-server through `cluster_store`. The refreshing clients alternate their requests
#   between the nodes (the cluster must still refresh once per due token), the garbage-cookie
#   wrk loads node B, and a sign-out client loops: log in on A, the cookie works on B, sign out
#   on A, B refuses the cookie within a second. Extra checks: every sign-out reached B within
#   a second, the workers of both nodes stay flat (RSS, fds), Redis' used_memory grows < 1 MiB.
# Results: target/soak/summary.txt (+ samples.tsv, raw wrk output, logs in target/soak/run/).
#
# Environment: SOAK_SECONDS (600), SOAK_CONNECTIONS (16, per wrk), SOAK_TTL (20),
#   SOAK_LEEWAY (5), SOAK_SAMPLE (30 s), SOAK_NODES (1 or 2), SOAK_WARMUP_SESSIONS (2048),
#   SOAK_WARMUP_WRK (10 s), NGX_OIDC_SKIP_BUILD=1 uses the last build as is.
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"
cd "$NGX_OIDC_ROOT"

secs="${SOAK_SECONDS:-600}"
conns="${SOAK_CONNECTIONS:-16}"
ttl="${SOAK_TTL:-20}"
leeway="${SOAK_LEEWAY:-5}"
sample_every="${SOAK_SAMPLE:-30}"
nodes="${SOAK_NODES:-1}"
warmup_sessions="${SOAK_WARMUP_SESSIONS:-2048}"
warmup_wrk="${SOAK_WARMUP_WRK:-10}"
[ "$nodes" = 1 ] || [ "$nodes" = 2 ] || die "SOAK_NODES must be 1 or 2"
users=(demo alice bob)
[ "$ttl" -gt "$leeway" ] || die "SOAK_TTL must be larger than SOAK_LEEWAY"

out="$NGX_OIDC_TARGET/soak"
run="$out/run"
helpers="$NGX_OIDC_ROOT/scripts/bench"

build_unless_skipped
ensure_idp_deps
ensure_commands wrk python3
if [ "$nodes" = 2 ]; then ensure_redis; fi

rm -rf "$run" "$out/raw"
mkdir -p "$run/tmp" "$run/html" "$out/raw"
copy_binaries "$run"
printf '%s\n' '<!doctype html><title>ngx-oidc soak</title><p>soak' >"$run/html/index.html"
path=/index.html
(umask 077 && head -c 32 /dev/urandom | base64 >"$run/cookie-keys")

read -r P_S P_L P_IDS P_IDL P_S2 P_L2 P_REDIS P_W P_W2 < <(free_ports 9)

idp_s="" idp_l="" nginx_pid="" nginx_b_pid="" redis_pid="" bg_pids=()
cleanup() {
    trap - INT TERM EXIT
    local p
    for p in "${bg_pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    if [ -n "$nginx_pid" ]; then kill -QUIT "$nginx_pid" 2>/dev/null || true; fi
    if [ -n "$nginx_b_pid" ]; then kill -QUIT "$nginx_b_pid" 2>/dev/null || true; fi
    if [ -n "$redis_pid" ]; then kill -TERM "$redis_pid" 2>/dev/null || true; fi
    if [ -n "$idp_s" ]; then kill -TERM "$idp_s" 2>/dev/null || true; fi
    if [ -n "$idp_l" ]; then kill -TERM "$idp_l" 2>/dev/null || true; fi
    wait 2>/dev/null || true
}
trap cleanup EXIT
trap 'cleanup; exit 130' INT TERM
say "starting the providers: short TTL ${ttl}s on $P_IDS, long TTL on $P_IDL"
start_test_idp "$P_IDS" "$P_S $P_W" "$ttl" "$run/idp-short.log"
idp_s=$!
start_test_idp "$P_IDL" "$P_L" 86400 "$run/idp-long.log"
idp_l=$!
wait_port "$P_IDS" 30
wait_port "$P_IDL" 30

store=""
if [ "$nodes" = 2 ]; then
    say "starting redis-server on 127.0.0.1:$P_REDIS (dir: $run/redis)"
    mkdir -p "$run/redis"
    redis-server --bind 127.0.0.1 --port "$P_REDIS" --dir "$run/redis" --save "" \
        --appendonly no --logfile "$run/redis/redis.log" --daemonize no &
    redis_pid=$!
    wait_port "$P_REDIS" 30
    store="cluster_store redis://127.0.0.1:$P_REDIS;"
fi
redis_memory() { # used_memory in bytes (0 without Redis)
    if [ "$nodes" = 2 ]; then
        redis-cli -p "$P_REDIS" INFO memory | tr -d '\r' | awk -F: '$1 == "used_memory" { print $2 + 0 }'
    else
        echo 0
    fi
}

write_conf() { # $1 = prefix dir, $2 = short site port, $3 = long site port, $4 = warm-up port
    mkdir -p "$1/tmp"
    {
        nginx_conf_prelude "$1" "$run/ngx_http_oidc_module.so" on 2
        cat <<EOF
    root $run/html;

$(oidc_provider_block short "$P_IDS" "$run/cookie-keys" "refresh_leeway     ${leeway}s; $store")
$(oidc_provider_block long "$P_IDL" "$run/cookie-keys" "$store")
    server {
        listen 127.0.0.1:$2;
        location /_oidc { internal; proxy_pass \$oidc_fetch_url; }
        location /oauth2/ { oidc_endpoints short; }
        location / { oidc_auth short; }
    }
    server {
        listen 127.0.0.1:$3;
        location /_oidc { internal; proxy_pass \$oidc_fetch_url; }
        location /oauth2/ { oidc_endpoints long; }
        location / { oidc_auth long; }
    }
    # The warm-up's way to every worker: one socket per worker, and the worker's pid.
    server {
        listen 127.0.0.1:$4 reuseport;
        keepalive_requests 1000000;
        location = /_soak/worker { return 200 "\$pid"; }
        location /_oidc { internal; proxy_pass \$oidc_fetch_url; }
        location /oauth2/ { oidc_endpoints short; }
        location / { oidc_auth short; }
    }
}
EOF
    } >"$1/nginx.conf"
    "$run/nginx" -p "$1/" -e "$1/error.log" -c "$1/nginx.conf" -t -q || die "nginx -t failed ($1)"
}
write_conf "$run" "$P_S" "$P_L" "$P_W"
say "starting nginx (2 workers; short site $P_S, long site $P_L)"
no_trim=glibc.malloc.trim_threshold=$((1 << 40))
GLIBC_TUNABLES=$no_trim "$run/nginx" -p "$run/" -e "$run/error.log" -c "$run/nginx.conf" &
nginx_pid=$!
wait_port "$P_S" 30
if [ "$nodes" = 2 ]; then
    write_conf "$run/b" "$P_S2" "$P_L2" "$P_W2"
    say "starting node B (2 workers; short site $P_S2, long site $P_L2)"
    GLIBC_TUNABLES=$no_trim "$run/nginx" -p "$run/b/" -e "$run/b/error.log" -c "$run/b/nginx.conf" &
    nginx_b_pid=$!
    wait_port "$P_S2" 30
fi
sleep 0.5
workers() { # of the masters given, else of every node's master
    local m
    for m in ${@:-$nginx_pid $nginx_b_pid}; do tr ' ' '\n' <"/proc/$m/task/$m/children"; done | grep -v '^$' | sort -n
}
mapfile -t wpids < <(workers)
[ "${#wpids[@]}" = $((2 * nodes)) ] || die "expected $((2 * nodes)) nginx workers, found: ${wpids[*]:-none}"

cookie_long="$(python3 "$helpers/login.py" "http://127.0.0.1:$P_L$path" demo demo)" || die "login (long) failed"
cookie_garbage="$(garbage_cookie "$cookie_long")"

say "warm-up: $warmup_sessions sessions through every worker, every path of the soak in every worker"
for w in "${wpids[@]}"; do
    printf '%s\t%s\n' "$w" "$(awk '/^RssAnon:/ {print $2}' "/proc/$w/status")"
done >"$out/raw/heap-before-warmup.tsv"
python3 "$helpers/soak_warmup.py" "http://127.0.0.1:$P_W$path" "$(IFS=,; echo "${users[*]}")" \
    "$warmup_sessions" $((ttl - 1 - leeway)) "$([ "$nodes" = 2 ] && echo 1 || echo 0)" \
    $((2 * conns + ${#users[@]} + 4)) "$out/raw/warmup.json" "$P_W:$(workers "$nginx_pid" | paste -sd,)" \
    ${nginx_b_pid:+"$P_W2:$(workers "$nginx_b_pid" | paste -sd,)"} >"$out/raw/warmup.log" 2>&1 \
    || die "the warm-up failed: $(tail -n 3 "$out/raw/warmup.log") (see $run/error.log, $run/idp-short.log)"
garbage_port="$P_L"
if [ "$nodes" = 2 ]; then garbage_port="$P_L2"; fi
wrk -t1 -c"$conns" -d"${warmup_wrk}s" -H "Cookie: $cookie_long" "http://127.0.0.1:$P_L$path" >/dev/null 2>&1 &
warm_wrk=$!
wrk -t1 -c"$conns" -d"${warmup_wrk}s" -H "Cookie: $cookie_garbage" "http://127.0.0.1:$garbage_port$path" >/dev/null 2>&1 \
    || die "wrk (warm-up) failed"
wait "$warm_wrk" || die "wrk (warm-up) failed"
say "warm-up done: $(cat "$out/raw/warmup.json")"

say "logging in: ${users[*]} (short)"
declare -A ucookie
for u in "${users[@]}"; do
    ucookie[$u]="$(python3 "$helpers/login.py" "http://127.0.0.1:$P_S$path" "$u" "$u")" \
        || die "login as $u failed (see $run/error.log, $run/idp-short.log)"
done
# Refreshes from now on only.
python3 -c 'import urllib.request,sys; urllib.request.urlopen(urllib.request.Request(sys.argv[1], method="POST")).read()' \
    "http://127.0.0.1:$P_IDS/_test/reset"

# A browser-like client: GETs in a loop for SECS, the session cookie replaced by every Set-Cookie;
# with several ports (comma-separated) the requests go to each in turn.
cat >"$run/session_client.py" <<'PY'
import http.client, json, sys, time
ports, path, secs, cookie, outfile = [int(p) for p in sys.argv[1].split(",")], sys.argv[2], float(sys.argv[3]), sys.argv[4], sys.argv[5]
jar = dict(p.strip().split("=", 1) for p in cookie.split(";") if "=" in p)
stats = {"requests": 0, "status": {}, "errors": 0, "cookie_updates": 0, "first_bad": None}
end = time.time() + secs
conns = {}
while time.time() < end:
    port = ports[stats["requests"] % len(ports)]
    conn = conns.get(port)
    try:
        if conn is None:
            conn = conns[port] = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
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
        conns.pop(port, None)
    time.sleep(0.02)
json.dump(stats, open(outfile, "w"))
PY

# Two nodes: log in on A, the cookie works on B, sign out on A, B refuses it within a second.
cat >"$run/signout_client.py" <<'PY'
import json, subprocess, sys, time, urllib.error, urllib.request
login, a, b, path, secs, outfile = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], float(sys.argv[5]), sys.argv[6]
stats = {"rounds": 0, "failures": 0, "max_propagation_ms": 0.0, "first_bad": None}
class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args):
        return None
opener = urllib.request.build_opener(NoRedirect)
def status(port, p, cookie):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{p}", headers={"Cookie": cookie, "Accept": "application/json"})
    try:
        return opener.open(req, timeout=10).status
    except urllib.error.HTTPError as e:
        return e.code
def bad(why):
    stats["failures"] += 1
    if stats["first_bad"] is None:
        stats["first_bad"] = f"{time.strftime('%H:%M:%S')} {why}"
end = time.time() + secs
while time.time() < end:
    stats["rounds"] += 1
    try:
        cookie = subprocess.run([sys.executable, login, f"http://127.0.0.1:{a}{path}", "alice", "alice"],
                                check=True, capture_output=True, text=True).stdout.strip()
        if status(b, path, cookie) != 200:
            bad("the session did not open on node B")
            continue
        status(a, "/oauth2/sign_out", cookie)
        t0 = time.time()
        while status(b, path, cookie) != 401:
            if time.time() - t0 > 1:
                bad("node B still accepts the cookie 1 s after the sign-out on node A")
                break
            time.sleep(0.005)
        stats["max_propagation_ms"] = max(stats["max_propagation_ms"], (time.time() - t0) * 1000)
    except Exception as e:  # noqa: BLE001
        bad(repr(e))
    time.sleep(1)
json.dump(stats, open(outfile, "w"))
PY

sample() { # elapsed -> one line per worker in samples.tsv (memory in KiB)
    local w mem fds
    for w in "${wpids[@]}"; do
        mem="$(awk '$1 ~ /^(VmRSS|RssAnon|RssFile|RssShmem):$/ {printf "%s\t", $2}' "/proc/$w/status" 2>/dev/null)"
        fds="$(find "/proc/$w/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)"
        printf '%s\t%s\t%s%s\n' "$1" "$w" "${mem:-0	0	0	0	}" "$fds" >>"$out/samples.tsv"
    done
    printf '%s\t%s\n' "$1" "$(redis_memory)" >>"$out/redis.tsv"
}
printf 'elapsed_s\tused_memory\n' >"$out/redis.tsv"
printf 'elapsed_s\tworker\trss_kib\tanon_kib\tfile_kib\tshmem_kib\tfds\n' >"$out/samples.tsv"

say "soak: ${secs}s — ${#users[@]} refreshing sessions (TTL ${ttl}s, leeway ${leeway}s), wrk -c$conns valid (long TTL), wrk -c$conns garbage cookies"
sample 0
started=$(date +%s)
short_ports="$P_S"
if [ "$nodes" = 2 ]; then
    short_ports="$P_S,$P_S2"
    python3 "$run/signout_client.py" "$helpers/login.py" "$P_S" "$P_S2" "$path" "$secs" "$out/raw/signout.json" &
    bg_pids+=($!)
fi
for u in "${users[@]}"; do
    python3 "$run/session_client.py" "$short_ports" "$path" "$secs" "${ucookie[$u]}" "$out/raw/client-$u.json" &
    bg_pids+=($!)
done
wrk -t1 -c"$conns" -d"${secs}s" -s "$helpers/wrk-json.lua" -H "Cookie: $cookie_long" \
    "http://127.0.0.1:$P_L$path" >"$out/raw/wrk-valid.txt" 2>&1 &
bg_pids+=($!)
wrk -t1 -c"$conns" -d"${secs}s" -s "$helpers/wrk-json.lua" -H "Cookie: $cookie_garbage" \
    "http://127.0.0.1:$garbage_port$path" >"$out/raw/wrk-invalid.txt" 2>&1 &
bg_pids+=($!)
next=$sample_every
while :; do
    now=$(($(date +%s) - started))
    if [ "$now" -ge "$next" ]; then
        sample "$now"
        say "  ${now}s: $(tail -n "${#wpids[@]}" "$out/samples.tsv" | awk '{printf "worker %s heap %s KiB fds %s; ", $2, $4, $7}')"
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
if [ "$nodes" = 2 ]; then cat "$run/b/error.log" >>"$out/raw/error.log"; fi

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
expected = nusers * elapsed / (ttl - 1 - leeway)
rows.append(("refresh_token calls", f"{refresh} (expected ≈ {expected:.1f} = {nusers} users × {elapsed}s / ({ttl}-1-{leeway})s)"))
check("refresh calls ≈ expected (± 1 per user)", abs(refresh - expected) <= nusers + 0.01, f"{refresh} vs {expected:.1f}")
warm = json.load(open(f"{out}/raw/warmup.json"))
heap_before_warmup = dict(l.split("\t") for l in open(f"{out}/raw/heap-before-warmup.tsv").read().splitlines())
rows.append(("warm-up", f'{warm["seconds"]}s ({warm["fill_seconds"]}s filling the caches): {warm["sessions_per_worker"]} sessions, {warm["refreshes"]} refreshes, {warm["signouts"]} sign-outs, {warm["peak_connections_per_worker"]} connections held; requests per worker {warm["requests_per_worker"]}'))
# Two providers (short, long), each with a 1 MiB zone (ZONE_SIZE in src/glue/service/zone.rs).
zones_kib = 2 * 1024
samples = [l.split("\t") for l in open(f"{out}/samples.tsv").read().splitlines()[1:]]
mib = lambda k: f"{k / 1024:.2f}"
for w in wpids:
    # (elapsed, VmRSS, RssAnon, RssFile, RssShmem, fds); the first sample is idle after the
    # warm-up, the last one idle after the load, the others under load.
    s = [tuple(int(x) for x in (e, *rest)) for e, pid, *rest in samples if pid == w]
    base, last = s[0], s[-1]
    loaded = s[1:-1] if len(s) > 3 else s
    rows.append((f"worker {w} heap (RssAnon) MiB", f"{mib(int(heap_before_warmup[w]))} before the warm-up; " + " ".join(mib(x[2]) for x in s)))
    rows.append((f"worker {w} VmRSS MiB", " ".join(mib(x[1]) for x in s)))
    rows.append((f"worker {w} zones, files", f"RssShmem {base[4]} -> {last[4]} KiB ({last[4] - base[4]:+d}; the zones are {zones_kib} KiB), RssFile {last[3] - base[3]:+d} KiB"))
    rows.append((f"worker {w} fds", " ".join(str(x[5]) for x in s)))
    check(f"worker {w}: heap (RssAnon) growth after the warm-up < 1 MiB", last[2] - base[2] < 1024, f"{last[2] - base[2]:+d} KiB (under load, {loaded[0][0]}s to {loaded[-1][0]}s: {loaded[-1][2] - loaded[0][2]:+d} KiB; VmRSS {last[1] - base[1]:+d} KiB)")
    under_load = [x[5] for x in s[1:-1]] or [s[0][5]]
    check(f"worker {w}: fd count flat (idle before vs idle after)", last[5] <= s[0][5], f"{s[0][5]} -> {last[5]} (under load {min(under_load)}..{max(under_load)})")
if os.path.exists(f"{out}/raw/signout.json"):
    so = json.load(open(f"{out}/raw/signout.json"))
    rows.append(("sign-outs on A checked on B", f'{so["rounds"]} rounds, {so["failures"]} failures, slowest propagation {so["max_propagation_ms"]:.1f} ms' + (f', first bad: {so["first_bad"]}' if so["first_bad"] else "")))
    check("every sign-out on node A reached node B within a second", so["failures"] == 0 and so["rounds"] > 0, f'{so["failures"]} of {so["rounds"]}')
    mem = [int(m) for _, m in (l.split("\t") for l in open(f"{out}/redis.tsv").read().splitlines()[1:])]
    rows.append(("Redis used_memory KiB", " ".join(str(m // 1024) for m in mem)))
    check("Redis memory bounded (growth < 1 MiB)", mem[-1] - mem[0] < 1024 * 1024, f"{(mem[-1] - mem[0]) // 1024:+d} KiB")
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
