/**
 * A fake of the two Azure services cloudshift talks to for its control plane, on 127.0.0.1 over
 * HTTPS (the Azure SDK refuses bearer tokens over plain HTTP):
 *   - Microsoft Entra ID: GET /{tenant}/v2.0/.well-known/openid-configuration and
 *     POST /{tenant}/oauth2/v2.0/token (client credentials), issuing opaque tokens;
 *   - Azure Resource Manager: whatever routes a test declares with on().
 * Every request is recorded (method, path, query, headers, body) so tests assert exactly what
 * the real @azure/identity, @azure/arm-resources and @azure/arm-resourcesdeployments clients
 * sent. The clients run in a child process that trusts the certificate (spawnCli).
 *
 *   const fake = await FakeAzure.start();
 *   fake.on('GET', `/subscriptions/${SUB}/resourcegroups/rg`, { status: 200, body: {...} });
 *   const r = await spawnCli(['dry-run', plan], { ...fake.env(), ...otherEnv });
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import { selfSignedCertificate } from './tls.js';

export const TENANT = '72f988bf-0000-4000-8000-00000000cafe';
export const CLIENT_ID = '11111111-2222-4333-8444-555555555555';
export const CLIENT_SECRET = 'fake-client-secret-value';

export interface RecordedRequest {
  method: string;
  /** Path without the query, as sent. */
  path: string;
  query: Record<string, string>;
  headers: Record<string, string | string[] | undefined>;
  body: string;
  /** ms since the epoch. */
  at: number;
  /** x-ms-request-id of the answer. */
  requestId: string;
}

export interface FakeResponse {
  status: number;
  body?: unknown;
  headers?: Record<string, string>;
}

export type Responder = FakeResponse | ((req: RecordedRequest) => FakeResponse | Promise<FakeResponse>);

export interface IssuedToken {
  token: string;
  scope: string;
  expiresIn: number;
}

export class FakeAzure {
  readonly requests: RecordedRequest[] = [];
  readonly tokens: IssuedToken[] = [];
  /** Lifetime of the tokens issued from now on. */
  tokenLifetimeSeconds = 3600;
  /** Called before a token is returned (e.g. to make it the password of a database role). */
  onToken: ((token: IssuedToken) => Promise<void>) | undefined;
  private readonly routes = new Map<string, { responders: Responder[]; used: number }>();
  private counter = 0;

  private constructor(
    private readonly server: Server,
    readonly caFile: string,
  ) {}

  static async start(): Promise<FakeAzure> {
    const cert = selfSignedCertificate();
    const self: { fake?: FakeAzure } = {};
    const server = createServer({ cert: cert.cert, key: cert.key }, (req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        void self
          .fake!.handle(req.method ?? 'GET', req.url ?? '/', req.headers, Buffer.concat(chunks).toString('utf8'))
          .then(({ status, headers, body }) => {
            res.writeHead(status, headers);
            res.end(body);
          });
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    self.fake = new FakeAzure(server, cert.certFile);
    return self.fake;
  }

  get url(): string {
    return `https://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  /** Environment for a child process: trust the certificate, sign in with a client secret here. */
  env(overrides: Record<string, string> = {}): Record<string, string> {
    return {
      NODE_EXTRA_CA_CERTS: this.caFile,
      AZURE_TENANT_ID: TENANT,
      AZURE_CLIENT_ID: CLIENT_ID,
      AZURE_CLIENT_SECRET: CLIENT_SECRET,
      AZURE_AUTHORITY_HOST: this.url,
      // DefaultAzureCredential stops at the environment credential: never a managed-identity
      // probe of 169.254.169.254 or an `az` process from a test.
      AZURE_TOKEN_CREDENTIALS: 'EnvironmentCredential',
      ...overrides,
    };
  }

  /** Answers METHOD path (case-insensitive, query ignored) with the responders in turn; the last repeats. */
  on(method: string, path: string, ...responders: Responder[]): void {
    this.routes.set(`${method.toUpperCase()} ${path.toLowerCase()}`, { responders, used: 0 });
  }

  /** Forgets routes and recorded requests (token settings stay). */
  reset(): void {
    this.routes.clear();
    this.requests.length = 0;
    this.tokens.length = 0;
    this.onToken = undefined;
    this.tokenLifetimeSeconds = 3600;
  }

  /** Requests to ARM (everything but Entra ID), as `METHOD path?api-version=…`. */
  armRequests(): RecordedRequest[] {
    return this.requests.filter((r) => !r.path.startsWith(`/${TENANT}/`));
  }

  tokenRequests(): Array<RecordedRequest & { form: URLSearchParams }> {
    return this.requests.filter((r) => r.path.endsWith('/oauth2/v2.0/token')).map((r) => ({ ...r, form: new URLSearchParams(r.body) }));
  }

  async close(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private async handle(
    method: string,
    rawUrl: string,
    headers: RecordedRequest['headers'],
    body: string,
  ): Promise<{ status: number; headers: Record<string, string>; body: string }> {
    const url = new URL(`${this.url}${rawUrl}`); // as sent: a path starting "//" stays a path
    const requestId = `req-${String(++this.counter).padStart(4, '0')}-${randomBytes(4).toString('hex')}`;
    const req: RecordedRequest = {
      method,
      path: url.pathname,
      query: Object.fromEntries(url.searchParams),
      headers,
      body,
      at: Date.now(),
      requestId,
    };
    this.requests.push(req);
    let answer: FakeResponse;
    try {
      answer = (await this.entra(req)) ?? (await this.arm(req));
    } catch (err) {
      answer = { status: 500, body: { error: { code: 'FakeFailure', message: String(err) } } };
    }
    const text = answer.body === undefined ? '' : JSON.stringify(answer.body);
    return {
      status: answer.status,
      headers: { 'content-type': 'application/json; charset=utf-8', 'x-ms-request-id': requestId, ...answer.headers },
      body: text,
    };
  }

  private async entra(req: RecordedRequest): Promise<FakeResponse | null> {
    const tenant = `/${TENANT}`;
    if (req.method === 'GET' && req.path === `${tenant}/v2.0/.well-known/openid-configuration`) {
      const base = `${this.url}${tenant}`;
      return {
        status: 200,
        body: {
          issuer: `${base}/v2.0`,
          token_endpoint: `${base}/oauth2/v2.0/token`,
          authorization_endpoint: `${base}/oauth2/v2.0/authorize`,
          end_session_endpoint: `${base}/oauth2/v2.0/logout`,
          jwks_uri: `${base}/discovery/v2.0/keys`,
          response_modes_supported: ['query', 'fragment', 'form_post'],
          token_endpoint_auth_methods_supported: ['client_secret_post', 'private_key_jwt', 'client_secret_basic'],
        },
      };
    }
    if (req.method === 'POST' && req.path === `${tenant}/oauth2/v2.0/token`) {
      const form = new URLSearchParams(req.body);
      if (form.get('client_id') !== CLIENT_ID || form.get('client_secret') !== CLIENT_SECRET) {
        return {
          status: 401,
          body: {
            error: 'invalid_client',
            error_description: `AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '${CLIENT_ID}'.\r\nTrace ID: trace-${req.requestId}\r\nCorrelation ID: corr-1\r\nTimestamp: 2026-01-01 00:00:00Z`,
            error_codes: [7000215],
            timestamp: '2026-01-01 00:00:00Z',
            trace_id: `trace-${req.requestId}`,
            correlation_id: 'corr-1',
          },
        };
      }
      const issued: IssuedToken = {
        token: `fake-token-${this.tokens.length + 1}-${randomBytes(12).toString('hex')}`,
        scope: form.get('scope') ?? '',
        expiresIn: this.tokenLifetimeSeconds,
      };
      await this.onToken?.(issued);
      this.tokens.push(issued);
      return {
        status: 200,
        body: { token_type: 'Bearer', expires_in: issued.expiresIn, ext_expires_in: issued.expiresIn, access_token: issued.token },
      };
    }
    return null;
  }

  private async arm(req: RecordedRequest): Promise<FakeResponse> {
    const route = this.routes.get(`${req.method} ${req.path.toLowerCase()}`);
    if (!route) {
      return { status: 404, body: { error: { code: 'FakeNoRoute', message: `the fake has no route for ${req.method} ${req.path}` } } };
    }
    const responder = route.responders[Math.min(route.used, route.responders.length - 1)]!;
    route.used += 1;
    return typeof responder === 'function' ? responder(req) : responder;
  }
}

export interface SpawnResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/**
 * Runs `node bin/cloudshift.js ...args` with `env` on top of this process's environment minus
 * anything Azure (a developer's own AZURE_* variables must not leak into a test).
 */
export function spawnCli(args: string[], env: Record<string, string>): Promise<SpawnResult> {
  const base = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('AZURE_') && k !== 'NODE_EXTRA_CA_CERTS'));
  return new Promise((resolve) => {
    const child = execFile('node', ['bin/cloudshift.js', ...args], { env: { ...base, ...env }, timeout: 120_000 }, (_err, stdout, stderr) =>
      resolve({ code: child.exitCode, stdout, stderr }),
    );
  });
}
