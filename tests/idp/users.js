// Test users for the Keycloak-like test IdP.
// `sub` is a stable UUID-shaped value derived from the username (like Keycloak user ids,
// stable across restarts).
import * as crypto from 'node:crypto';

function stableUuid(name) {
  const h = crypto.createHash('sha1').update(`ngx-oidc-test-idp:${name}`).digest('hex');
  // RFC 4122 "name-based" (v5-style) layout
  return [
    h.slice(0, 8),
    h.slice(8, 12),
    `5${h.slice(13, 16)}`,
    ((parseInt(h.slice(16, 18), 16) & 0x3f) | 0x80).toString(16) + h.slice(18, 20),
    h.slice(20, 32),
  ].join('-');
}

function bigGroups() {
  const out = [];
  for (let i = 1; i <= 150; i += 1) {
    const n = String(i).padStart(4, '0');
    out.push(`/department-${n}/team-with-a-long-name-for-large-token-tests-${n}`);
  }
  return out;
}

// 200 groups of hash-like names: deflate cannot shrink them much, so this user's session
// cookie is split into several chunks (hostile-input tests drop or swap a chunk).
function hashGroups() {
  const out = [];
  for (let i = 1; i <= 200; i += 1) {
    out.push(`/${crypto.createHash('sha256').update(`group-${i}`).digest('hex')}`);
  }
  return out;
}

const table = [
  {
    username: 'demo',
    password: 'demo',
    email: 'demo@example.com',
    email_verified: true,
    given_name: 'Demo',
    family_name: 'User',
    groups: ['/demo'],
    realm_roles: ['user'],
    client_roles: ['viewer'],
  },
  {
    username: 'alice',
    password: 'alice',
    email: 'alice@example.com',
    email_verified: true,
    given_name: 'Alice',
    family_name: 'Admin',
    groups: ['/admins', '/staff'],
    realm_roles: ['user', 'admin'],
    client_roles: ['editor'],
  },
  {
    username: 'bob',
    password: 'bob',
    email: 'bob@other.org',
    email_verified: false,
    given_name: 'Bob',
    family_name: 'Builder',
    groups: ['/staff'],
    realm_roles: ['user'],
    client_roles: [],
  },
  {
    username: 'biggroups',
    password: 'biggroups',
    email: 'big@example.com',
    email_verified: true,
    given_name: 'Big',
    family_name: 'Groups',
    groups: bigGroups(),
    realm_roles: ['user'],
    client_roles: [],
  },
  {
    username: 'chunky',
    password: 'chunky',
    email: 'chunky@example.com',
    email_verified: true,
    given_name: 'Chunky',
    family_name: 'Cookie',
    groups: hashGroups(),
    realm_roles: ['user'],
    client_roles: [],
  },
];

for (const u of table) {
  u.sub = stableUuid(u.username);
  u.name = `${u.given_name} ${u.family_name}`;
}

export const users = table;
export const bySub = new Map(table.map((u) => [u.sub, u]));
export const byUsername = new Map(table.map((u) => [u.username, u]));

// Keycloak-shaped claims for a user, as seen by `clientId`.
export function keycloakClaims(user, clientId) {
  const claims = {
    sub: user.sub,
    preferred_username: user.username,
    email: user.email,
    email_verified: user.email_verified,
    name: user.name,
    given_name: user.given_name,
    family_name: user.family_name,
    groups: [...user.groups],
    realm_access: { roles: [...user.realm_roles] },
  };
  // Like Keycloak, resource_access is omitted when the user has no client roles.
  if (user.client_roles.length) {
    claims.resource_access = { [clientId]: { roles: [...user.client_roles] } };
  }
  // Claims a test set with /_test/set-claims.
  return { ...claims, ...user.overrides };
}
