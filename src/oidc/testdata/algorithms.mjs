// Writes algorithms.json: a JWKS with one key per signature algorithm Keycloak 26 offers, and a
// token signed by each, made with Node's crypto (OpenSSL) so that the module's verification is
// checked against an independent implementation. Run: node src/oidc/testdata/algorithms.mjs
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';

const ALGS = {
  RS256: ['rsa', { modulusLength: 2048 }, 'sha256', {}],
  RS384: ['rsa', { modulusLength: 2048 }, 'sha384', {}],
  RS512: ['rsa', { modulusLength: 2048 }, 'sha512', {}],
  PS256: ['rsa', { modulusLength: 2048 }, 'sha256', { padding: crypto.constants.RSA_PKCS1_PSS_PADDING, saltLength: 32 }],
  PS384: ['rsa', { modulusLength: 2048 }, 'sha384', { padding: crypto.constants.RSA_PKCS1_PSS_PADDING, saltLength: 48 }],
  PS512: ['rsa', { modulusLength: 2048 }, 'sha512', { padding: crypto.constants.RSA_PKCS1_PSS_PADDING, saltLength: 64 }],
  ES256: ['ec', { namedCurve: 'P-256' }, 'sha256', { dsaEncoding: 'ieee-p1363' }],
  ES384: ['ec', { namedCurve: 'P-384' }, 'sha384', { dsaEncoding: 'ieee-p1363' }],
  ES512: ['ec', { namedCurve: 'P-521' }, 'sha512', { dsaEncoding: 'ieee-p1363' }],
  Ed25519: ['ed25519', {}, null, {}],
  Ed448: ['ed448', {}, null, {}],
};
const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
const keys = [];
const tokens = {};
for (const [name, [type, opts, hash, sigOpts]] of Object.entries(ALGS)) {
  const { privateKey, publicKey } = crypto.generateKeyPairSync(type, opts);
  const alg = name.startsWith('Ed') ? 'EdDSA' : name;
  const kid = `kid-${name}`;
  keys.push({ ...publicKey.export({ format: 'jwk' }), kid, alg, use: 'sig' });
  const input = `${b64({ alg, typ: 'JWT', kid })}.${b64({
    iss: 'http://kc/realms/test', aud: 'test', azp: 'test', sub: 'u1', typ: 'ID',
    exp: 1800000300, iat: 1800000000, nonce: 'n1', preferred_username: name,
  })}`;
  const sig = crypto.sign(hash, Buffer.from(input), { key: privateKey, ...sigOpts });
  tokens[name] = `${input}.${sig.toString('base64url')}`;
}
const out = new URL('./algorithms.json', import.meta.url);
fs.writeFileSync(out, `${JSON.stringify({ jwks: { keys }, tokens }, null, 1)}\n`);
