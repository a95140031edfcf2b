#!/usr/bin/env bash
# Builds the fuzz targets and runs each for a while (default 60 s) with libFuzzer.
#   fuzz/run.sh                 every target, 60 s each, two at a time
#   fuzz/run.sh 300 jwt jwks    the named targets, 300 s each
# Needs cargo-fuzz (`cargo install cargo-fuzz`); works on stable Rust through RUSTC_BOOTSTRAP.
set -euo pipefail
cd "$(dirname "$0")"
secs="${1:-60}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cargo fuzz list)
fi

# nginx-sys needs nginx's headers and build dir: reuse scripts/build.sh's vendored build when
# there is one (else nginx-sys builds its own copy once).
root="$(cd .. && pwd)"
if [ -z "${NGINX_BUILD_DIR:-}" ]; then
    objs="$(ls -td "$root"/target/release/build/nginx-sys-*/out/objs 2>/dev/null | head -n1 || true)"
    src="$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/nginx-src-*/nginx 2>/dev/null | tail -n1 || true)"
    if [ -n "$objs" ] && [ -n "$src" ]; then
        export NGINX_BUILD_DIR="$objs" NGINX_SOURCE_DIR="$src"
    fi
fi

RUSTC_BOOTSTRAP=1 cargo fuzz build -O 2>&1 | grep -v '^\s*>>>' | tail -n 3
bin=target/x86_64-unknown-linux-gnu/release

mkdir -p logs
run() {
    local t="$1"
    mkdir -p "corpus/$t" "artifacts/$t"
    if "$bin/$t" -max_total_time="$secs" -rss_limit_mb=2048 \
        -artifact_prefix="artifacts/$t/" "corpus/$t" >"logs/$t.log" 2>&1; then
        echo "$t: ok, $(grep -o 'Done [0-9]* runs' "logs/$t.log" | tail -n1)"
    else
        echo "$t: FAILED, see fuzz/logs/$t.log and fuzz/artifacts/$t/"
        return 1
    fi
}
status=0
for ((i = 0; i < ${#targets[@]}; i += 2)); do
    run "${targets[i]}" &
    a=$!
    b=
    if [ $((i + 1)) -lt ${#targets[@]} ]; then
        run "${targets[i + 1]}" &
        b=$!
    fi
    wait "$a" || status=1
    [ -z "$b" ] || wait "$b" || status=1
done
exit "$status"
