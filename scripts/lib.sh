# Shared helpers for scripts/*.sh. Source it; do not run it.
# shellcheck shell=bash

NGX_OIDC_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
NGX_OIDC_TARGET="${CARGO_TARGET_DIR:-$NGX_OIDC_ROOT/target}"
NGX_OIDC_NGINX_OUT="$NGX_OIDC_TARGET/ngx-oidc/sbin/nginx"
NGX_OIDC_MODULE_OUT="$NGX_OIDC_TARGET/ngx-oidc/modules/ngx_http_oidc_module.so"

# Debian packages the build needs (bindgen needs libclang; nginx needs pcre2, zlib, openssl).
NGX_OIDC_APT_PACKAGES=(libssl-dev libpcre2-dev zlib1g-dev libclang-dev)
# The cargo-fuzz that fuzz/run.sh was written against (scripts/test.sh installs it when missing).
NGX_OIDC_CARGO_FUZZ_VERSION=0.13.2

say() { printf '==> %s\n' "$*" >&2; }
die() {
    printf '\nERROR: %s\n' "$*" >&2
    exit 1
}

_apt_updated=0
_apt_install() {
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null 2>&1 || die "need root (or sudo) to apt-get install: $*"
        sudo=(sudo)
    fi
    if [ "$_apt_updated" -eq 0 ]; then
        say "apt-get update"
        "${sudo[@]}" apt-get update -qq || die "apt-get update failed"
        _apt_updated=1
    fi
    say "apt-get install $*"
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "$@" \
        || die "apt-get install $* failed"
}

_dpkg_installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

# Install the build packages that are missing (no apt-get at all when none are).
ensure_build_deps() {
    command -v dpkg-query >/dev/null 2>&1 || {
        say "no dpkg: not a Debian system, assuming build dependencies are installed"
        return 0
    }
    local missing=() p
    for p in "${NGX_OIDC_APT_PACKAGES[@]}"; do
        _dpkg_installed "$p" || missing+=("$p")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        _apt_install "${missing[@]}"
    fi
    command -v cargo >/dev/null 2>&1 || die "cargo not found: install Rust (rustup) first"
}

# Node.js for the test OpenID Provider (tests/idp, npm oidc-provider needs Node >= 20.19).
ensure_node() {
    if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
        _apt_install nodejs npm
    fi
    local major
    major="$(node -p 'process.versions.node.split(".")[0]')"
    if [ "$major" -lt 20 ]; then
        die "node $(node -v) is too old for tests/idp (oidc-provider needs Node >= 20.19)"
    fi
}

# npm ci in tests/<dir> when node_modules is missing or package-lock.json changed.
_ensure_npm_deps() {
    local rel="$1" dir="$NGX_OIDC_ROOT/$1"
    [ -f "$dir/package-lock.json" ] || die "$rel/package-lock.json is missing"
    ensure_node
    local want have="" stamp="$dir/node_modules/.ngx-oidc-lock.sha256"
    want="$(sha256sum "$dir/package-lock.json" | cut -d' ' -f1)"
    [ -f "$stamp" ] && have="$(cat "$stamp")"
    if [ ! -d "$dir/node_modules" ] || [ "$want" != "$have" ]; then
        say "npm ci --prefix $rel"
        npm ci --prefix "$dir" --no-audit --no-fund --loglevel=error \
            || die "npm ci --prefix $rel failed"
        echo "$want" >"$stamp"
    fi
}

# npm ci for the test provider when node_modules is missing or package-lock.json changed.
ensure_idp_deps() { _ensure_npm_deps tests/idp; }

# Commands whose Debian package has the same name (wrk, curl, python3, valgrind): apt-get
# installs the missing ones.
ensure_commands() {
    local c missing=()
    for c in "$@"; do
        command -v "$c" >/dev/null 2>&1 || missing+=("$c")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        _apt_install "${missing[@]}"
    fi
}

# Debian's redis-server (and redis-cli) for tests/cluster.rs and the two-node soak; the tests
# start their own servers on free ports, never the packaged service.
ensure_redis() {
    command -v dpkg-query >/dev/null 2>&1 && ! _dpkg_installed redis-server && _apt_install redis-server
    command -v redis-server >/dev/null 2>&1 || die "redis-server is missing (apt-get install redis-server)"
}

# Debian's dnsmasq (the binary alone, no service): the DNS server nginx's `resolver` asks in
# tests/cluster.rs when the Redis of a cluster moves to another address.
ensure_dnsmasq() {
    command -v dpkg-query >/dev/null 2>&1 && ! _dpkg_installed dnsmasq-base && _apt_install dnsmasq-base
    [ -x /usr/sbin/dnsmasq ] || die "dnsmasq is missing (apt-get install dnsmasq-base)"
}

# npm ci for tests/browser (playwright-core); never downloads a browser.
ensure_browser_deps() { PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 _ensure_npm_deps tests/browser; }

# The Python packages of tests/python/requirements.txt in a virtual environment under
# target/py (where the tests look for them), installed when the file changed.
NGX_OIDC_PYTHON_ENV="$NGX_OIDC_TARGET/py"
ensure_python_deps() {
    local req="$NGX_OIDC_ROOT/tests/python/requirements.txt" want have=""
    local stamp="$NGX_OIDC_PYTHON_ENV/.ngx-oidc-requirements.sha256"
    want="$(sha256sum "$req" | cut -d' ' -f1)"
    [ -f "$stamp" ] && have="$(cat "$stamp")"
    [ -x "$NGX_OIDC_PYTHON_ENV/bin/python" ] && [ "$want" = "$have" ] && return 0
    ensure_commands python3
    say "python3 -m venv target/py; pip install -r tests/python/requirements.txt"
    python3 -m venv "$NGX_OIDC_PYTHON_ENV" || die "python3 -m venv failed (Debian: apt-get install python3-venv)"
    "$NGX_OIDC_PYTHON_ENV/bin/pip" install --quiet --require-hashes -r "$req" \
        || die "pip install -r tests/python/requirements.txt failed"
    echo "$want" >"$stamp"
}

# Debian's Chromium for tests/browser. Returns non-zero (does not die) when it cannot be installed.
NGX_OIDC_CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
ensure_chromium() {
    [ -x "$NGX_OIDC_CHROMIUM" ] && return 0
    command -v apt-get >/dev/null 2>&1 || return 1
    (_apt_install chromium) || return 1
    [ -x "$NGX_OIDC_CHROMIUM" ]
}

# ------------------------------------------------------------ oauth2-proxy (the setup we replace)

# The oauth2-proxy that the migration test and the benchmark run, built from the Go module proxy
# with the module's own go.mod/go.sum (`go install pkg@version` uses them and checks them against
# the checksum database). Cached per user, outside the worktree, so that every worktree and CI
# run reuses one build; the version is stamped into the binary (as upstream's release build
# does), which is how a cached binary of another version is noticed and rebuilt.
NGX_OIDC_OAUTH2_PROXY_VERSION=v7.15.6
NGX_OIDC_OAUTH2_PROXY="${NGX_OIDC_OAUTH2_PROXY:-${XDG_CACHE_HOME:-$HOME/.cache}/ngx-oidc/bin/oauth2-proxy}"

# Builds $NGX_OIDC_OAUTH2_PROXY unless it is already this version (needs Go; ~2 min cold).
ensure_oauth2_proxy() {
    local bin="$NGX_OIDC_OAUTH2_PROXY" v="$NGX_OIDC_OAUTH2_PROXY_VERSION" tmp
    if [ -x "$bin" ] && "$bin" --version 2>/dev/null | grep -q "^oauth2-proxy $v "; then
        return 0
    fi
    command -v go >/dev/null 2>&1 || die "go not found: oauth2-proxy $v is built from source (install Go 1.26+)"
    say "building oauth2-proxy $v into $bin (go install, cached)"
    tmp="$(dirname "$bin")/.build.$$"
    mkdir -p "$tmp"
    GOBIN="$tmp" GOFLAGS=-mod=mod CGO_ENABLED=0 go install \
        -ldflags "-X github.com/oauth2-proxy/oauth2-proxy/v7/pkg/version.VERSION=$v" \
        "github.com/oauth2-proxy/oauth2-proxy/v7@$v" || {
        rm -rf "$tmp"
        die "go install oauth2-proxy $v failed"
    }
    mv -f "$tmp/oauth2-proxy" "$bin"
    rm -rf "$tmp"
    "$bin" --version | grep -q "^oauth2-proxy $v " || die "$bin does not report version $v"
}

# ------------------------------------------------------------ load scripts (bench.sh, soak.sh)

# scripts/build.sh, or with NGX_OIDC_SKIP_BUILD=1 the last build as it is.
build_unless_skipped() {
    if [ "${NGX_OIDC_SKIP_BUILD:-0}" = 1 ]; then
        [ -x "$NGX_OIDC_NGINX_OUT" ] && [ -f "$NGX_OIDC_MODULE_OUT" ] || die "run scripts/build.sh first"
    else
        "$NGX_OIDC_ROOT/scripts/build.sh"
    fi
}

# Private copies of nginx and the module in DIR (DIR/nginx, DIR/ngx_http_oidc_module.so): a
# concurrent scripts/build.sh cannot change them mid-run.
copy_binaries() {
    cp "$NGX_OIDC_NGINX_OUT" "$1/nginx"
    cp "$NGX_OIDC_MODULE_OUT" "$1/ngx_http_oidc_module.so"
}

# An `oidc_provider` block for the test provider: NAME, provider port, cookie key file, extra
# directives.
oidc_provider_block() {
    cat <<EOF
    oidc_provider $1 {
        issuer             http://127.0.0.1:$2/realms/test;
        client_id          test;
        client_secret      secret;
        cookie_secret_file $3;
        cookie_secure      off;
        ${4:-}
    }
EOF
}

# N free TCP ports on 127.0.0.1, on one line.
free_ports() {
    python3 -c '
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in socks])
for s in socks: s.close()' "$1"
}

# Waits until 127.0.0.1:PORT accepts connections (at most SECONDS, default 60).
wait_port() { python3 "$NGX_OIDC_ROOT/scripts/bench/client.py" wait "$1" "${2:-60}"; }

# Starts the test provider in the background ($! is its pid): PORT, the nginx port(s) whose
# /oauth2/callback it accepts (space-separated), access/ID token lifetime in seconds, log file.
start_test_idp() {
    local uris
    uris="$(printf 'http://127.0.0.1:%s/oauth2/callback,' $2)"
    IDP_PORT=$1 IDP_REALM=test IDP_CLIENT_ID=test IDP_CLIENT_SECRET=secret \
        IDP_REDIRECT_URIS="${uris%,}" \
        IDP_ACCESS_TOKEN_TTL=$3 IDP_ID_TOKEN_TTL=$3 IDP_REFRESH_TOKEN_TTL=86400 \
        IDP_SESSION_TTL=86400 \
        node "$NGX_OIDC_ROOT/tests/idp/server.js" >"$4" 2>&1 &
}

# nginx.conf up to and including `http {` and its temp paths, every path inside DIR:
# DIR, module .so, master_process (on|off), worker_processes, extra main-context lines.
nginx_conf_prelude() {
    local dir="$1" user_line=""
    # Workers would switch to nobody and fail to read the key files otherwise.
    [ "$(id -u)" -eq 0 ] && user_line="user root;"
    cat <<EOF
load_module $2;
daemon off;
master_process $3;
worker_processes $4;
${5:-}
$user_line
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $dir/tmp/client_body;
    proxy_temp_path $dir/tmp/proxy;
    fastcgi_temp_path $dir/tmp/fastcgi;
    uwsgi_temp_path $dir/tmp/uwsgi;
    scgi_temp_path $dir/tmp/scgi;
    types { text/html html; }
    default_type application/octet-stream;
EOF
}

# A session cookie of garbage shaped like a real one (`_oidc=v1.` + base64url) and as long as
# COOKIE: it gets decoded and fails the AES-GCM tag check.
garbage_cookie() {
    local len=$((${#1} - 9))
    printf '_oidc=v1.%s' "$(head -c $((len * 3 / 4 + 3)) /dev/urandom | base64 -w0 | tr '+/' '-_' | tr -d '=' | cut -c1-"$len")"
}

# Copy without ever writing into a file that a running nginx may have mapped.
install_atomically() {
    local src="$1" dst="$2" tmp
    mkdir -p "$(dirname "$dst")"
    tmp="$(dirname "$dst")/.$(basename "$dst").tmp.$$"
    cp "$src" "$tmp"
    chmod 0755 "$tmp"
    mv -f "$tmp" "$dst"
}
