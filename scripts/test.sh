#!/usr/bin/env bash
# The one command that runs every check and test, on a fresh Debian 12 box too:
#   apt packages (only the missing ones), npm ci for tests/idp (when needed), oauth2-proxy
#   (built once from the Go module proxy and cached, for tests/migration.rs and the benchmark),
#   cargo fmt --check, cargo clippy -D warnings, scripts/build.sh, cargo test --release
#   (unit tests of the lib + end-to-end tests in tests/ against a real nginx and test provider,
#   tests/cluster.rs against a real redis-server from Debian, and tests/keycloak.rs against a
#   real Keycloak: scripts/keycloak.sh, fetched with Maven),
#   scripts/check-configs.sh (nginx -t of every nginx-conf/ config, realm.json and YAML parsed),
#   the module built for Debian's nginx 1.22.1 with the login, lifecycle, fault, hostile and
#   cluster tests against it,
#   a one-second smoke run of scripts/bench.sh, every fuzz target for 10 s
#   (NGX_OIDC_FUZZ_SECONDS; installs cargo-fuzz), then the headless Chromium tests in
#   tests/browser (apt chromium + npm ci when needed).
# Usage: scripts/test.sh [cargo test args...]   e.g. scripts/test.sh --test login a_tampered
#        NGX_OIDC_SKIP_BROWSER=1 scripts/test.sh   skips the browser tests
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"
cd "$NGX_OIDC_ROOT"

step=""
run() {
    step="$*"
    say "$step"
    "$@"
}
kc_dir="$NGX_OIDC_TARGET/keycloak-run"
stop_keycloak() {
    [ -f "$kc_dir/keycloak.pid" ] && scripts/keycloak.sh stop "$kc_dir" 2>/dev/null || true
}
trap 'rc=$?; stop_keycloak; [ $rc -ne 0 ] && printf "\nFAILED (exit %s) at step: %s\n" "$rc" "$step" >&2' EXIT

step="install dependencies"
ensure_build_deps
ensure_idp_deps
ensure_python_deps # tests/operations.rs parses oidc_metrics with prometheus_client
ensure_commands wrk curl openssl # wrk: tests/hostile.rs loads nginx during reloads; curl --http2 and a test CA: tests/protocols.rs
ensure_redis # tests/cluster.rs: two nginx nodes share revocations through a real Redis
ensure_dnsmasq # tests/cluster.rs: nginx's resolver follows a Redis that moves
ensure_oauth2_proxy
export NGX_OIDC_OAUTH2_PROXY

# A real Keycloak for tests/keycloak.rs and the Chromium test, started now so that its start
# (a minute or two on 2 cores; the first run also fetches it with Maven and unpacks it) overlaps
# with clippy and the build. One Keycloak serves the whole run; it stops when this script ends.
mkdir -p "$NGX_OIDC_TARGET" # a fresh clone has no target/ yet: the start log goes there
say "starting Keycloak in the background (log: $NGX_OIDC_TARGET/keycloak-start.log)"
NGX_OIDC_KEYCLOAK_OWNER_PID=$$ scripts/keycloak.sh start "$kc_dir" >"$NGX_OIDC_TARGET/keycloak-start.log" 2>&1 &
kc_start_pid=$!

run cargo fmt --all --check
run cargo clippy --release --all-targets -- -D warnings
run scripts/build.sh

export NGX_OIDC_NGINX="$NGX_OIDC_NGINX_OUT"
export NGX_OIDC_MODULE="$NGX_OIDC_MODULE_OUT"
say "NGX_OIDC_NGINX=$NGX_OIDC_NGINX"
say "NGX_OIDC_MODULE=$NGX_OIDC_MODULE"
step="wait for Keycloak"
wait "$kc_start_pid" || {
    tail -n 40 "$NGX_OIDC_TARGET/keycloak-start.log" >&2
    die "Keycloak did not start; see $NGX_OIDC_TARGET/keycloak-start.log"
}
say "$(tail -n 1 "$NGX_OIDC_TARGET/keycloak-start.log")"
export NGX_OIDC_KEYCLOAK_ENV="$kc_dir/keycloak.env"
run cargo test --release --no-fail-fast "$@"
run scripts/check-configs.sh
# Debian 12's packaged nginx (1.22.1, older header layout): the same source, built against
# Debian's nginx-dev tree, must log in end to end with /usr/sbin/nginx.
run scripts/build-module.sh --debian
debian_module="$(ls -t "$NGX_OIDC_TARGET"/ngx-oidc/debian-*/modules/ngx_http_oidc_module.so | head -n1)"
run env NGX_OIDC_NGINX=/usr/sbin/nginx NGX_OIDC_MODULE="$debian_module" \
    cargo test --release --test login --test lifecycle --test faults --test hostile --test cluster
# The benchmark is not a test (too noisy for CI), but one tiny run keeps it from rotting: it
# checks every case's answers, a short leak check and that no worker crashed.
run env NGX_OIDC_SKIP_BUILD=1 scripts/bench.sh --quick
# Every fuzz target for a few seconds (5 minutes each is a manual `fuzz/run.sh 300`): they keep
# building, and a crash on the seeds or a quick mutation fails CI.
step="install cargo-fuzz"
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --version "$NGX_OIDC_CARGO_FUZZ_VERSION" --locked
run fuzz/run.sh "${NGX_OIDC_FUZZ_SECONDS:-10}"

if [ "${NGX_OIDC_SKIP_BROWSER:-0}" = 1 ]; then
    say "SKIP browser tests: NGX_OIDC_SKIP_BROWSER=1"
else
    step="install Chromium for the browser tests"
    if ensure_chromium; then
        ensure_browser_deps
        say "$("$NGX_OIDC_CHROMIUM" --version 2>/dev/null || echo "$NGX_OIDC_CHROMIUM")"
        export CHROMIUM="$NGX_OIDC_CHROMIUM"
        run node --test --test-concurrency=1 tests/browser/test/*.test.js
    elif [ "${CI:-}" = true ]; then
        die "Chromium ($NGX_OIDC_CHROMIUM) could not be installed (apt-get install chromium): in CI the browser tests must run"
    else
        say "SKIP browser tests: Chromium ($NGX_OIDC_CHROMIUM) is missing and apt-get install chromium failed"
    fi
fi
say "all checks and tests passed"
