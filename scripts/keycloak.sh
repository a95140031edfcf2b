#!/usr/bin/env bash
# A real Keycloak on 127.0.0.1 for the tests, the demo and the benchmark.
#
#   scripts/keycloak.sh fetch                 downloads the server distribution with Maven (into
#                                             the Maven cache, once) and unpacks it (once) under
#                                             ~/.cache/ngx-oidc; prints the unpacked directory
#   scripts/keycloak.sh start DIR [REALM.json ...]
#                                             starts Keycloak in dev mode with DIR as its private
#                                             home (database, logs, TLS files), the realms imported
#                                             from the files (default: tests/keycloak/*.json),
#                                             http and https at once; waits until every realm
#                                             answers and writes DIR/keycloak.env
#   scripts/keycloak.sh stop DIR              stops it (and waits until it has exited)
#
# DIR/keycloak.env (shell syntax, one KEY=value a line): KC_PID, KC_HTTP_PORT, KC_HTTPS_PORT,
# KC_MANAGEMENT_PORT, KC_URL (http://127.0.0.1:PORT), KC_HTTPS_URL, KC_CA (the test CA's PEM that
# signed the https certificate for 127.0.0.1 and localhost), KC_ADMIN_USER, KC_ADMIN_PASSWORD (the
# master realm's admin), KC_REALMS, KC_VERSION, KC_JAVA, KC_START_SECONDS, KC_LOG.
#
# Environment: KC_HTTP_PORT, KC_HTTPS_PORT, KC_MANAGEMENT_PORT (default: free ports),
#   NGX_OIDC_KEYCLOAK_VERSION (default below), NGX_OIDC_CACHE (default ~/.cache/ngx-oidc),
#   NGX_OIDC_KEYCLOAK_JAVA_HOME (default: the java on PATH), NGX_OIDC_KEYCLOAK_TIMEOUT (seconds
#   to wait for readiness, default 600), NGX_OIDC_KEYCLOAK_OWNER_PID (stop Keycloak when that
#   process exits: a test binary cannot run code at exit, so a watchdog does it).
#
# One distribution is shared by every instance; each instance gets its own home made of links
# to it plus its own data/ (kc.home.dir), so instances never share a database and
# `--import-realm` reads that instance's data/import/. The build options below are fixed: a
# different one would make Keycloak rebuild the shared distribution under running instances.
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"

KC_VERSION="${NGX_OIDC_KEYCLOAK_VERSION:-26.5.6}"
CACHE="${NGX_OIDC_CACHE:-$HOME/.cache/ngx-oidc}"
M2="${NGX_OIDC_M2_REPOSITORY:-$HOME/.m2/repository}"
KC_DIST="$CACHE/keycloak-$KC_VERSION"
ADMIN_USER=admin
ADMIN_PASSWORD=admin
# Build-time options (see the header): the dev profile's in-file H2 database under the
# instance's own data/, health checks on the management port.
BUILD_OPTIONS=(--health-enabled=true)

java_bin() {
    if [ -n "${NGX_OIDC_KEYCLOAK_JAVA_HOME:-}" ]; then
        echo "$NGX_OIDC_KEYCLOAK_JAVA_HOME/bin/java"
    else
        command -v java || true
    fi
}

# Java 17+ and Maven from Debian when missing (Keycloak 26.5 runs on Java 17 and 21+).
ensure_java_maven() {
    local java
    java="$(java_bin)"
    if [ -z "$java" ] || [ ! -x "$java" ]; then
        _apt_install openjdk-17-jre-headless
        java="$(java_bin)"
    fi
    command -v mvn >/dev/null 2>&1 || _apt_install maven
    local major
    major="$("$java" -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java.specification.version = //p')"
    [ "${major:-0}" -ge 17 ] || die "Keycloak $KC_VERSION needs Java 17 or newer; $java is $major"
}

# Maven fetches the distribution into the Maven cache (once); it is unpacked once into $KC_DIST.
fetch() {
    ensure_java_maven
    mkdir -p "$CACHE"
    exec 8>"$CACHE/keycloak-$KC_VERSION.fetch.lock"
    flock -w 1200 8 || die "another scripts/keycloak.sh fetch held $CACHE/keycloak-$KC_VERSION.fetch.lock for 20 minutes"
    if [ ! -f "$KC_DIST/.ngx-oidc-unpacked" ]; then
        local tgz="$M2/org/keycloak/keycloak-quarkus-dist/$KC_VERSION/keycloak-quarkus-dist-$KC_VERSION.tar.gz"
        if [ ! -f "$tgz" ]; then
            say "mvn dependency:get org.keycloak:keycloak-quarkus-dist:$KC_VERSION:tar.gz (once, into $M2)"
            mvn -q -B dependency:get -Dartifact="org.keycloak:keycloak-quarkus-dist:$KC_VERSION:tar.gz" \
                -Dtransitive=false -Dmaven.repo.local="$M2" >&2 \
                || die "Maven could not fetch org.keycloak:keycloak-quarkus-dist:$KC_VERSION:tar.gz"
        fi
        say "unpacking Keycloak $KC_VERSION into $KC_DIST"
        rm -rf "$KC_DIST" "$KC_DIST.tmp"
        mkdir -p "$KC_DIST.tmp"
        tar -xzf "$tgz" -C "$KC_DIST.tmp" --strip-components=1
        touch "$KC_DIST.tmp/.ngx-oidc-unpacked"
        mv "$KC_DIST.tmp" "$KC_DIST"
    fi
    exec 8>&-
    echo "$KC_DIST"
}

# A test CA and a certificate for 127.0.0.1 and localhost signed by it, in DIR/tls. 127.0.0.1
# is also a DNS name in it: nginx's proxy_ssl_verify matches the host as a DNS name only.
make_tls() {
    local tls="$1/tls"
    mkdir -p "$tls"
    openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=ngx-oidc test CA" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
        -keyout "$tls/ca.key" -out "$tls/ca.pem" 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" \
        -keyout "$tls/server.key" -out "$tls/server.csr" 2>/dev/null
    printf '%s\n' "basicConstraints=CA:FALSE" "keyUsage=critical,digitalSignature,keyEncipherment" \
        "extendedKeyUsage=serverAuth" "subjectAltName=IP:127.0.0.1,DNS:127.0.0.1,DNS:localhost" >"$tls/server.ext"
    openssl x509 -req -in "$tls/server.csr" -CA "$tls/ca.pem" -CAkey "$tls/ca.key" \
        -CAcreateserial -days 30 -extfile "$tls/server.ext" -out "$tls/server.pem" 2>/dev/null
}

# Starts Keycloak in the background: DIR HOME HTTP_PORT HTTPS_PORT MANAGEMENT_PORT; sets $pid
# and writes DIR/keycloak.pid. setsid: Keycloak and its JVM form a process group that
# stop_group ends as a whole.
launch() {
    local dir="$1" home="$2" java
    java="$(java_bin)"
    say "starting Keycloak $KC_VERSION (java: $java) on http://127.0.0.1:$3 and https://127.0.0.1:$4 (log: $dir/keycloak.log)"
    JAVA="$java" KC_BOOTSTRAP_ADMIN_USERNAME="$ADMIN_USER" KC_BOOTSTRAP_ADMIN_PASSWORD="$ADMIN_PASSWORD" \
        setsid "$KC_DIST/bin/kc.sh" "-Dkc.home.dir=$home" start-dev \
        "${BUILD_OPTIONS[@]}" --import-realm \
        --http-host=127.0.0.1 --http-port="$3" --https-port="$4" \
        --https-certificate-file="$dir/tls/server.pem" --https-certificate-key-file="$dir/tls/server.key" \
        --http-management-port="$5" \
        </dev/null >"$dir/keycloak.log" 2>&1 &
    pid=$!
    echo "$pid" >"$dir/keycloak.pid"
}

# Polls until every realm's discovery document answers: PID LOG HTTP_PORT REALM...; the
# deadline is NGX_OIDC_KEYCLOAK_TIMEOUT seconds.
wait_ready() {
    local pid="$1" log="$2" http="$3" r ready
    shift 3
    local deadline=$((SECONDS + ${NGX_OIDC_KEYCLOAK_TIMEOUT:-600}))
    for r in "$@"; do
        ready=0
        while [ "$SECONDS" -lt "$deadline" ]; do
            kill -0 "$pid" 2>/dev/null || {
                tail -n 40 "$log" >&2
                die "Keycloak exited during startup; log: $log"
            }
            if curl -sf -o /dev/null "http://127.0.0.1:$http/realms/$r/.well-known/openid-configuration"; then
                ready=1
                break
            fi
            sleep 0.2
        done
        [ "$ready" = 1 ] || {
            kill -TERM -- "-$pid" 2>/dev/null || true
            tail -n 40 "$log" >&2
            die "Keycloak did not serve realm $r within ${NGX_OIDC_KEYCLOAK_TIMEOUT:-600} s; log: $log"
        }
    done
}

# SIGTERM to Keycloak's process group, SIGKILL to the group if kc.sh is still there after 20 s
# (Keycloak itself stops in a second or two); returns once it has exited.
stop_group() {
    local pid="$1"
    kill -TERM -- "-$pid" 2>/dev/null || true
    local deadline=$((SECONDS + 20))
    while kill -0 "$pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do
        sleep 0.2
    done
    if kill -0 "$pid" 2>/dev/null; then
        say "Keycloak ($pid) did not stop on SIGTERM within 20 s: SIGKILL"
        kill -KILL -- "-$pid" 2>/dev/null || true
        while kill -0 "$pid" 2>/dev/null; do
            sleep 0.2
        done
    fi
}

start() {
    local dir="$1"
    shift
    local realms=("$@")
    if [ "${#realms[@]}" -eq 0 ]; then
        realms=("$NGX_OIDC_ROOT"/tests/keycloak/*.json)
    fi
    fetch >/dev/null
    mkdir -p "$dir"
    dir="$(cd "$dir" && pwd)"
    local home="$dir/home"
    # A Keycloak of an earlier run still using DIR (its owner died before it could stop it)
    # would hold the database's file lock.
    if [ -f "$dir/keycloak.pid" ]; then
        local old
        old="$(cat "$dir/keycloak.pid")"
        if tr '\0' ' ' <"/proc/$old/cmdline" 2>/dev/null | grep -qF -- "-Dkc.home.dir=$home "; then
            say "stopping the Keycloak ($old) still running in $dir"
            stop_group "$old"
        fi
    fi
    rm -rf "$home"
    mkdir -p "$home/data/import"
    local d
    for d in bin conf lib providers themes; do
        ln -s "$KC_DIST/$d" "$home/$d"
    done
    local names=() f
    for f in "${realms[@]}"; do
        [ -f "$f" ] || die "realm file $f not found"
        cp "$f" "$home/data/import/"
        names+=("$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["realm"])' "$f")")
    done
    make_tls "$dir"

    local ports
    read -r -a ports <<<"$(free_ports 3)"
    local http="${KC_HTTP_PORT:-${ports[0]}}" https="${KC_HTTPS_PORT:-${ports[1]}}"
    local mgmt="${KC_MANAGEMENT_PORT:-${ports[2]}}"
    local log="$dir/keycloak.log" pid

    # The first start after unpacking rebuilds the distribution for dev mode (Quarkus
    # augmentation, ~30 s); concurrent first starts would rebuild it at the same time.
    exec 9>"$CACHE/keycloak-$KC_VERSION.build.lock"
    if [ ! -f "$KC_DIST/.ngx-oidc-dev-built" ]; then
        flock -w 1200 9 || die "another Keycloak start held $CACHE/keycloak-$KC_VERSION.build.lock for 20 minutes"
    fi

    # Creating the database schema, the master realm and importing the realms is most of a
    # start (~60 of ~100 s on 2 busy cores). The first start with a given set of realm files
    # does it and saves the stopped database as a template; later starts copy the template.
    local key template
    key="$(cat "${realms[@]}" | sha256sum | cut -c1-16)"
    template="$CACHE/keycloak-$KC_VERSION-db/$key.mv.db"
    mkdir -p "$(dirname "$template")"
    exec 7>"$template.lock"
    if [ ! -f "$template" ]; then
        flock -w 1200 7 || die "another Keycloak start held $template.lock for 20 minutes"
    fi
    if [ ! -f "$template" ]; then
        say "first start with these realm files: importing them, then keeping the database as $template"
        launch "$dir" "$home" "$http" "$https" "$mgmt"
        wait_ready "$pid" "$log" "$http" "${names[@]}"
        stop_group "$pid"
        cp "$home/data/h2/keycloakdb.mv.db" "$template.tmp.$$"
        mv "$template.tmp.$$" "$template"
        mv "$log" "$dir/keycloak-import.log"
    fi
    exec 7>&-
    mkdir -p "$home/data/h2"
    cp "$template" "$home/data/h2/keycloakdb.mv.db"

    local t0
    t0="$(date +%s.%N)"
    launch "$dir" "$home" "$http" "$https" "$mgmt"
    if [ -n "${NGX_OIDC_KEYCLOAK_OWNER_PID:-}" ]; then
        local owner="$NGX_OIDC_KEYCLOAK_OWNER_PID"
        # A watchdog, not a test's wait: it only cleans up after the owner is gone, with
        # `stop` (SIGKILL if SIGTERM is not enough: kc.sh hangs on a SIGTERM that arrives
        # while it is starting Java, and Java then runs on).
        setsid bash -c "while kill -0 $owner 2>/dev/null && kill -0 $pid 2>/dev/null; do sleep 1; done; '$0' stop '$dir'" \
            </dev/null >/dev/null 2>&1 &
    fi
    wait_ready "$pid" "$log" "$http" "${names[@]}"
    local took
    took="$(python3 -c 'import sys; print(f"{float(sys.argv[2]) - float(sys.argv[1]):.1f}")' "$t0" "$(date +%s.%N)")"
    touch "$KC_DIST/.ngx-oidc-dev-built"
    exec 9>&-
    local realms_csv
    realms_csv="$(IFS=,; echo "${names[*]}")"
    cat >"$dir/keycloak.env" <<EOF
KC_PID=$pid
KC_HTTP_PORT=$http
KC_HTTPS_PORT=$https
KC_MANAGEMENT_PORT=$mgmt
KC_URL=http://127.0.0.1:$http
KC_HTTPS_URL=https://127.0.0.1:$https
KC_CA=$dir/tls/ca.pem
KC_ADMIN_USER=$ADMIN_USER
KC_ADMIN_PASSWORD=$ADMIN_PASSWORD
KC_REALMS=$realms_csv
KC_VERSION=$KC_VERSION
KC_JAVA=$(java_bin)
KC_START_SECONDS=$took
KC_LOG=$log
EOF
    say "Keycloak $KC_VERSION is up after $took s (realms: $realms_csv); settings in $dir/keycloak.env"
}

stop() {
    local dir="$1"
    [ -f "$dir/keycloak.pid" ] || die "$dir/keycloak.pid not found: nothing started there"
    stop_group "$(cat "$dir/keycloak.pid")"
    rm -f "$dir/keycloak.pid"
}

case "${1:-}" in
fetch) fetch ;;
start)
    [ $# -ge 2 ] || die "usage: scripts/keycloak.sh start DIR [REALM.json ...]"
    shift
    start "$@"
    ;;
stop)
    [ $# -eq 2 ] || die "usage: scripts/keycloak.sh stop DIR"
    stop "$2"
    ;;
*) die "usage: scripts/keycloak.sh fetch | start DIR [REALM.json ...] | stop DIR" ;;
esac
