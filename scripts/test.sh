#!/usr/bin/env bash
# The one command that runs every check and test, on a fresh Debian 12 box too:
#   apt packages (only the missing ones), npm ci for tests/idp (when needed),
#   cargo fmt --check, cargo clippy -D warnings, scripts/build.sh, cargo test --release
#   (unit tests of the lib + end-to-end tests in tests/ against a real nginx and test provider).
# Usage: scripts/test.sh [cargo test args...]   e.g. scripts/test.sh --test login a_tampered
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
trap 'rc=$?; [ $rc -ne 0 ] && printf "\nFAILED (exit %s) at step: %s\n" "$rc" "$step" >&2' EXIT

step="install dependencies"
ensure_build_deps
ensure_idp_deps

run cargo fmt --all --check
run cargo clippy --release --all-targets -- -D warnings
run scripts/build.sh

export NGX_OIDC_NGINX="$NGX_OIDC_NGINX_OUT"
export NGX_OIDC_MODULE="$NGX_OIDC_MODULE_OUT"
say "NGX_OIDC_NGINX=$NGX_OIDC_NGINX"
say "NGX_OIDC_MODULE=$NGX_OIDC_MODULE"
run cargo test --release --no-fail-fast "$@"
say "all checks and tests passed"
