#!/bin/sh
# Run by the official image's /docker-entrypoint.sh before nginx starts (it runs every
# /docker-entrypoint.d/*.sh). Creates the session cookie key once per container; a new
# container means a new key, i.e. everyone logs in again. In production mount a persistent
# key file instead (openssl rand -base64 32 > cookie-keys).
set -eu
dir=/etc/nginx/oidc
if [ ! -s "$dir/cookie-keys" ]; then
    mkdir -p "$dir"
    umask 077
    head -c 32 /dev/urandom | base64 > "$dir/cookie-keys"
    echo "$0: created $dir/cookie-keys"
fi
