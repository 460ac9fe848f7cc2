// A real OAuth 2.0 authorization server (oidc-provider) for the clients/auth
// tests. Not shipped, not for production.
//
// Usage: node server.js --port <port> --config <file.json>
//    or: OIDC_PORT=<port> OIDC_CONFIG=<file.json> node server.js
//
// Port 0 picks a free port. Once listening it prints one line to stdout:
//   oidc-provider ready http://127.0.0.1:<port>
//
// The config file (written by the Go test) looks like:
//   {
//     "clients": [ <OAuth client metadata>, ... ],
//     "scope": "system/*.read",          // scopes the resource server grants
//     "knownScopes": ["user/*.write"],   // other scopes the server knows (and may refuse)
//     "accessTokenTTL": 60               // seconds
//   }
// Clients use the client_credentials grant and authenticate with
// client_secret_basic or private_key_jwt (RS384/ES384, public JWKs inline).
import { randomBytes, generateKeyPairSync } from 'node:crypto';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import Provider, { errors } from 'oidc-provider';

function option(name, envName) {
  const i = process.argv.indexOf(`--${name}`);
  if (i !== -1 && i + 1 < process.argv.length) return process.argv[i + 1];
  return process.env[envName];
}

const port = Number.parseInt(option('port', 'OIDC_PORT') ?? '0', 10);
const configPath = option('config', 'OIDC_CONFIG');
if (!configPath || Number.isNaN(port)) {
  console.error('usage: node server.js --port <port> --config <file.json>');
  process.exit(2);
}
const cfg = JSON.parse(readFileSync(configPath, 'utf8'));
const ttl = cfg.accessTokenTTL ?? 60;
// The one resource server every client_credentials token is issued for, so
// tokens come out as JWTs (as Pathling expects) rather than opaque strings.
const resource = cfg.resource ?? 'urn:pathling-sync:test-pathling';

// Key the provider signs its access tokens with: made fresh on every start.
const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const signingKey = { ...privateKey.export({ format: 'jwk' }), kid: 'provider-rs256', use: 'sig', alg: 'RS256' };

const server = http.createServer();
server.listen(port, '127.0.0.1', () => {
  const issuer = `http://127.0.0.1:${server.address().port}`;
  const provider = new Provider(issuer, {
    clients: cfg.clients,
    // Scopes the server knows: a client registered with "scope" that asks for
    // a known scope outside it gets invalid_scope.
    scopes: ['openid', 'offline_access', ...(cfg.scope ?? 'system/*.read').split(' '), ...(cfg.knownScopes ?? [])],
    jwks: { keys: [signingKey] },
    cookies: { keys: [randomBytes(32).toString('hex')] },
    findAccount: async () => undefined,
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      introspection: { enabled: true },
      revocation: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: async () => resource,
        useGrantedResource: async () => true,
        getResourceServerInfo: async (_ctx, resourceIndicator) => {
          if (resourceIndicator !== resource) throw new errors.InvalidTarget();
          return {
            scope: cfg.scope ?? 'system/*.read',
            audience: resource,
            accessTokenTTL: ttl,
            accessTokenFormat: 'jwt',
            jwt: { sign: { alg: 'RS256' } },
          };
        },
      },
    },
    enabledJWA: {
      clientAuthSigningAlgValues: ['RS256', 'RS384', 'PS384', 'ES256', 'ES384'],
    },
    ttl: {
      ClientCredentials: (_ctx, token) => token.resourceServer?.accessTokenTTL ?? ttl,
    },
  });
  // Surface why a request was refused: the Go test prints stderr on failure.
  provider.on('grant.error', (_ctx, err) => {
    console.error(`grant.error: ${err.name}: ${err.message} ${err.error_detail ?? ''}`);
  });
  provider.on('server_error', (_ctx, err) => {
    console.error(`server_error: ${err.stack}`);
  });
  server.on('request', provider.callback());
  console.log(`oidc-provider ready ${issuer}`);
});

for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => server.close(() => process.exit(0)));
}
