#!/usr/bin/env bash
# Build the module and the matching nginx binary, and install both under target/ngx-oidc/:
#   target/ngx-oidc/modules/ngx_http_oidc_module.so
#   target/ngx-oidc/sbin/nginx          (no prefix compiled in: run it with -p DIR)
# Usage: scripts/build.sh            (extra arguments go to cargo build)
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"
cd "$NGX_OIDC_ROOT"

ensure_build_deps

say "cargo build --release $*"
cargo build --release "$@" || die "cargo build --release failed"

module="$NGX_OIDC_TARGET/release/libngx_http_oidc_module.so"
[ -f "$module" ] || die "cargo built no $module"
# The vendored nginx (feature "vendored") is built by nginx-sys' build script; take the newest.
nginx="$(ls -t "$NGX_OIDC_TARGET"/release/build/nginx-sys-*/out/objs/nginx 2>/dev/null | head -n1 || true)"
[ -n "$nginx" ] && [ -x "$nginx" ] \
    || die "no nginx binary under $NGX_OIDC_TARGET/release/build/nginx-sys-*/out/objs/ (is the 'vendored' feature on?)"

install_atomically "$module" "$NGX_OIDC_MODULE_OUT"
install_atomically "$nginx" "$NGX_OIDC_NGINX_OUT"

echo "module: $NGX_OIDC_MODULE_OUT"
echo "nginx:  $NGX_OIDC_NGINX_OUT"
"$NGX_OIDC_NGINX_OUT" -v 2>&1
