#!/usr/bin/env bash
# Build ngx_http_oidc_module.so for the nginx you actually run. A dynamic module loads only into
# the exact nginx version it was compiled against; anything else fails `nginx -t` with
#   [emerg] module "/.../ngx_http_oidc_module.so" version 1028003 instead of 1022001 in ...
# (the numbers are the module's and the running nginx's versions: 1028003 = 1.28.3).
#
# Usage:
#   scripts/build-module.sh                          vendored nginx 1.28.x (= scripts/build.sh)
#   scripts/build-module.sh --nginx-version 1.27.4   the official nginx:1.27.4 image (or the
#                                                    nginx.org packages), same configure flags
#   scripts/build-module.sh --debian                 Debian's packaged nginx (apt nginx-dev)
#   extra arguments after `--` go to cargo build
#
# --nginx-version X.Y.Z takes the nginx source from, in this order:
#   1. $NGINX_SOURCE_DIR (an unpacked nginx-X.Y.Z source tree; it is copied, never modified);
#   2. target/nginx-src-cache/nginx-X.Y.Z.tar.gz (put the nginx.org tarball there by hand);
#   3. the nginx-src crate in ~/.cargo/registry when it is exactly version X.Y.Z;
#   4. a download of https://nginx.org/download/nginx-X.Y.Z.tar.gz into that cache — only when
#      the machine can reach nginx.org. Our build machines cannot (no internet apart from Debian,
#      crates.io, npm and PyPI): there the script stops and names the file to put in the cache.
# The tree is configured like the official image (see OFFICIAL_IMAGE_FLAGS below), and the module
# is built against it with NGINX_SOURCE_DIR/NGINX_BUILD_DIR (nginx-sys, DESIGN.md §6) in a
# separate cargo target dir, so the vendored build in target/release is left alone.
#
# Output: target/ngx-oidc/<flavour>/modules/ngx_http_oidc_module.so, and the exact nginx
# version it loads into.
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"
cd "$NGX_OIDC_ROOT"

# The configure flags of the official Docker image, i.e. `docker run --rm nginx:1.28.3 nginx -V`
# (docker-library/nginx installs the nginx.org Debian packages; their debian/rules set these flags,
# identical for 1.25.x–1.29.x; --with-http_v3_module since 1.25). Written down from published
# `nginx -V` outputs of the image and the nginx.org packaging; no registry is reachable from our
# build machines, so re-check with `docker run --rm nginx:X.Y.Z nginx -V` when you can.
# Only --with-compat matters for loading the module: it makes the module's binary signature
# independent of the other flags; the rest keeps the headers (and so the bindings) the same as
# the image's. --with-cc-opt/--with-ld-opt are left out on purpose: they
# only change how nginx itself is compiled (paths, hardening), not struct layouts.
OFFICIAL_IMAGE_FLAGS=(
    --prefix=/etc/nginx
    --sbin-path=/usr/sbin/nginx
    --modules-path=/usr/lib/nginx/modules
    --conf-path=/etc/nginx/nginx.conf
    --error-log-path=/var/log/nginx/error.log
    --http-log-path=/var/log/nginx/access.log
    --pid-path=/run/nginx.pid
    --lock-path=/run/nginx.lock
    --http-client-body-temp-path=/var/cache/nginx/client_temp
    --http-proxy-temp-path=/var/cache/nginx/proxy_temp
    --http-fastcgi-temp-path=/var/cache/nginx/fastcgi_temp
    --http-uwsgi-temp-path=/var/cache/nginx/uwsgi_temp
    --http-scgi-temp-path=/var/cache/nginx/scgi_temp
    --user=nginx
    --group=nginx
    --with-compat
    --with-file-aio
    --with-threads
    --with-http_addition_module
    --with-http_auth_request_module
    --with-http_dav_module
    --with-http_flv_module
    --with-http_gunzip_module
    --with-http_gzip_static_module
    --with-http_mp4_module
    --with-http_random_index_module
    --with-http_realip_module
    --with-http_secure_link_module
    --with-http_slice_module
    --with-http_ssl_module
    --with-http_stub_status_module
    --with-http_sub_module
    --with-http_v2_module
    --with-http_v3_module
    --with-mail
    --with-mail_ssl_module
    --with-stream
    --with-stream_realip_module
    --with-stream_ssl_module
    --with-stream_ssl_preread_module
)

CACHE_DIR="$NGX_OIDC_TARGET/nginx-src-cache"
mode=vendored
version=""
cargo_args=()
while [ $# -gt 0 ]; do
    case "$1" in
    --nginx-version)
        [ $# -ge 2 ] || die "--nginx-version needs a version, e.g. --nginx-version 1.28.3"
        mode=version
        version="$2"
        shift 2
        ;;
    --nginx-version=*)
        mode=version
        version="${1#*=}"
        shift
        ;;
    --debian)
        mode=debian
        shift
        ;;
    -h | --help)
        sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
        exit 0
        ;;
    --)
        shift
        cargo_args=("$@")
        break
        ;;
    *) die "unknown argument '$1' (see scripts/build-module.sh --help)" ;;
    esac
done

# NGX_VERSION_NUMBER from nginx.h, e.g. 1028003, is what nginx compares when loading a module.
nginx_h_version() { sed -n 's/^#define NGINX_VERSION  *"\(.*\)"/\1/p' "$1/src/core/nginx.h"; }
version_number() {
    local IFS=.
    # shellcheck disable=SC2086
    set -- $1
    printf '%d%03d%03d\n' "$1" "$2" "$3"
}

# Copy a source tree to $2 (fresh), then configure it there with the remaining arguments.
configure_tree() {
    local src="$1" dst="$2"
    shift 2
    rm -rf "$dst"
    mkdir -p "$(dirname "$dst")"
    cp -a "$src" "$dst"
    local configure=./configure
    [ -x "$dst/configure" ] || configure=auto/configure # git layout (nginx-src crate)
    say "configure nginx $(nginx_h_version "$dst") in ${dst#"$NGX_OIDC_ROOT"/}"
    (cd "$dst" && "$configure" "$@" >"$dst.configure.log" 2>&1) \
        || die "nginx configure failed; see $dst.configure.log"
    [ -f "$dst/objs/ngx_auto_config.h" ] || die "configure wrote no $dst/objs/ngx_auto_config.h"
}

# cargo build of the module only (no vendored nginx) against a configured tree.
build_against() {
    local tree="$1" flavour="$2"
    local tdir="$NGX_OIDC_TARGET/nginx-build/$flavour/cargo"
    say "cargo build --release --no-default-features against ${tree#"$NGX_OIDC_ROOT"/}"
    NGINX_SOURCE_DIR="$tree" NGINX_BUILD_DIR="$tree/objs" CARGO_TARGET_DIR="$tdir" \
        cargo build --release --no-default-features --lib "${cargo_args[@]}" \
        || die "cargo build against nginx $(nginx_h_version "$tree") ($flavour) failed"
    local so="$tdir/release/libngx_http_oidc_module.so"
    [ -f "$so" ] || die "cargo built no $so"
    out="$NGX_OIDC_TARGET/ngx-oidc/$flavour/modules/ngx_http_oidc_module.so"
    install_atomically "$so" "$out"
}

report() {
    local so="$1" ver="$2" where="$3"
    echo "module: $so"
    echo "loads into: nginx/$ver exactly (NGX_VERSION_NUMBER $(version_number "$ver")), $where"
    echo "any other version refuses it: [emerg] module \"$so\" version $(version_number "$ver") instead of <the running nginx's> ..."
}

case "$mode" in
vendored)
    "$(dirname "$0")/build.sh" "${cargo_args[@]}"
    ver="$("$NGX_OIDC_NGINX_OUT" -v 2>&1 | sed -n 's|.*nginx/\([0-9.]*\).*|\1|p')"
    report "$NGX_OIDC_MODULE_OUT" "$ver" \
        "e.g. $NGX_OIDC_NGINX_OUT or the official image nginx:$ver"
    ;;

version)
    [[ "$version" =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || die "--nginx-version wants X.Y.Z, got '$version'"
    ensure_build_deps
    tarball="$CACHE_DIR/nginx-$version.tar.gz"
    src=""
    if [ -n "${NGINX_SOURCE_DIR:-}" ]; then
        [ -f "$NGINX_SOURCE_DIR/src/core/nginx.h" ] || die "NGINX_SOURCE_DIR=$NGINX_SOURCE_DIR is no nginx source tree"
        have="$(nginx_h_version "$NGINX_SOURCE_DIR")"
        [ "$have" = "$version" ] || die "NGINX_SOURCE_DIR holds nginx $have, not $version"
        src="$NGINX_SOURCE_DIR"
    fi
    if [ -z "$src" ] && [ ! -f "$tarball" ]; then
        for d in "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/nginx-src-*/nginx; do
            if [ -f "$d/src/core/nginx.h" ] && [ "$(nginx_h_version "$d")" = "$version" ]; then
                say "using nginx $version from the nginx-src crate: $d"
                src="$d"
                break
            fi
        done
    fi
    if [ -z "$src" ] && [ ! -f "$tarball" ]; then
        url="https://nginx.org/download/nginx-$version.tar.gz"
        mkdir -p "$CACHE_DIR"
        say "no nginx $version source: trying to download $url"
        if command -v curl >/dev/null 2>&1 \
            && curl -fsSL --connect-timeout 10 --max-time 120 -o "$tarball.part" "$url"; then
            mv -f "$tarball.part" "$tarball"
        else
            rm -f "$tarball.part"
            die "cannot get the nginx $version source: this machine cannot download $url
(our build machines have no internet apart from Debian packages, crates.io, npm and PyPI).
Fix: on a machine with internet run
    curl -fLO $url
and copy the file to
    $tarball
(or unpack it and set NGINX_SOURCE_DIR=/path/to/nginx-$version), then run this again."
        fi
    fi
    work="$NGX_OIDC_TARGET/nginx-build/official-$version"
    if [ -z "$src" ]; then
        say "unpacking $tarball"
        rm -rf "$work/unpacked"
        mkdir -p "$work/unpacked"
        tar -xzf "$tarball" -C "$work/unpacked" || die "cannot unpack $tarball"
        src="$work/unpacked/nginx-$version"
        [ -f "$src/src/core/nginx.h" ] || die "$tarball does not contain nginx-$version/"
        have="$(nginx_h_version "$src")"
        [ "$have" = "$version" ] || die "$tarball holds nginx $have, not $version"
    fi
    configure_tree "$src" "$work/nginx" "${OFFICIAL_IMAGE_FLAGS[@]}"
    build_against "$work/nginx" "official-$version"
    report "$out" "$version" "e.g. the official image nginx:$version (mount it at /etc/nginx/modules/)"
    ;;

debian)
    # nginx-dev ships the exact source Debian's nginx was built from in /usr/share/nginx/src and
    # its configure flags in /usr/share/nginx/src/conf_flags (NGX_CONF_FLAGS=(...)).
    deb_src=/usr/share/nginx/src
    ensure_build_deps
    if [ ! -f "$deb_src/conf_flags" ] || ! command -v /usr/sbin/nginx >/dev/null 2>&1; then
        _apt_install nginx nginx-dev
    fi
    [ -f "$deb_src/conf_flags" ] || die "apt nginx-dev installed no $deb_src/conf_flags"
    # shellcheck disable=SC1091
    . "$deb_src/conf_flags"
    ver="$(nginx_h_version "$deb_src")"
    sys_ver="$(/usr/sbin/nginx -v 2>&1 | sed -n 's|.*nginx/\([0-9.]*\).*|\1|p')"
    [ "$ver" = "$sys_ver" ] || die "nginx-dev source is $ver but /usr/sbin/nginx is $sys_ver: apt-get install nginx nginx-dev (same version)"
    work="$NGX_OIDC_TARGET/nginx-build/debian-$ver"
    configure_tree "$deb_src" "$work/nginx" "${NGX_CONF_FLAGS[@]}"
    build_against "$work/nginx" "debian-$ver"
    report "$out" "$ver" "Debian's /usr/sbin/nginx (copy it to /usr/lib/nginx/modules/ and add /etc/nginx/modules-enabled/50-mod-http-oidc.conf)"
    ;;
esac
