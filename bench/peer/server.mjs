// oidc-provider as the peer of the token-endpoint benchmark: client_credentials with
// client_secret_basic, RFC 9068-style JWT access tokens signed ES256, 15-minute lifetime,
// introspection on. Usage: node server.mjs PORT CLIENT_ID CLIENT_SECRET [jwt|opaque]
// For the sign-in benchmark (bench/signin.sh) it also has a public client `app` (code + PKCE,
// refresh tokens rotated on every use, as Portcullis does) and its development interactions
// (login form accepting any name, consent form).
// oidc-provider cannot introspect JWT-format access tokens, so the introspection scenario
// runs against a second instance that issues opaque ones.
import crypto from 'node:crypto';
import Provider from 'oidc-provider';

const [port, clientId, clientSecret, format = 'jwt'] = process.argv.slice(2);
const { privateKey } = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
const jwk = { ...privateKey.export({ format: 'jwk' }), kid: 'bench-es256', alg: 'ES256', use: 'sig' };
const AUD = 'https://api.example.com';

const provider = new Provider(`http://127.0.0.1:${port}`, {
  clients: [{
    client_id: clientId,
    client_secret: clientSecret,
    grant_types: ['client_credentials'],
    response_types: [],
    redirect_uris: [],
    token_endpoint_auth_method: 'client_secret_basic',
    id_token_signed_response_alg: 'ES256',
    scope: 'invoices:read invoices:write',
  }, {
    client_id: 'app',
    token_endpoint_auth_method: 'none',
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    redirect_uris: ['http://127.0.0.1:9/cb'],
    id_token_signed_response_alg: 'ES256',
  }],
  // Same refresh policy as Portcullis: always issued to a client allowed the grant, rotated on every use.
  issueRefreshToken: async (ctx, client) => client.grantTypeAllowed('refresh_token'),
  rotateRefreshToken: true,
  jwks: { keys: [jwk] },
  scopes: ['openid', 'offline_access', 'invoices:read', 'invoices:write'],
  features: {
    devInteractions: { enabled: true },
    clientCredentials: { enabled: true },
    introspection: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => AUD,
      useGrantedResource: () => true,
      getResourceServerInfo: () => ({
        scope: 'invoices:read invoices:write',
        audience: AUD,
        accessTokenFormat: format,
        accessTokenTTL: 900,
        jwt: { sign: { alg: 'ES256' } },
      }),
    },
  },
});
provider.listen(Number(port), '127.0.0.1', () => console.log(`oidc-provider listening on 127.0.0.1:${port}`));
