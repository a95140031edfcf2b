#!/usr/bin/env bash
# Builds (once) the oauth2-proxy that tests/migration.rs and scripts/bench.sh run against, and
# prints its path: export NGX_OIDC_OAUTH2_PROXY="$(scripts/build-oauth2-proxy.sh)".
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"
ensure_oauth2_proxy
echo "$NGX_OIDC_OAUTH2_PROXY"
