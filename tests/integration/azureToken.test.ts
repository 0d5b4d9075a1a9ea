/**
 * Microsoft Entra ID token authentication to the target PostgreSQL. The local server is not
 * Azure, so the token endpoint makes each token it issues the password of a database role
 * (ALTER ROLE … PASSWORD) the moment it issues it: a connection that signed in with anything
 * but the latest token would be refused. In-process tests hand connect() a fake credential; the
 * end-to-end tests run the real executable with the real DefaultAzureCredential against the fake
 * token endpoint (tests/harness/azure/).
 */
import pg from 'pg';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { AccessToken, TokenCredential } from '../../src/azure/credential.js';
import { PG_TOKEN_SCOPE, pgPoolConfig } from '../../src/azure/pgToken.js';
import { connect } from '../../src/pg/connect.js';
import { FakeAzure, spawnCli, type IssuedToken } from '../harness/azure/fakeAzure.js';
import { harness, sql } from '../harness/db.js';
import { hospitalScenario, type Scenario } from '../harness/scenario.js';

let s: Scenario;
let fake: FakeAzure;
const ROLE = `cs_entra_${process.pid}`;

/** Makes `password` the only one `role` signs in with, as Entra ID makes a token valid. */
async function setPassword(password: string): Promise<void> {
  await sql('target', 'postgres', `ALTER ROLE ${ROLE} PASSWORD '${password.replace(/'/g, "''")}'`);
}

function entraUrl(database: string, extra = ''): string {
  const t = harness().target;
  return `postgres://${ROLE}@${t.host}:${t.port}/${database}?application_name=entra-test${extra}&cloudshift_auth=entra`;
}

/** A credential issuing a new token on every call, each made the role's password. */
function rotatingCredential(): TokenCredential & { scopes: string[] } {
  const scopes: string[] = [];
  let n = 0;
  return {
    scopes,
    async getToken(scope: string | string[]): Promise<AccessToken> {
      scopes.push(String(scope));
      n += 1;
      const token = `in-process-token-${n}-${Math.random().toString(36).slice(2)}`;
      await setPassword(token);
      return { token, expiresOnTimestamp: Date.now() + 60_000 };
    },
  };
}

beforeAll(async () => {
  s = await hospitalScenario('azuretoken');
  await sql('target', 'postgres', `DROP ROLE IF EXISTS ${ROLE}; CREATE ROLE ${ROLE} LOGIN`);
  await sql('target', 'postgres', `ALTER DATABASE ${s.dbs.target} OWNER TO ${ROLE}`);
  await sql('target', s.dbs.target, `ALTER SCHEMA public OWNER TO ${ROLE}`);
  fake = await FakeAzure.start();
});
afterAll(async () => {
  await fake?.close();
  await s?.drop();
  await sql('target', 'postgres', `DROP ROLE IF EXISTS ${ROLE}`).catch(() => undefined);
});
beforeEach(() => fake.reset());

describe('connect() with cloudshift_auth=entra', () => {
  it('signs each new connection in with a fresh token for the Azure Database for PostgreSQL scope', async () => {
    const credential = rotatingCredential();
    const first = await connect({ role: 'target', connectionString: entraUrl(s.dbs.target), credential });
    const second = await connect({ role: 'target', connectionString: entraUrl(s.dbs.target), credential });
    try {
      // The first token is no longer the password, yet the open session goes on: tokens are
      // checked only when signing in.
      for (const c of [first, second]) {
        const { rows } = await c.query<{ who: string; app: string }>(
          `SELECT current_user AS who, current_setting('application_name') AS app`,
        );
        expect(rows[0]).toEqual({ who: ROLE, app: 'entra-test' });
      }
      expect(credential.scopes).toEqual([PG_TOKEN_SCOPE, PG_TOKEN_SCOPE]);
    } finally {
      await Promise.all([first.end(), second.end()]);
    }
  });

  it('a token that is no longer valid is refused, and never printed', async () => {
    const stale: TokenCredential = { getToken: async () => ({ token: 'stale-token-value', expiresOnTimestamp: Date.now() + 60_000 }) };
    await setPassword('something-newer');
    const err = await connect({ role: 'target', connectionString: entraUrl(s.dbs.target), credential: stale }).catch(
      (e: unknown) => e as Error,
    );
    expect(err).toBeInstanceOf(Error);
    expect((err as Error).message).toBe(
      `password authentication failed for user "${ROLE}" on the target database at ${harness().target.host}:${harness().target.port}`,
    );
    expect(JSON.stringify(err)).not.toContain('stale-token-value');
  });

  it('pg pools (pgPoolConfig) ask for a token for each new connection', async () => {
    // pg asks a pool client for its password during the sign-in exchange, after the server has
    // read the role's password: so here the token is set beforehand and only counted.
    await setPassword('pool-token');
    const scopes: string[] = [];
    const credential: TokenCredential = {
      getToken: async (scope) => {
        scopes.push(String(scope));
        return { token: 'pool-token', expiresOnTimestamp: Date.now() + 60_000 };
      },
    };
    const pool = new pg.Pool(pgPoolConfig(entraUrl(s.dbs.target), { max: 2 }, credential));
    try {
      const a = await pool.connect();
      const b = await pool.connect(); // a second connection while the first is held
      expect((await b.query<{ who: string }>('SELECT current_user AS who')).rows[0]!.who).toBe(ROLE);
      a.release();
      b.release();
      expect(scopes).toEqual([PG_TOKEN_SCOPE, PG_TOKEN_SCOPE]);
    } finally {
      await pool.end();
    }
  });
});

describe('end to end: DefaultAzureCredential and the Entra ID token endpoint', () => {
  const onToken = async (t: IssuedToken) => {
    if (t.scope === PG_TOKEN_SCOPE) await setPassword(t.token);
  };
  const plan = `version: 1
name: entra
source: { postgres: "\${env:SOURCE_DATABASE_URL}" }
target: { postgres: "\${env:TARGET_DATABASE_URL}" }
tables:
  - name: public.patients
copy: { jobs: 1 }
`;
  const env = () => ({ ...s.env, ...fake.env(), TARGET_DATABASE_URL: entraUrl(s.dbs.target) });

  it('a token about to expire is not reused: the next connection fetches a new one', async () => {
    fake.tokenLifetimeSeconds = 5;
    fake.onToken = onToken;
    const r = await spawnCli(['dry-run', s.plan(plan, 'entra.yaml'), '--format', 'json'], env());
    const report = JSON.parse(r.stdout) as { checks: Array<{ id: string; status: string; message: string }> };
    const byId = (id: string) => report.checks.find((c) => c.id === id);
    expect(byId('target.connect')?.status, r.stdout + r.stderr).toBe('pass');
    expect(byId('state.store')?.status, r.stdout + r.stderr).toBe('pass');
    // Two connections (target, then the state store in the same database), two tokens: the
    // second connection signed in with a token issued after the first one's.
    const requests = fake.tokenRequests();
    expect(requests.map((t) => t.form.get('scope'))).toEqual([PG_TOKEN_SCOPE, PG_TOKEN_SCOPE]);
    expect(requests.map((t) => t.form.get('grant_type'))).toEqual(['client_credentials', 'client_credentials']);
    expect(new Set(fake.tokens.map((t) => t.token)).size).toBe(2);
    expect(r.code).toBe(0);
  });

  it('a token still valid is reused by later connections, including the state store pool, through a whole run', async () => {
    fake.tokenLifetimeSeconds = 3600;
    fake.onToken = onToken;
    const r = await spawnCli(['run', s.plan(plan, 'entra-run.yaml')], env());
    expect(r.stdout + r.stderr).toContain('finished: every batch verified');
    expect(r.code).toBe(0);
    expect(fake.tokenRequests()).toHaveLength(1);
    expect(r.stdout + r.stderr).not.toContain(fake.tokens[0]!.token);
    const rows = await sql<{ n: string }>('target', s.dbs.target, 'SELECT count(*)::text AS n FROM public.patients');
    expect(rows[0]!.n).toBe('200');
  });

  it('a connection string with both a password and cloudshift_auth=entra is refused before any token request', async () => {
    const t = harness().target;
    const url = `postgres://${ROLE}:\${env:PW}@${t.host}:${t.port}/${s.dbs.target}?cloudshift_auth=entra`;
    const file = s.plan(plan.replace('"${env:TARGET_DATABASE_URL}"', `"${url}"`), 'entra-bad.yaml');
    const r = await spawnCli(['dry-run', file, '--format', 'json'], { ...env(), PW: 'pw-value' });
    const report = JSON.parse(r.stdout) as { checks: Array<{ id: string; status: string; message: string }> };
    expect(report.checks.find((c) => c.id === 'target.connect')?.message).toBe(
      'with cloudshift_auth=entra the connection string must not hold a password: the token is the password (remove the password from the connection string)',
    );
    expect(fake.tokenRequests()).toEqual([]);
  });
});
