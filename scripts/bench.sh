#!/usr/bin/env bash
# Benchmark: the module's in-process session check against plain nginx and against the
# auth_request setup it replaces. One nginx (worker_processes 1, access_log off) serves every
# case on its own port; wrk (1 thread) loads it from 127.0.0.1, cases taken in turn each round:
#   A   plain nginx, a ~100-byte static file
#   B   the same file behind `oidc_auth` with a valid session cookie (real login, user demo)
#   B2  the same with the 150-group session (user biggroups)
#   C   the same file behind `auth_request` → internal location → proxy_pass to a keepalive
#       upstream (another server block of the same nginx) answering 202: the cheapest possible
#       oauth2-proxy
#   D   `oidc_auth` with a garbage session cookie → 401 (what an attacker sends)
#   R   B with `cluster_store` set (a real redis-server on 127.0.0.1): a logged-in request must
#       cost the same with the store as without (no Redis on the request path), R/B ≈ 1
#   O   the setup the module replaces, for real: the seed article's nginx.conf
#       (tests/migration/oauth2-proxy.conf: auth_request /oauth2/auth, error_page 401 =
#       /oauth2/sign_in, auth_request_set X-User/X-Email) in front of the real oauth2-proxy
#       (scripts/build-oauth2-proxy.sh, the seed's flags), logged in through the same provider
#       as B. Its `proxy_pass http://backend/` is left out so that O serves the same static file
#       as every other case (the comparison is the session check, not an extra proxy hop).
# The provider: a real Keycloak (scripts/keycloak.sh, realm tests/keycloak/realm-test.json with
# token and session lifetimes raised past the run, so that neither oauth2-proxy's session nor
# the module's expires mid-run), or with --quick / BENCH_KEYCLOAK=0 the stand-in tests/idp: the
# steady state of every case never calls the provider, so the smoke run that CI makes does not
# pay for a Keycloak start (it runs Keycloak in the test suites already).
# Then the worker's peak RSS before and after BENCH_LEAK_REQUESTS requests of case B.
# Results: target/bench/results.md, target/bench/results.svg (raw wrk output in target/bench/raw/).
#
# Usage: scripts/bench.sh [--quick] [--callgrind | --callgrind-only]
#   --quick           1 round of 2 s per case and a 20,000-request leak check (smoke test)
#   --callgrind       also count instructions per request of every case under valgrind callgrind
#   --callgrind-only  only the callgrind part (no wrk runs)
# Environment: BENCH_ROUNDS (5), BENCH_DURATION (10s), BENCH_CONNECTIONS (32), BENCH_KEYCLOAK
#   (1, or 0 with --quick: the provider is a real Keycloak),
#   BENCH_LEAK_REQUESTS (1000000), BENCH_CALLGRIND_REQUESTS (2000),
#   BENCH_PIN=1 pins the nginx worker to CPU 1 and wrk to CPU 0,
#   NGX_OIDC_SKIP_BUILD=1 uses the last scripts/build.sh output as is.
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"
cd "$NGX_OIDC_ROOT"

quick=0 wrk_part=1 cg_part=0
for a in "$@"; do
    case "$a" in
        --quick) quick=1 ;;
        --callgrind) cg_part=1 ;;
        --callgrind-only) cg_part=1 wrk_part=0 ;;
        -h | --help)
            sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
            exit 0
            ;;
        *) die "unknown argument: $a (try --help)" ;;
    esac
done

rounds="${BENCH_ROUNDS:-5}"
duration="${BENCH_DURATION:-10s}"
conns="${BENCH_CONNECTIONS:-32}"
leak_requests="${BENCH_LEAK_REQUESTS:-1000000}"
cg_requests="${BENCH_CALLGRIND_REQUESTS:-2000}"
keycloak=1
if [ "$quick" = 1 ]; then
    rounds=1 duration=2s leak_requests=20000 keycloak=0
fi
keycloak="${BENCH_KEYCLOAK:-$keycloak}"
cases=(A B B2 C D O R)
# Under callgrind only nginx's own instructions count; oauth2-proxy's would be missing from O.
cg_cases=(A B B2 C D R)

out="$NGX_OIDC_TARGET/bench"
run="$out/run"
helpers="$NGX_OIDC_ROOT/scripts/bench"

# ------------------------------------------------------------------------------ dependencies
build_unless_skipped
ensure_idp_deps
ensure_oauth2_proxy
ensure_commands wrk curl python3
ensure_redis
if [ "$cg_part" = 1 ]; then
    ensure_commands valgrind
fi

rm -rf "$run" "$out/raw"
mkdir -p "$run/tmp" "$run/html" "$out/raw"
rm -f "$out/runs.jsonl" "$out/checks.json" "$out/rss.json" "$out/callgrind.json" "$out/meta.json"
: >"$out/runs.jsonl"

copy_binaries "$run"
nginx_bin="$run/nginx"

# About 100 bytes, served from disk by the static module in every case.
printf '%s\n' '<!doctype html><title>ngx-oidc bench</title><p>A small static file of about one hundred bytes.' \
    >"$run/html/index.html"
file_bytes="$(stat -c %s "$run/html/index.html")"
path=/index.html # not "/": the index module's internal redirect would run the access phase twice
(umask 077 && head -c 32 /dev/urandom | base64 >"$run/cookie-keys")

read -r P_A P_B P_C P_D P_U P_IDP P_O P_O2P P_R P_REDIS < <(free_ports 10)
declare -A port=([A]=$P_A [B]=$P_B [B2]=$P_B [C]=$P_C [D]=$P_D [O]=$P_O [R]=$P_R)

# ------------------------------------------------------------------------------ processes
idp_pid="" nginx_pid="" o2p_pid="" kc_dir="" redis_pid=""
cleanup() {
    trap - INT TERM EXIT
    if [ -n "$redis_pid" ]; then kill -TERM "$redis_pid" 2>/dev/null || true; fi
    if [ -n "$nginx_pid" ]; then kill -QUIT "$nginx_pid" 2>/dev/null || true; fi
    if [ -n "$o2p_pid" ]; then kill -TERM "$o2p_pid" 2>/dev/null || true; fi
    if [ -n "$idp_pid" ]; then kill -TERM "$idp_pid" 2>/dev/null || true; fi
    if [ -n "$kc_dir" ]; then "$NGX_OIDC_ROOT/scripts/keycloak.sh" stop "$kc_dir" || true; fi
    wait 2>/dev/null || true
}
trap cleanup EXIT
trap 'cleanup; exit 130' INT TERM

# nginx.conf for a prefix dir: $1 = dir, $2 = "on" (master + 1 worker) or "off" (one process).
write_conf() {
    local dir="$1" master="$2" affinity=""
    [ "${BENCH_PIN:-0}" = 1 ] && [ "$master" = on ] && affinity="worker_cpu_affinity 10;"
    mkdir -p "$dir/tmp"
    {
        nginx_conf_prelude "$dir" "$run/ngx_http_oidc_module.so" "$master" 1 "$affinity"
        cat <<EOF
    large_client_header_buffers 4 32k;
    root $run/html;

    oidc_provider keycloak {
        issuer             $issuer;
        client_id          test;
        client_secret      $client_secret;
        cookie_secret_file $run/cookie-keys;
        cookie_secure      off;
    }

    # R: B with the cluster store (its own provider name: cookies are bound to it).
    oidc_provider keycloak_r {
        issuer             $issuer;
        client_id          test;
        client_secret      $client_secret;
        cookie_secret_file $run/cookie-keys;
        cookie_secure      off;
        cluster_store      redis://127.0.0.1:$P_REDIS;
    }
    server {
        listen 127.0.0.1:$P_R;
        location /_oidc { internal; proxy_pass \$oidc_fetch_url; }
        location /oauth2/ { oidc_endpoints keycloak_r; }
        location / { oidc_auth keycloak_r; }
    }

    # A: plain nginx.
    server {
        listen 127.0.0.1:$P_A;
    }

    # B, B2: the module (also where the benchmark logs in).
    server {
        listen 127.0.0.1:$P_B;
        location /_oidc { internal; proxy_pass \$oidc_fetch_url; }
        location /oauth2/ { oidc_endpoints keycloak; }
        location / { oidc_auth keycloak; }
    }

    # D: the module, fed garbage.
    server {
        listen 127.0.0.1:$P_D;
        location /_oidc { internal; proxy_pass \$oidc_fetch_url; }
        location / { oidc_auth keycloak; }
    }

    # C: auth_request to a keepalive upstream answering 202 (an oauth2-proxy that does nothing).
    upstream auth_check {
        server 127.0.0.1:$P_U;
        keepalive 32;
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:$P_C;
        location / { auth_request /_auth; }
        location = /_auth {
            internal;
            proxy_pass http://auth_check;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
        }
    }
    server {
        listen 127.0.0.1:$P_U;
        keepalive_requests 1000000;
        location / { return 202; }
    }

    # O: the seed's nginx.conf in front of the real oauth2-proxy (the static file instead of
    # its proxy_pass to a backend, like every other case).
EOF
        # proxy_buffer_size: oauth2-proxy's cookie for a Keycloak user does not fit nginx's
        # default 4 KB (502 "upstream sent too big header" at login; tests/migration.rs).
        sed -e "s/@PORT@/$P_O/g; s/@OAUTH2_PROXY_PORT@/$P_O2P/g" \
            -e 's|^\( *\)listen .*|&\n\1proxy_buffer_size 16k;\n\1proxy_buffers 8 16k;|' \
            -e 's|^\( *\)proxy_pass http://backend/;|\1# (bench: the static file from root, as in every case)|' \
            "$NGX_OIDC_ROOT/tests/migration/oauth2-proxy.conf" | sed 's/^/    /'
        echo "}"
    } >"$dir/nginx.conf"
    "$nginx_bin" -p "$dir/" -e "$dir/error.log" -c "$dir/nginx.conf" -t -q \
        || die "nginx -t failed for $dir/nginx.conf"
}

loadavg() { cut -d' ' -f1-3 /proc/loadavg; }

kc_version="" kc_start=""
if [ "$keycloak" = 1 ]; then
    kc_dir="$run/keycloak"
    # README's realm, with lifetimes past the run: Keycloak's default 5-minute access token
    # would end oauth2-proxy's sessions (it does not refresh without --cookie-refresh) and make
    # the module refresh mid-run.
    python3 - "$NGX_OIDC_ROOT/tests/keycloak/realm-test.json" "$run/realm-bench.json" <<'PY'
import json, sys
realm = json.load(open(sys.argv[1]))
for k in ("accessTokenLifespan", "ssoSessionIdleTimeout", "ssoSessionMaxLifespan", "clientSessionIdleTimeout", "clientSessionMaxLifespan"):
    realm[k] = 86400
json.dump(realm, open(sys.argv[2], "w"))
PY
    "$NGX_OIDC_ROOT/scripts/keycloak.sh" start "$kc_dir" "$run/realm-bench.json" \
        || die "Keycloak did not start (BENCH_KEYCLOAK=0 benchmarks against the stand-in provider)"
    # shellcheck disable=SC1091
    kc_version="$(. "$kc_dir/keycloak.env" && echo "$KC_VERSION")"
    # shellcheck disable=SC1091
    kc_start="$(. "$kc_dir/keycloak.env" && echo "$KC_START_SECONDS")"
    # shellcheck disable=SC1091
    issuer="$(. "$kc_dir/keycloak.env" && echo "$KC_URL")/realms/test"
    client_secret=test-client-secret
    provider_name="Keycloak $kc_version"
else
    say "starting the test OpenID Provider on 127.0.0.1:$P_IDP (log: $run/idp.log)"
    start_test_idp "$P_IDP" "$P_B $P_O $P_R" 86400 "$run/idp.log"
    idp_pid=$!
    wait_port "$P_IDP" 30
    issuer="http://127.0.0.1:$P_IDP/realms/test"
    client_secret=secret
    provider_name="the stand-in provider (tests/idp)"
fi

# The seed article's oauth2-proxy flags (tests/common's OAuth2Proxy runs the same), plus:
# --oidc-extra-audience=account in place of the article's Audience mapper, PKCE (the test
# realm's client requires it), and request logging off, as nginx's access_log is. Go may use every core (its default; generous to O, whose nginx
# has one worker like every case); BENCH_PIN=1 puts it on the nginx worker's core.
o2p_pin=()
[ "${BENCH_PIN:-0}" = 1 ] && o2p_pin=(taskset -c 1)
say "starting oauth2-proxy $NGX_OIDC_OAUTH2_PROXY_VERSION on 127.0.0.1:$P_O2P (log: $run/oauth2-proxy.log)"
OAUTH2_PROXY_CLIENT_ID=test OAUTH2_PROXY_CLIENT_SECRET="$client_secret" \
    OAUTH2_PROXY_COOKIE_SECRET="$(head -c 32 /dev/urandom | base64 -w0 | tr '+/' '-_')" \
    "${o2p_pin[@]}" "$NGX_OIDC_OAUTH2_PROXY" --skip-provider-button=true --ssl-insecure-skip-verify \
    --provider=keycloak-oidc --upstream=file:///dev/null --oidc-issuer-url="$issuer" \
    --redirect-url="http://127.0.0.1:$P_O/oauth2/callback" --http-address="127.0.0.1:$P_O2P" \
    --email-domain='*' --cookie-secure=false --insecure-oidc-allow-unverified-email=true \
    --set-xauthrequest --oidc-extra-audience=account --code-challenge-method=S256 \
    --request-logging=false \
    >"$run/oauth2-proxy.log" 2>&1 &
o2p_pid=$!
wait_port "$P_O2P" 30

say "starting redis-server on 127.0.0.1:$P_REDIS for case R (dir: $run/redis)"
mkdir -p "$run/redis"
redis-server --bind 127.0.0.1 --port "$P_REDIS" --dir "$run/redis" --save "" --appendonly no \
    --logfile "$run/redis/redis.log" --daemonize no &
redis_pid=$!
wait_port "$P_REDIS" 30

write_conf "$run" on
say "starting nginx (config: $run/nginx.conf, ports A=$P_A B=$P_B C=$P_C D=$P_D upstream=$P_U)"
"$nginx_bin" -p "$run/" -e "$run/error.log" -c "$run/nginx.conf" &
nginx_pid=$!
wait_port "$P_A" 30
sleep 0.3
worker_pid() { cut -d' ' -f1 "/proc/$nginx_pid/task/$nginx_pid/children"; }
worker="$(worker_pid)"
[ -n "$worker" ] || die "no nginx worker found under master $nginx_pid"

say "logging in as demo and as biggroups through $provider_name, and as demo through oauth2-proxy"
login_url="http://127.0.0.1:$P_B$path"
cookie_demo="$(python3 "$helpers/login.py" "$login_url" demo demo)" || die "login as demo failed (see $run/error.log, $run/idp.log)"
cookie_big="$(python3 "$helpers/login.py" "$login_url" biggroups biggroups)" || die "login as biggroups failed"
cookie_o2p="$(python3 "$helpers/login.py" "http://127.0.0.1:$P_O$path" demo demo _oauth2_proxy)" \
    || die "login as demo through oauth2-proxy failed (see $run/oauth2-proxy.log, $run/error.log)"
cookie_r="$(python3 "$helpers/login.py" "http://127.0.0.1:$P_R$path" demo demo)" || die "login as demo on case R failed"
cookie_garbage="$(garbage_cookie "$cookie_demo")"
declare -A cookie=([A]=$cookie_demo [B]=$cookie_demo [B2]=$cookie_big [C]=$cookie_demo [D]=$cookie_garbage [O]=$cookie_o2p [R]=$cookie_r)
declare -A want_status=([A]=200 [B]=200 [B2]=200 [C]=200 [D]=401 [O]=200 [R]=200)

# ------------------------------------------------------------------------------ checks
checks_json="[]"
check_all() { # $1 = before|after
    local c got status bytes ok expected bad=0
    for c in "${cases[@]}"; do
        got="$(curl -s -o /dev/null -w '%{http_code} %{size_download}' \
            -H 'Accept: application/json' -H "Cookie: ${cookie[$c]}" \
            "http://127.0.0.1:${port[$c]}$path")" || got="000 0"
        read -r status bytes <<<"$got"
        ok=true
        if [ "${want_status[$c]}" = 200 ]; then
            expected="200, $file_bytes bytes"
            { [ "$status" = 200 ] && [ "$bytes" = "$file_bytes" ]; } || ok=false
        else
            expected="${want_status[$c]}"
            [ "$status" = "${want_status[$c]}" ] || ok=false
        fi
        [ "$ok" = true ] || bad=1
        printf '    %-6s %-2s HTTP %s, %s bytes (expected %s)%s\n' "$1" "$c" "$status" "$bytes" \
            "$expected" "$([ "$ok" = true ] || echo '  <-- WRONG')" >&2
        checks_json="$(python3 -c 'import json,sys; a=json.loads(sys.argv[1]); a.append(dict(when=sys.argv[2], case=sys.argv[3], status=int(sys.argv[4]), bytes=int(sys.argv[5]), expected=sys.argv[6], ok=sys.argv[7]=="true")); print(json.dumps(a))' \
            "$checks_json" "$1" "$c" "$status" "$bytes" "$expected" "$ok")"
    done
    echo "$checks_json" >"$out/checks.json"
    [ "$bad" = 0 ] || die "case check failed ($1): see above and $run/error.log"
}

wrk_pin=()
[ "${BENCH_PIN:-0}" = 1 ] && wrk_pin=(taskset -c 0)
run_wrk() { # case round duration -> appends to runs.jsonl when round is a number
    local c="$1" rd="$2" dur="$3" raw="$out/raw/$2-$1.txt"
    "${wrk_pin[@]}" wrk -t1 -c"$conns" -d"$dur" --latency -s "$helpers/wrk-json.lua" \
        -H 'Accept: application/json' -H "Cookie: ${cookie[$c]}" \
        "http://127.0.0.1:${port[$c]}$path" >"$raw" 2>&1 || die "wrk failed: $(cat "$raw")"
    grep -q '^WRKJSON ' "$raw" || die "no WRKJSON line in $raw"
    if [[ "$rd" =~ ^[0-9]+$ ]]; then
        sed -n "s/^WRKJSON {/{\"case\":\"$c\",\"round\":\"$rd\",/p" "$raw" >>"$out/runs.jsonl"
    fi
    sed -n 's/^WRKJSON //p' "$raw"
}

load_before="$(loadavg)"
date_str="$(date -u '+%Y-%m-%d %H:%M UTC')"
machine="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(nproc) CPUs, $(uname -sr)"

if [ "$wrk_part" = 1 ]; then
    say "checking every case"
    check_all before

    say "warming up (1 s per case, not counted)"
    for c in "${cases[@]}"; do run_wrk "$c" warmup 1s >/dev/null; done

    say "$rounds round(s) of ${cases[*]}, $duration each, $conns connections (load: $(loadavg))"
    for r in $(seq 1 "$rounds"); do
        for c in "${cases[@]}"; do
            j="$(run_wrk "$c" "$r" "$duration")"
            python3 -c 'import json,sys; j=json.loads(sys.argv[3]); print("    round %s %-2s %10.0f req/s  p50 %d us  p99 %d us  non-2xx %d" % (sys.argv[1], sys.argv[2], j["requests"] / (j["duration_us"] / 1e6), j["p50_us"], j["p99_us"], j["err_status"]))' \
                "$r" "$c" "$j" >&2
        done
    done

    # ---------------------------------------------------------------------- leak check
    rate_b="$(python3 -c '
import json, statistics, sys
rs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
print(int(statistics.median(r["requests"] / (r["duration_us"] / 1e6) for r in rs if r["case"] == "B")))' \
        "$out/runs.jsonl")"
    status_kib() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }
    [ "$(worker_pid)" = "$worker" ] || die "the nginx worker changed (crashed?): see $run/error.log"
    hwm0="$(status_kib "$worker" VmHWM)" rss0="$(status_kib "$worker" VmRSS)"
    say "leak check: $leak_requests requests of case B (~$rate_b req/s), worker $worker VmHWM ${hwm0} KiB"
    done_requests=0 leak_runs=0 leak_non2xx=0
    while [ "$done_requests" -lt "$leak_requests" ] && [ "$leak_runs" -lt 10 ]; do
        left=$((leak_requests - done_requests))
        secs=$((left * 110 / 100 / (rate_b > 0 ? rate_b : 1) + 1))
        j="$(run_wrk B "leak$leak_runs" "${secs}s")"
        read -r n s < <(python3 -c 'import json,sys; j=json.loads(sys.argv[1]); print(j["requests"], j["err_status"])' "$j")
        done_requests=$((done_requests + n)) leak_non2xx=$((leak_non2xx + s)) leak_runs=$((leak_runs + 1))
    done
    [ "$(worker_pid)" = "$worker" ] || die "the nginx worker changed (crashed?): see $run/error.log"
    hwm1="$(status_kib "$worker" VmHWM)" rss1="$(status_kib "$worker" VmRSS)"
    say "leak check: $done_requests requests, VmHWM ${hwm0} -> ${hwm1} KiB, VmRSS ${rss0} -> ${rss1} KiB"
    cat >"$out/rss.json" <<EOF
{"pid": $worker, "requests": $done_requests, "runs": $leak_runs, "non2xx": $leak_non2xx,
 "before": {"VmHWM": $hwm0, "VmRSS": $rss0}, "after": {"VmHWM": $hwm1, "VmRSS": $rss1}}
EOF

    say "checking every case again"
    check_all after
fi
load_after="$(loadavg)"

if grep -E '\[(alert|emerg|crit)\]|exited on signal' "$run/error.log" >&2; then
    die "nginx logged alerts (above, $run/error.log)"
fi
kill -QUIT "$nginx_pid" 2>/dev/null || true
wait "$nginx_pid" 2>/dev/null || true
nginx_pid=""

# ------------------------------------------------------------------------------ callgrind
if [ "$cg_part" = 1 ]; then
    cg="$run/callgrind"
    write_conf "$cg" off
    cg_run() { # name case n -> total Ir
        local name="$1" c="$2" n="$3" f="$cg/callgrind.$1.out" vpid
        valgrind --tool=callgrind --callgrind-out-file="$f" \
            "$nginx_bin" -p "$cg/" -e "$cg/error.log" -c "$cg/nginx.conf" >"$cg/valgrind.$name.log" 2>&1 &
        vpid=$!
        if ! wait_port "$P_A" 120; then
            kill -TERM "$vpid" 2>/dev/null || true
            die "nginx under valgrind did not start: $cg/valgrind.$name.log"
        fi
        if [ "$n" -gt 0 ]; then
            python3 "$helpers/client.py" get "${port[$c]}" "$path" "$n" "${want_status[$c]}" "${cookie[$c]}" \
                || { kill -TERM "$vpid" 2>/dev/null || true; die "callgrind run $name: wrong answers"; }
        fi
        kill -QUIT "$vpid"
        wait "$vpid" || true
        awk '$1 == "summary:" || $1 == "totals:" { print $2; exit }' "$f"
    }
    say "callgrind: a baseline run with 0 requests"
    base_ir="$(cg_run base A 0)"
    declare -A cg_ir
    for c in "${cg_cases[@]}"; do
        say "callgrind: case $c, $cg_requests requests"
        cg_ir[$c]="$(cg_run "$c" "$c" "$cg_requests")"
        callgrind_annotate --inclusive=yes --threshold=100 "$cg/callgrind.$c.out" \
            >"$out/callgrind-$c-inclusive.txt" 2>/dev/null || true
    done
    python3 - "$out/callgrind.json" "$base_ir" "$cg_requests" "$out" \
        "A=${cg_ir[A]}" "B=${cg_ir[B]}" "B2=${cg_ir[B2]}" "C=${cg_ir[C]}" "D=${cg_ir[D]}" "R=${cg_ir[R]}" <<'EOF'
import json, re, sys
path, base, n, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
cases = {}
for kv in sys.argv[5:]:
    c, ir = kv.split("=")
    ir = int(ir)
    x = {"ir": ir, "ir_per_request": (ir - base) / n, "top_module": []}
    try:
        lines = open(f"{out}/callgrind-{c}-inclusive.txt").read().splitlines()
    except OSError:
        lines = []
    for line in lines:
        m = re.match(r"\s*([\d,]+)\s+(?:\([^)]*\)\s+)?(.*)$", line)
        if not m or "ngx_http_oidc_module.so" not in m.group(2):
            continue
        ir_f = int(m.group(1).replace(",", ""))
        fn = m.group(2)
        if "access_handler" in fn and "handler_ir_per_request" not in x:
            x["handler_ir_per_request"] = ir_f / n
        if len(x["top_module"]) < 10:
            x["top_module"].append({"ir": ir_f, "ir_per_request": ir_f / n, "function": fn})
    cases[c] = x
json.dump({"base_ir": base, "requests": n, "cases": cases}, open(path, "w"), indent=1)
EOF
    if grep -E '\[(alert|emerg|crit)\]|exited on signal' "$cg/error.log" >&2; then
        die "nginx under valgrind logged alerts (above, $cg/error.log)"
    fi
fi

# ------------------------------------------------------------------------------ report
python3 - "$out/meta.json" <<EOF
import json, sys
json.dump({
    "date": "$date_str", "machine": """$machine""",
    "nginx": """$("$nginx_bin" -v 2>&1 | sed 's/^nginx version: //')""",
    "wrk": """$(wrk -v 2>&1 | head -n1 | cut -d' ' -f2)""",
    "rounds": $rounds, "duration": "$duration", "connections": $conns,
    "file_bytes": $file_bytes, "cookie_demo_bytes": ${#cookie_demo}, "cookie_big_bytes": ${#cookie_big},
    "garbage_bytes": ${#cookie_garbage}, "load_before": "$load_before", "load_after": "$load_after",
    "module_sha256": "$(sha256sum "$run/ngx_http_oidc_module.so" | cut -c1-16)",
    "pinned": "${BENCH_PIN:-0}" == "1",
    "cases": "${cases[*]}", "provider": "$provider_name", "keycloak_start_seconds": "$kc_start",
    "oauth2_proxy": """$("$NGX_OIDC_OAUTH2_PROXY" --version 2>&1 | head -n1)""",
    "cookie_o2p_bytes": ${#cookie_o2p},
}, open(sys.argv[1], "w"), indent=1)
EOF
if [ "$wrk_part" = 1 ]; then
    python3 "$helpers/report.py" "$out"
    say "wrote $out/results.md and $out/results.svg"
else
    python3 - "$out/callgrind.json" <<'EOF'
import json, sys
j = json.load(open(sys.argv[1]))
print(f"base {j['base_ir']:,} Ir, {j['requests']} requests per case")
for c, x in j["cases"].items():
    print(f"{c:<3} {x['ir_per_request']:>12,.0f} Ir/request   access handler {x.get('handler_ir_per_request', 0):>10,.0f}")
EOF
fi
