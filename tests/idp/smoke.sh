#!/usr/bin/env bash
# Smoke test for the test IdP: starts it on a free port, performs a no-JS browser-like
# authorization-code + PKCE login with curl, checks tokens, refresh, stats, logout and a
# large-groups login. Usage: bash tests/idp/smoke.sh
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
WORK="$(mktemp -d)"
SERVER_PID=""

cleanup() {
  if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

fail() { echo "FAIL: $*" >&2; echo "--- server log (tail)" >&2; tail -n 30 "$WORK/server.log" >&2 || true; exit 1; }
ok() { echo "ok   - $*"; }

if [[ ! -d "$HERE/node_modules/oidc-provider" ]]; then
  (cd "$HERE" && npm ci --no-audit --no-fund >/dev/null)
fi

PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()')"
REALM=test
CLIENT_ID=test
CLIENT_SECRET=secret
REDIRECT_URI="http://127.0.0.1:8080/oauth2/callback"
POST_LOGOUT="http://127.0.0.1:8080/"
ISSUER="http://127.0.0.1:${PORT}/realms/${REALM}"
KC="$ISSUER/protocol/openid-connect"

IDP_PORT="$PORT" IDP_REALM="$REALM" IDP_CLIENT_ID="$CLIENT_ID" IDP_CLIENT_SECRET="$CLIENT_SECRET" \
  IDP_REDIRECT_URIS="$REDIRECT_URI" IDP_POST_LOGOUT_REDIRECT_URIS="$POST_LOGOUT" \
  node "$HERE/server.js" >"$WORK/server.log" 2>&1 &
SERVER_PID=$!

for _ in $(seq 1 100); do
  curl -fs "http://127.0.0.1:${PORT}/_test/health" >/dev/null 2>&1 && break
  kill -0 "$SERVER_PID" 2>/dev/null || fail "server exited early"
  sleep 0.1
done
curl -fs "http://127.0.0.1:${PORT}/_test/health" | grep -qx ok || fail "health"
ok "server up on port $PORT"

# json FILE EXPR -> python expression evaluated with d = parsed JSON
json() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$1" "$2"; }
# jwt_payload TOKEN -> payload JSON
jwt_payload() { python3 -c 'import base64,sys; p=sys.argv[1].split(".")[1]; print(base64.urlsafe_b64decode(p+"="*(-len(p)%4)).decode())' "$1"; }
jwt_header() { python3 -c 'import base64,sys; p=sys.argv[1].split(".")[0]; print(base64.urlsafe_b64decode(p+"="*(-len(p)%4)).decode())' "$1"; }
# header_value FILE NAME
header_value() { python3 -c '
import sys
name=sys.argv[2].lower()
for line in open(sys.argv[1], encoding="latin-1"):
    if ":" in line and line.split(":",1)[0].strip().lower()==name:
        print(line.split(":",1)[1].strip()); break' "$1" "$2"; }
status_of() { head -n1 "$1" | awk '{print $2}'; }
abs_url() { case "$1" in http*) echo "$1";; /*) echo "http://127.0.0.1:${PORT}$1";; *) echo "$1";; esac; }

# ---------------------------------------------------------------- discovery
curl -fs "$ISSUER/.well-known/openid-configuration" -o "$WORK/disc.json" || fail "discovery"
[[ "$(json "$WORK/disc.json" 'd["issuer"]')" == "$ISSUER" ]] || fail "issuer mismatch"
for pair in authorization_endpoint:/auth token_endpoint:/token jwks_uri:/certs userinfo_endpoint:/userinfo \
            end_session_endpoint:/logout revocation_endpoint:/revoke introspection_endpoint:/token/introspect; do
  k="${pair%%:*}"; v="${pair#*:}"
  [[ "$(json "$WORK/disc.json" "d.get('$k')")" == "$KC$v" ]] || fail "discovery $k != $KC$v"
done
ok "discovery advertises Keycloak URL layout"
curl -fs "$KC/certs" -o "$WORK/jwks.json" || fail "jwks"

# ---------------------------------------------------------------- browser-like login
# login USER PASS PREFIX  -> sets CODE; writes $WORK/PREFIX.* ; uses cookie jar $WORK/jar
login() {
  local user="$1" pass="$2" pfx="$3"
  VERIFIER="$(python3 -c 'import secrets; print(secrets.token_urlsafe(48))')"
  CHALLENGE="$(python3 -c 'import base64,hashlib,sys; print(base64.urlsafe_b64encode(hashlib.sha256(sys.argv[1].encode()).digest()).rstrip(b"=").decode())' "$VERIFIER")"
  STATE="st-$RANDOM$RANDOM"; NONCE="n-$RANDOM$RANDOM"
  local q
  q="$(python3 -c 'import sys,urllib.parse as u; print(u.urlencode({"response_type":"code","client_id":sys.argv[1],"redirect_uri":sys.argv[2],"scope":"openid profile email","state":sys.argv[3],"nonce":sys.argv[4],"code_challenge":sys.argv[5],"code_challenge_method":"S256"}))' "$CLIENT_ID" "$REDIRECT_URI" "$STATE" "$NONCE" "$CHALLENGE")"
  local url="$KC/auth?$q" n=0 loc st
  # follow redirects manually until we get a page (the login form) or the callback (SSO)
  while :; do
    n=$((n+1)); [[ $n -lt 10 ]] || fail "too many redirects"
    curl -s -D "$WORK/$pfx.h" -o "$WORK/$pfx.body" -b "$WORK/jar" -c "$WORK/jar" "$url"
    st="$(status_of "$WORK/$pfx.h")"
    if [[ "$st" == 302 || "$st" == 303 ]]; then
      url="$(abs_url "$(header_value "$WORK/$pfx.h" location)")"
      if [[ "$url" == "$REDIRECT_URI"* ]]; then
        CODE="$(python3 -c 'import sys,urllib.parse as u; q=u.parse_qs(u.urlparse(sys.argv[1]).query); assert q["state"][0]==sys.argv[2], "state"; print(q["code"][0])' "$url" "$STATE")" \
          || fail "callback missing code/state: $url"
        SSO=1; return 0
      fi
      continue
    fi
    break
  done
  SSO=0
  [[ "$st" == 200 ]] || fail "expected login form, got $st"
  grep -q 'id="kc-form-login"' "$WORK/$pfx.body" || fail "no kc-form-login"
  grep -q 'id="kc-login"' "$WORK/$pfx.body" || fail "no kc-login"
  local action
  action="$(python3 -c 'import re,sys,html; print(html.unescape(re.search(r"<form[^>]*action=\"([^\"]+)\"", open(sys.argv[1]).read()).group(1)))' "$WORK/$pfx.body")"
  [[ "$action" == /realms/$REALM/interaction/*/login ]] || fail "unexpected form action $action"

  if [[ "$pfx" == demo ]]; then
    # wrong password first: form again, 200, error text
    curl -s -D "$WORK/bad.h" -o "$WORK/bad.body" -b "$WORK/jar" -c "$WORK/jar" \
      -H 'content-type: application/x-www-form-urlencoded' --data-urlencode "username=$user" \
      --data-urlencode "password=wrong" "$(abs_url "$action")"
    [[ "$(status_of "$WORK/bad.h")" == 200 ]] || fail "wrong password status"
    grep -q 'Invalid username or password.' "$WORK/bad.body" || fail "wrong password text"
    grep -q 'id="kc-form-login"' "$WORK/bad.body" || fail "wrong password: no form"
    ok "wrong password -> 200 + 'Invalid username or password.'"
  fi

  url="$(abs_url "$action")"
  curl -s -D "$WORK/$pfx.h" -o "$WORK/$pfx.body" -b "$WORK/jar" -c "$WORK/jar" \
    -H 'content-type: application/x-www-form-urlencoded' --data-urlencode "username=$user" \
    --data-urlencode "password=$pass" "$url"
  n=0
  while :; do
    n=$((n+1)); [[ $n -lt 10 ]] || fail "too many redirects after login"
    st="$(status_of "$WORK/$pfx.h")"
    [[ "$st" == 302 || "$st" == 303 ]] || fail "expected redirect after login, got $st: $(head -c 400 "$WORK/$pfx.body")"
    loc="$(abs_url "$(header_value "$WORK/$pfx.h" location)")"
    [[ "$loc" == "$REDIRECT_URI"* ]] && break
    curl -s -D "$WORK/$pfx.h" -o "$WORK/$pfx.body" -b "$WORK/jar" -c "$WORK/jar" "$loc"
  done
  CODE="$(python3 -c 'import sys,urllib.parse as u; q=u.parse_qs(u.urlparse(sys.argv[1]).query); assert q["state"][0]==sys.argv[2], "state"; print(q["code"][0])' "$loc" "$STATE")" \
    || fail "callback missing code/state: $loc"
}

# token exchange with client_secret_basic
redeem() {
  curl -s -o "$WORK/$1.tok" -w '%{http_code}' -u "$CLIENT_ID:$CLIENT_SECRET" \
    -d grant_type=authorization_code --data-urlencode "code=$CODE" \
    --data-urlencode "redirect_uri=$REDIRECT_URI" --data-urlencode "code_verifier=$VERIFIER" "$KC/token"
}

curl -fs -X POST "http://127.0.0.1:${PORT}/_test/reset" >/dev/null || fail "reset"

login demo demo demo
ok "demo login via redirects + one form POST -> code + state at redirect_uri"

# PKCE enforced: a wrong verifier is rejected (and burns the code), so use a fresh login
GOOD_VERIFIER="$VERIFIER"; VERIFIER="wrong-verifier-wrong-verifier-wrong-verifier-123"
st="$(redeem bad)"; [[ "$st" == 400 ]] && grep -q invalid_grant "$WORK/bad.tok" || fail "PKCE not enforced ($st)"
ok "PKCE S256 enforced (wrong code_verifier -> invalid_grant)"

login demo demo demo   # session cookie already present -> straight back with a code
[[ "$SSO" == 1 ]] || fail "expected SSO re-login without form"
st="$(redeem demo)"; [[ "$st" == 200 ]] || fail "token exchange $st: $(cat "$WORK/demo.tok")"
ok "code exchanged (client_secret_basic); second authorize reused SSO session"

ID_TOKEN="$(json "$WORK/demo.tok" 'd["id_token"]')"
ACCESS_TOKEN="$(json "$WORK/demo.tok" 'd["access_token"]')"
REFRESH_TOKEN="$(json "$WORK/demo.tok" 'd["refresh_token"]')"
jwt_payload "$ID_TOKEN" >"$WORK/id.json"; jwt_header "$ID_TOKEN" >"$WORK/idh.json"
jwt_payload "$ACCESS_TOKEN" >"$WORK/at.json"; jwt_header "$ACCESS_TOKEN" >"$WORK/ath.json"

python3 - "$WORK" "$ISSUER" "$CLIENT_ID" "$NONCE" <<'EOF' || fail "token claim assertions"
import json, sys
w, iss, cid, nonce = sys.argv[1:]
tok = json.load(open(f"{w}/demo.tok")); idt = json.load(open(f"{w}/id.json")); idh = json.load(open(f"{w}/idh.json"))
at = json.load(open(f"{w}/at.json")); ath = json.load(open(f"{w}/ath.json"))
jwks = json.load(open(f"{w}/jwks.json"))
def check(c, msg):
    if not c: print("assertion failed:", msg, file=sys.stderr); sys.exit(1)
check(idh["alg"] == "RS256" and idh.get("kid"), "id token RS256 + kid")
check(idh["kid"] in [k["kid"] for k in jwks["keys"]], "kid in JWKS")
check(idt["iss"] == iss, "iss")
aud = idt["aud"] if isinstance(idt["aud"], list) else [idt["aud"]]
check(cid in aud, "aud contains client id")
check(idt.get("azp") == cid, "azp")
check(idt.get("nonce") == nonce, "nonce")
check(idt.get("preferred_username") == "demo", "preferred_username")
check(idt.get("email") == "demo@example.com" and idt.get("email_verified") is True, "email")
check(idt.get("name") == "Demo User", "name")
check(idt.get("groups") == ["/demo"], "groups")
check("realm_access" not in idt and "resource_access" not in idt, "no roles in the ID token (Keycloak's default roles scope)")
check(at.get("realm_access") == {"roles": ["user"]}, "realm_access in the access token")
check(at.get("resource_access") == {cid: {"roles": ["viewer"]}}, "resource_access in the access token")
check(idt.get("sid") and idt.get("auth_time"), "sid/auth_time")
check(at.get("aud") == "account", "access token aud == account")
check(at.get("azp") == cid and at.get("typ") == "Bearer", "access token azp/typ")
check(at.get("preferred_username") == "demo" and "openid" in at.get("scope", "").split(), "access token preferred_username/scope")
check(ath["alg"] == "RS256" and ath.get("kid") == idh["kid"], "access token signed with same key")
check(isinstance(tok.get("refresh_expires_in"), int) and tok["refresh_expires_in"] > 0, "refresh_expires_in")
check(tok.get("refresh_token") and tok.get("token_type") == "Bearer", "refresh_token/token_type")
print(f"     id_token claims: iss={idt['iss']} aud={idt['aud']} azp={idt['azp']} sub={idt['sub']}")
print(f"     access_token: aud={at['aud']} azp={at['azp']} typ={at['typ']} scope='{at['scope']}'; expires_in={tok['expires_in']} refresh_expires_in={tok['refresh_expires_in']}")
EOF
ok "ID token + access token claims (Keycloak shape) verified"
echo "     token sizes: id_token=${#ID_TOKEN}B access_token=${#ACCESS_TOKEN}B refresh_token=${#REFRESH_TOKEN}B"

# userinfo with the (aud=account) access token
curl -fs -H "authorization: Bearer $ACCESS_TOKEN" "$KC/userinfo" -o "$WORK/ui.json" || fail "userinfo"
[[ "$(json "$WORK/ui.json" 'd["preferred_username"]')" == demo ]] || fail "userinfo content"
ok "userinfo accepts the access token"

# introspection with client_secret_post (both auth methods work)
curl -fs -d "client_id=$CLIENT_ID" -d "client_secret=$CLIENT_SECRET" --data-urlencode "token=$ACCESS_TOKEN" \
  "$KC/token/introspect" -o "$WORK/intro.json" || fail "introspect"
[[ "$(json "$WORK/intro.json" 'd["active"]')" == True ]] || fail "introspect active"
curl -fs -d "client_id=$CLIENT_ID" -d "client_secret=$CLIENT_SECRET" --data-urlencode "token=$REFRESH_TOKEN" \
  "$KC/token/introspect" -o "$WORK/intro2.json" || fail "introspect rt"
[[ "$(json "$WORK/intro2.json" 'd["active"]')" == True ]] || fail "introspect rt active"
ok "introspection (client_secret_post) of access + refresh token"

# ---------------------------------------------------------------- refresh (client_secret_post)
st="$(curl -s -o "$WORK/ref.tok" -w '%{http_code}' -d grant_type=refresh_token --data-urlencode "refresh_token=$REFRESH_TOKEN" \
  -d "client_id=$CLIENT_ID" -d "client_secret=$CLIENT_SECRET" "$KC/token")"
[[ "$st" == 200 ]] || fail "refresh $st: $(cat "$WORK/ref.tok")"
NEW_AT="$(json "$WORK/ref.tok" 'd["access_token"]')"
NEW_RT="$(json "$WORK/ref.tok" 'd["refresh_token"]')"
[[ "$NEW_AT" != "$ACCESS_TOKEN" ]] || fail "refresh returned same access token"
[[ "$NEW_RT" != "$REFRESH_TOKEN" ]] || fail "rotation: refresh token not rotated"
[[ "$(json "$WORK/ref.tok" 'd.get("refresh_expires_in", 0) > 0 and "id_token" in d')" == True ]] || fail "refresh response fields"
ok "refresh_token grant -> new access token, rotated refresh token, refresh_expires_in=$(json "$WORK/ref.tok" 'd["refresh_expires_in"]')"
st="$(curl -s -o "$WORK/reuse.tok" -w '%{http_code}' -u "$CLIENT_ID:$CLIENT_SECRET" -d grant_type=refresh_token \
  --data-urlencode "refresh_token=$REFRESH_TOKEN" "$KC/token")"
[[ "$st" == 400 ]] && grep -q invalid_grant "$WORK/reuse.tok" || fail "old refresh token reuse not rejected ($st)"
ok "reusing the old refresh token -> invalid_grant"

# ---------------------------------------------------------------- stats
curl -fs "http://127.0.0.1:${PORT}/_test/stats" -o "$WORK/stats.json" || fail "stats"
echo "     stats: $(cat "$WORK/stats.json")"
[[ "$(json "$WORK/stats.json" 'd["token_requests"]["authorization_code"]')" == 2 ]] || fail "stats authorization_code"
[[ "$(json "$WORK/stats.json" 'd["token_requests"]["refresh_token"]')" == 2 ]] || fail "stats refresh_token"
[[ "$(json "$WORK/stats.json" 'd["userinfo_requests"]')" == 1 ]] || fail "stats userinfo"
[[ "$(json "$WORK/stats.json" 'd["discovery_requests"]')" == 0 && "$(json "$WORK/stats.json" 'd["jwks_requests"]')" == 0 ]] || fail "stats reset"
curl -fs "$ISSUER/.well-known/openid-configuration" >/dev/null; curl -fs "$KC/certs" >/dev/null
curl -fs "http://127.0.0.1:${PORT}/_test/stats" -o "$WORK/stats.json"
[[ "$(json "$WORK/stats.json" 'd["discovery_requests"], d["jwks_requests"]')" == "(1, 1)" ]] || fail "stats discovery/jwks"
curl -fs -X POST "http://127.0.0.1:${PORT}/_test/reset" >/dev/null
curl -fs "http://127.0.0.1:${PORT}/_test/stats" -o "$WORK/stats.json"
[[ "$(json "$WORK/stats.json" 'd["token_requests"]["authorization_code"] + d["discovery_requests"]')" == 0 ]] || fail "reset"
ok "/_test/stats counts and /_test/reset zeroes"

# ---------------------------------------------------------------- RP-initiated logout
LQ="$(python3 -c 'import sys,urllib.parse as u; print(u.urlencode({"id_token_hint":sys.argv[1],"post_logout_redirect_uri":sys.argv[2],"state":"bye-1"}))' "$ID_TOKEN" "$POST_LOGOUT")"
url="$KC/logout?$LQ"; n=0
while :; do
  n=$((n+1)); [[ $n -lt 10 ]] || fail "logout: too many redirects"
  curl -s -D "$WORK/lo.h" -o "$WORK/lo.body" -b "$WORK/jar" -c "$WORK/jar" "$url"
  st="$(status_of "$WORK/lo.h")"
  [[ "$st" == 302 || "$st" == 303 ]] || fail "logout: expected redirect, got $st: $(head -c 300 "$WORK/lo.body")"
  url="$(abs_url "$(header_value "$WORK/lo.h" location)")"
  [[ "$url" == "$POST_LOGOUT"* ]] && break
done
[[ "$url" == "${POST_LOGOUT}?state=bye-1" ]] || fail "logout landed on $url"
ok "RP-initiated logout -> $st $url (plain redirects, no confirm page)"
# session is gone: a new authorize shows the login form again, refresh token is dead
curl -s -o /dev/null -D "$WORK/a.h" -b "$WORK/jar" -c "$WORK/jar" "$KC/auth?response_type=code&client_id=$CLIENT_ID&scope=openid&redirect_uri=$(python3 -c 'import urllib.parse,sys;print(urllib.parse.quote(sys.argv[1],safe=""))' "$REDIRECT_URI")"
[[ "$(header_value "$WORK/a.h" location)" == */interaction/* ]] || fail "session still active after logout"
st="$(curl -s -o "$WORK/after.tok" -w '%{http_code}' -u "$CLIENT_ID:$CLIENT_SECRET" -d grant_type=refresh_token \
  --data-urlencode "refresh_token=$NEW_RT" "$KC/token")"
[[ "$st" == 400 ]] || fail "refresh token still valid after logout ($st)"
ok "after logout: login required again, refresh token invalid"

# ---------------------------------------------------------------- big groups
rm -f "$WORK/jar"
login biggroups biggroups big
st="$(redeem big)"; [[ "$st" == 200 ]] || fail "biggroups token exchange $st"
BIG_ID="$(json "$WORK/big.tok" 'd["id_token"]')"
BIG_AT="$(json "$WORK/big.tok" 'd["access_token"]')"
NG="$(jwt_payload "$BIG_ID" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["groups"]))')"
[[ "$NG" == 150 ]] || fail "biggroups has $NG groups"
[[ ${#BIG_ID} -gt 10240 ]] || fail "biggroups id_token only ${#BIG_ID} bytes"
ok "biggroups: id_token=${#BIG_ID} bytes (150 groups), access_token=${#BIG_AT} bytes"

echo "--- server log sample (first 5 lines)"
head -n 5 "$WORK/server.log"
if grep -qF -e "$ACCESS_TOKEN" -e "$REFRESH_TOKEN" -e "$ID_TOKEN" "$WORK/server.log"; then fail "server log contains secrets"; fi
ok "server log has no tokens/secrets"
echo "ALL OK"
