#!/usr/bin/env bash
# Validates the deployment files under nginx-conf/ without a container engine:
#   1. `nginx -t` of every shipped nginx config with the module loaded, using the vendored nginx
#      1.28.x and module from scripts/build.sh. Each config is copied into a temp dir and only
#      machine-specific things are rewritten (sed): the load_module path, /etc/nginx/oidc/ key
#      and secret files, `resolver`, upstream host names that do not resolve here (-> 127.0.0.1),
#      TLS certificate paths (-> a throwaway self-signed pair), log/pid/temp paths, mime.types,
#      and `user` lines. Directives, contexts and module usage are checked as shipped.
#      Configs: minimal.conf, demo.conf, docker/nginx.conf, the nginx.conf inside
#      k8s/configmap.yaml, and debian/ (50-mod-http-oidc.conf + oidc.conf inside a copy of
#      Debian's nginx.conf layout: modules-enabled/*.conf, http { sites-enabled/* }).
#   2. nginx-conf/keycloak/realm.json parses (python3 -m json.tool) and has what the demo needs.
#   3. docker-compose.yml and k8s/*.yaml parse (python3 yaml), with a few structural checks.
#   4. sh -n on the entrypoint script docker/40-oidc-cookie-key.sh.
# What this does NOT do: start containers, Keycloak or Kubernetes (no container engine or image
# registry is reachable here), or load the module into Debian's nginx 1.22.1 (it does not build
# for 1.22, see scripts/build-module.sh --debian).
# Usage: scripts/check-configs.sh        (builds with scripts/build.sh if nothing is built yet)
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"
cd "$NGX_OIDC_ROOT"

conf_dir="nginx-conf"
nginx="${NGX_OIDC_NGINX:-$NGX_OIDC_NGINX_OUT}"
module="${NGX_OIDC_MODULE:-$NGX_OIDC_MODULE_OUT}"
if [ ! -x "$nginx" ] || [ ! -f "$module" ]; then
    say "no built nginx/module yet: scripts/build.sh"
    "$(dirname "$0")/build.sh" >&2
fi
command -v python3 >/dev/null 2>&1 || die "python3 is needed to parse realm.json and the YAML files"
if ! python3 -c 'import yaml' 2>/dev/null; then
    # python3 may be a pyenv interpreter that does not see Debian's python3-yaml: use pip.
    python3 -m pip install --quiet pyyaml >&2 || true
    python3 -c 'import yaml' 2>/dev/null || die "python3 has no yaml module: python3 -m pip install pyyaml"
fi
command -v openssl >/dev/null 2>&1 || die "openssl is needed for a throwaway test certificate"

tmp="$(mktemp -d "${TMPDIR:-/tmp}/ngx-oidc-check.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
failures=0
fail() {
    printf 'FAIL: %s\n' "$*" >&2
    failures=$((failures + 1))
}

# Shared fixtures: key and secret files, a self-signed certificate, mime.types.
mkdir -p "$tmp/oidc"
head -c 32 /dev/urandom | base64 >"$tmp/oidc/cookie-keys"
printf 'secret' >"$tmp/oidc/client-secret"
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost \
    -keyout "$tmp/test.key" -out "$tmp/test.crt" >/dev/null 2>&1 \
    || die "openssl could not make a test certificate"
mime=""
for m in /etc/nginx/mime.types "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/nginx-src-*/nginx/conf/mime.types; do
    [ -f "$m" ] && mime="$m" && break
done
if [ -n "$mime" ]; then cp "$mime" "$tmp/mime.types"; else echo 'types { text/html html; }' >"$tmp/mime.types"; fi

# Rewrite a config ($1) for this machine into $2; $3 is the per-config prefix dir.
rewrite() {
    local src="$1" dst="$2" prefix="$3"
    mkdir -p "$prefix/logs" "$prefix/tmp"
    sed -E \
        -e "s#([[:space:]])/tmp/(nginx\.pid|client_body|proxy|fastcgi|uwsgi|scgi);#\1$prefix/tmp/\2;#" \
        -e "s|^([[:space:]]*)load_module[[:space:]]+[^;]+;|\1load_module $module;|" \
        -e "s|/etc/nginx/oidc/|$tmp/oidc/|g" \
        -e "s|/etc/nginx/mime\.types|$tmp/mime.types|g" \
        -e "s|^([[:space:]]*)resolver[[:space:]]+[^;]+;|\1resolver 127.0.0.1;|" \
        -e "s|^([[:space:]]*)user[[:space:]]+[^;]+;|\1# (user line removed for nginx -t)|" \
        -e "s|^([[:space:]]*ssl_certificate)[[:space:]]+[^;]+;|\1 $tmp/test.crt;|" \
        -e "s|^([[:space:]]*ssl_certificate_key)[[:space:]]+[^;]+;|\1 $tmp/test.key;|" \
        -e "s#^([[:space:]]*(server[[:space:]]+|proxy_pass[[:space:]]+https?://))[a-z][a-z0-9.-]*\.[a-z0-9.-]+:([0-9]+)#\1127.0.0.1:\3#" \
        -e "s#(cluster_store[[:space:]]+redis://)[a-z][a-z0-9.-]*:([0-9]+)#\1127.0.0.1:\2#" \
        -e "s|/var/log/nginx/|$prefix/logs/|g" \
        -e "s|/run/nginx\.pid|$prefix/nginx.pid|g" \
        "$src" >"$dst"
}

# nginx -t of $1 (already rewritten) with prefix $2; $3 names the shipped file.
nginx_t() {
    local conf="$1" prefix="$2" name="$3" out
    if out="$("$nginx" -t -q -p "$prefix" -c "$conf" 2>&1)"; then
        # A shipped config must not make the module warn (e.g. a client role of another client).
        if printf '%s\n' "$out" | grep -q '\[warn\].*oidc_'; then
            fail "nginx -t $name warns:"
            printf '%s\n' "$out" | sed 's/^/    /' >&2
        else
            say "ok   nginx -t $name"
        fi
    else
        fail "nginx -t $name (rewritten copy: $conf)"
        printf '%s\n' "$out" | sed 's/^/    /' >&2
    fi
}

check_plain() { # a complete nginx.conf
    local name="$1" src="$2" p
    p="$tmp/$(printf '%s' "$name" | tr -c 'A-Za-z0-9' '_')"
    mkdir -p "$p"
    rewrite "$src" "$p/nginx.conf" "$p"
    nginx_t "$p/nginx.conf" "$p" "$name"
}

say "nginx -t with $("$nginx" -v 2>&1 | sed 's/.*: //') and $module"

check_plain "$conf_dir/minimal.conf" "$conf_dir/minimal.conf"

# demo.conf: fill the placeholders the way scripts/demo.sh does.
p="$tmp/demo"
mkdir -p "$p/tmp"
sed -e "s|@MODULE@|$module|g" -e "s|@PREFIX@|$p|g" -e "s|@USER@||g" -e "s|@PORT@|18080|g" \
    -e "s|@IDP_PORT@|18081|g" -e "s|@UPSTREAM_PORT@|18090|g" \
    "$conf_dir/demo.conf" >"$p/demo.in"
cp "$tmp/oidc/cookie-keys" "$p/cookie-keys"
rewrite "$p/demo.in" "$p/nginx.conf" "$p"
grep -v "^[[:space:]]*#" "$p/nginx.conf" | grep -q "@[A-Z_]*@" && fail "demo.conf has a placeholder demo.sh does not fill"
nginx_t "$p/nginx.conf" "$p" "$conf_dir/demo.conf"

check_plain "$conf_dir/docker/nginx.conf" "$conf_dir/docker/nginx.conf"

# The nginx.conf inside the Kubernetes ConfigMap.
mkdir -p "$tmp/k8s"
if python3 - "$conf_dir/k8s/configmap.yaml" "$tmp/k8s/from-configmap.conf" <<'EOF'; then
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
cm = [d for d in docs if d.get("kind") == "ConfigMap"]
assert cm and "nginx.conf" in cm[0]["data"], "no ConfigMap with data.nginx.conf"
open(sys.argv[2], "w").write(cm[0]["data"]["nginx.conf"])
EOF
    check_plain "$conf_dir/k8s/configmap.yaml (data.nginx.conf)" "$tmp/k8s/from-configmap.conf"
else
    fail "cannot extract nginx.conf from $conf_dir/k8s/configmap.yaml"
fi

# Debian: the layout of Debian's /etc/nginx/nginx.conf (modules-enabled at the top, sites-enabled
# inside http), with our two files dropped in where the README says.
p="$tmp/debian"
mkdir -p "$p/modules-enabled" "$p/sites-enabled" "$p/tmp"
rewrite "$conf_dir/debian/50-mod-http-oidc.conf" "$p/modules-enabled/50-mod-http-oidc.conf" "$p"
rewrite "$conf_dir/debian/oidc.conf" "$p/sites-enabled/oidc.conf" "$p"
cat >"$p/nginx.conf" <<EOF
pid $p/nginx.pid;
include $p/modules-enabled/*.conf;
events { worker_connections 768; }
http {
    sendfile on;
    include $tmp/mime.types;
    access_log $p/logs/access.log;
    error_log $p/logs/error.log;
    include $p/sites-enabled/*;
}
EOF
nginx_t "$p/nginx.conf" "$p" "$conf_dir/debian/ (modules-enabled + sites-enabled)"

# realm.json: valid JSON, and the pieces the demo relies on.
if python3 -m json.tool "$conf_dir/keycloak/realm.json" >/dev/null; then
    say "ok   python3 -m json.tool $conf_dir/keycloak/realm.json"
else
    fail "$conf_dir/keycloak/realm.json is not valid JSON"
fi
if python3 - "$conf_dir/keycloak/realm.json" "$conf_dir/docker/nginx.conf" <<'EOF'; then
import json, re, sys
realm = json.load(open(sys.argv[1]))
conf = open(sys.argv[2]).read()
assert realm["realm"] == "test"
client = next(c for c in realm["clients"] if c["clientId"] == "test")
assert not client["publicClient"] and client["secret"]
m = re.search(r"client_secret\s+(\S+);", conf)
assert m and m.group(1) == client["secret"], "client secret differs between realm.json and docker/nginx.conf"
assert "http://localhost:8080/oauth2/callback" in client["redirectUris"]
attrs = client["attributes"]
assert attrs["post.logout.redirect.uris"] and attrs["backchannel.logout.url"].endswith("/oauth2/backchannel_logout")
assert attrs["backchannel.logout.session.required"] == "true"
mappers = {m["protocolMapper"] for m in client["protocolMappers"]}
assert {"oidc-group-membership-mapper", "oidc-audience-mapper"} <= mappers, mappers
users = {u["username"]: u for u in realm["users"]}
for name in ("demo", "alice"):
    assert users[name]["credentials"][0]["value"] == name
groups = {g["path"] for g in realm["groups"]}
for u in users.values():
    for g in u.get("groups", []):
        assert g in groups or any(g.startswith(x + "/") for x in groups), g
realm_roles = {r["name"] for r in realm["roles"]["realm"]}
client_roles = {r["name"] for r in realm["roles"]["client"]["test"]}
for u in users.values():
    assert set(u.get("realmRoles", [])) <= realm_roles
    assert set(u.get("clientRoles", {}).get("test", [])) <= client_roles
issuer = re.search(r"issuer\s+(\S+);", conf).group(1)
assert issuer.endswith("/realms/" + realm["realm"]), issuer
EOF
    say "ok   realm.json matches docker/nginx.conf (client, secret, redirect URI, mappers, users, groups, roles)"
else
    fail "$conf_dir/keycloak/realm.json does not fit docker/nginx.conf (see the assertion above)"
fi

# YAML files.
for y in "$conf_dir/docker-compose.yml" "$conf_dir"/k8s/*.yaml; do
    if python3 - "$y" <<'EOF'; then
import sys, yaml
path = sys.argv[1]
docs = [d for d in yaml.safe_load_all(open(path)) if d is not None]
assert docs, "empty"
if path.endswith("docker-compose.yml"):
    s = docs[0]["services"]
    kc, ng = s["keycloak"], s["nginx"]
    assert kc["image"].startswith("quay.io/keycloak/keycloak:") and "--import-realm" in kc["command"]
    assert ng["image"].startswith("nginx:")
    vols = ng["volumes"]
    assert any(v.endswith(":/etc/nginx/modules/ngx_http_oidc_module.so:ro") for v in vols), vols
    assert any(v.startswith("./docker/nginx.conf:/etc/nginx/nginx.conf") for v in vols), vols
    assert any("realm.json:/opt/keycloak/data/import/" in v for v in kc["volumes"])
else:
    for d in docs:
        assert d.get("apiVersion") and d.get("kind") and d["metadata"]["name"], d
    if path.endswith("k8s/deployment.yaml"):
        assert docs[0]["spec"]["replicas"] >= 2, "several replicas (they share revocations through redis.yaml)"
    if path.endswith("k8s/redis.yaml"):
        assert {"Deployment", "Service"} <= {d["kind"] for d in docs}, "a Redis Deployment and its Service"
    if path.endswith("k8s/configmap.yaml"):
        conf = " ".join(docs[0]["data"]["nginx.conf"].split())
        # nginx's resolver looks the name up as written (no search list): the full service name.
        assert "cluster_store redis://ngx-oidc-redis.default.svc.cluster.local:6379;" in conf, conf
        assert "resolver " in conf, "a resolver, so that a moved Redis is followed"
EOF
        say "ok   python3 yaml $y"
    else
        fail "$y does not parse as YAML or misses required parts"
    fi
done

# The compose file's nginx image and the vendored nginx must be the same version (the default
# module mounted by the compose file is the vendored one).
img="$(python3 -c 'import sys,yaml; print(yaml.safe_load(open(sys.argv[1]))["services"]["nginx"]["image"])' "$conf_dir/docker-compose.yml")"
have="$("$nginx" -v 2>&1 | sed -n 's|.*nginx/\([0-9.]*\).*|\1|p')"
if [ "$img" = "nginx:$have" ]; then
    say "ok   docker-compose.yml uses $img = the vendored nginx/$have"
else
    fail "docker-compose.yml uses $img but the vendored module is for nginx/$have"
fi

if sh -n "$conf_dir/docker/40-oidc-cookie-key.sh"; then
    say "ok   sh -n $conf_dir/docker/40-oidc-cookie-key.sh"
else
    fail "$conf_dir/docker/40-oidc-cookie-key.sh has a syntax error"
fi
[ -x "$conf_dir/docker/40-oidc-cookie-key.sh" ] \
    || fail "$conf_dir/docker/40-oidc-cookie-key.sh must be executable (the image's entrypoint skips it otherwise)"

[ "$failures" -eq 0 ] || die "$failures config check(s) failed"
say "all nginx-conf/ checks passed (nothing was run in a container: no container engine here)"
