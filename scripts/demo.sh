#!/usr/bin/env bash
# Try ngx-oidc in a browser: the test OpenID Provider on 127.0.0.1:8081, a small upstream on
# 127.0.0.1:8090 and nginx with the module on 127.0.0.1:8080. Ctrl-C stops all three.
# Usage: scripts/demo.sh        (state, logs and the rendered nginx.conf live in target/demo/)
#        scripts/demo.sh --keycloak   a real Keycloak on 127.0.0.1:8081 instead of the test
#                                     provider (scripts/keycloak.sh: fetched with Maven once,
#                                     realm tests/keycloak/realm-test.json; starts in a minute or two)
#        NGX_OIDC_SKIP_BUILD=1 scripts/demo.sh   uses the last scripts/build.sh output as is
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"
cd "$NGX_OIDC_ROOT"

keycloak=0
case "${1:-}" in
"") ;;
--keycloak) keycloak=1 ;;
*) die "usage: scripts/demo.sh [--keycloak]" ;;
esac

PORT=8080 IDP_PORT=8081 UPSTREAM_PORT=8090
demo="$NGX_OIDC_TARGET/demo"

if [ "${NGX_OIDC_SKIP_BUILD:-0}" = 1 ]; then
    [ -x "$NGX_OIDC_NGINX_OUT" ] && [ -f "$NGX_OIDC_MODULE_OUT" ] || die "run scripts/build.sh first"
else
    "$NGX_OIDC_ROOT/scripts/build.sh"
fi
[ "$keycloak" = 1 ] || ensure_idp_deps

mkdir -p "$demo/tmp"
if [ ! -s "$demo/cookie-keys" ]; then
    say "generating a cookie key in $demo/cookie-keys"
    (umask 077 && head -c 32 /dev/urandom | base64 >"$demo/cookie-keys")
fi

user_line=""
[ "$(id -u)" -eq 0 ] && user_line="user root;"  # workers would run as nobody otherwise
client_secret=secret
[ "$keycloak" = 1 ] && client_secret=test-client-secret # client test of realm-test.json
sed -e "s|@MODULE@|$NGX_OIDC_MODULE_OUT|g" \
    -e "s|^\( *client_secret *\)secret;|\1$client_secret;|" \
    -e "s|@PREFIX@|$demo|g" \
    -e "s|@USER@|$user_line|g" \
    -e "s|@PORT@|$PORT|g" \
    -e "s|@IDP_PORT@|$IDP_PORT|g" \
    -e "s|@UPSTREAM_PORT@|$UPSTREAM_PORT|g" \
    nginx-conf/demo.conf >"$demo/nginx.conf"

pids=()
cleanup() {
    trap - INT TERM EXIT
    say "stopping"
    [ -n "${nginx_pid:-}" ] && { kill -QUIT "$nginx_pid" 2>/dev/null || true; }
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    if [ -f "$demo/keycloak/keycloak.pid" ]; then
        scripts/keycloak.sh stop "$demo/keycloak" || true
    fi
    wait 2>/dev/null || true
}
trap cleanup EXIT
trap 'cleanup; exit 130' INT TERM

wait_http() { # url what pid
    local i
    for i in $(seq 1 100); do
        kill -0 "$3" 2>/dev/null || die "$2 exited; see its log in $demo/"
        node -e 'fetch(process.argv[1]).then(r => process.exit(r.status < 500 ? 0 : 1), () => process.exit(1))' \
            "$1" && return 0
        sleep 0.2
    done
    die "$2 did not answer at $1"
}

if [ "$keycloak" = 1 ]; then
    say "starting Keycloak on 127.0.0.1:$IDP_PORT (realm tests/keycloak/realm-test.json; log: $demo/keycloak/keycloak.log)"
    KC_HTTP_PORT=$IDP_PORT NGX_OIDC_KEYCLOAK_OWNER_PID=$$ \
        scripts/keycloak.sh start "$demo/keycloak" "$NGX_OIDC_ROOT/tests/keycloak/realm-test.json"
else
    say "starting the test OpenID Provider on 127.0.0.1:$IDP_PORT (log: $demo/idp.log)"
    IDP_PORT=$IDP_PORT IDP_REALM=test IDP_CLIENT_ID=test IDP_CLIENT_SECRET=secret \
        IDP_REDIRECT_URIS="http://127.0.0.1:$PORT/oauth2/callback,http://localhost:$PORT/oauth2/callback" \
        IDP_POST_LOGOUT_REDIRECT_URIS="http://127.0.0.1:$PORT/,http://localhost:$PORT/,http://127.0.0.1:$PORT/public/,http://localhost:$PORT/public/" \
        node tests/idp/server.js >"$demo/idp.log" 2>&1 &
    pids+=($!)
    wait_http "http://127.0.0.1:$IDP_PORT/_test/health" "the test provider" "$!"
fi

say "starting the demo upstream on 127.0.0.1:$UPSTREAM_PORT (log: $demo/upstream.log)"
node scripts/demo-upstream.js "$UPSTREAM_PORT" >"$demo/upstream.log" 2>&1 &
pids+=($!)
wait_http "http://127.0.0.1:$UPSTREAM_PORT/" "the demo upstream" "$!"

say "starting nginx on 127.0.0.1:$PORT (config: $demo/nginx.conf, log: $demo/error.log)"
"$NGX_OIDC_NGINX_OUT" -p "$demo/" -e "$demo/error.log" -c "$demo/nginx.conf" -t -q || die "nginx -t failed: see above"
"$NGX_OIDC_NGINX_OUT" -p "$demo/" -e "$demo/error.log" -c "$demo/nginx.conf" &
nginx_pid=$!
wait_http "http://127.0.0.1:$PORT/public/" "nginx" "$nginx_pid"

echo
echo "Open http://127.0.0.1:$PORT/ and log in as demo / demo"
echo "(other users: alice/alice, bob/bob, biggroups/biggroups; Ctrl-C stops everything)"
if [ "$keycloak" = 1 ]; then
    echo "The login page is Keycloak's own; its admin console is http://127.0.0.1:$IDP_PORT/admin"
    echo "(admin / admin). /oauth2/sign_out ends the Keycloak session too."
else
    echo "Sign out clears nginx's session cookie; the provider's own session stays, so the next"
    echo "protected page logs you back in without the form (provider logout is not wired up yet)."
fi
echo
# Return when any of the three exits, or on Ctrl-C (the trap stops the rest).
wait -n "$nginx_pid" "${pids[@]}" || true
say "a demo process exited; see the logs in $demo/"
