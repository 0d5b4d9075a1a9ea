import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { connect } from '../../src/pg/connect.js';
import { postgresUrl, resolvePostgres } from '../../src/plan/pgUrl.js';

const where = 'source.postgres';
/** What node-postgres makes of a connection string. */
const read = (connectionString: string) => {
  const c = new pg.Client({ connectionString });
  return { host: c.host, port: c.port, database: c.database, user: c.user, password: c.password as string | undefined };
};

describe('PostgreSQL connection values', () => {
  it('percent-encodes a referenced password inside a URL, so any generated password connects as it is', () => {
    for (const password of ['Ab/cd+ef==', 'p@ss/w', 'a#b?c', '50%off', "q'uote:d"]) {
      const url = resolvePostgres('postgres://app:${env:PW}@db.example:6543/ehr', { env: { PW: password }, baseDir: '.', where });
      expect(read(url), password).toEqual({ host: 'db.example', port: 6543, database: 'ehr', user: 'app', password });
    }
  });

  it('leaves a reference to the whole URL, and one outside the user information, as they are', () => {
    const env = { URL: 'postgres://u:p%2Fq@h:5433/d?sslmode=disable', DB: 'ehr' };
    expect(resolvePostgres('${env:URL}', { env, baseDir: '.', where })).toBe(env.URL);
    expect(resolvePostgres('postgres://u@h/${env:DB}', { env, baseDir: '.', where })).toBe('postgres://u@h/ehr');
  });

  it("turns libpq's key=value pairs into a URL node-postgres reads", () => {
    const url = postgresUrl(
      "host=ehr.postgres.database.azure.com port=5432 dbname=ehr user=app@x password='it\\'s a / #1' sslmode=require",
      where,
    );
    expect(read(url)).toEqual({
      host: 'ehr.postgres.database.azure.com',
      port: 5432,
      database: 'ehr',
      user: 'app@x',
      password: "it's a / #1",
    });
    expect(new URL(url).searchParams.get('sslmode')).toBe('require');
    expect(read(postgresUrl('host=/var/run/postgresql dbname=ehr user=app', where))).toMatchObject({
      host: '/var/run/postgresql',
      database: 'ehr',
      user: 'app',
    });
  });

  it('keeps the port of a socket, and takes a referenced key=value password as it is (spaces, quotes, backslashes)', () => {
    expect(read(postgresUrl('host=/var/run/postgresql port=5433 dbname=ehr user=app', where))).toMatchObject({
      host: '/var/run/postgresql',
      port: 5433,
    });
    const password = "a b\\c'd";
    const url = resolvePostgres('host=db dbname=ehr user=app password=${env:PW}', { env: { PW: password }, baseDir: '.', where });
    expect(read(url)).toMatchObject({ host: 'db', database: 'ehr', user: 'app', password });
  });

  it('names the field and never the value of one it cannot read', () => {
    const bad = (value: string) => {
      try {
        postgresUrl(value, where);
      } catch (err) {
        return (err as Error).message;
      }
      return 'accepted';
    };
    expect(bad('postgres://app:s3cret:x@[bad/ehr')).toBe(
      'source.postgres: not a valid connection URL; a user name or password written into it (not through a reference) must be percent-encoded',
    );
    expect(bad('mysql://app@db/ehr')).toBe('source.postgres: a connection URL must start with postgres:// or postgresql://');
    expect(bad("host=db password='s3cret")).toBe(
      "source.postgres: neither a connection URL nor key=value pairs (a value with spaces is quoted: key='a b')",
    );
    expect(bad('host=a,b dbname=x')).toBe('source.postgres: more than one host is not supported; name one');
  });

  it('names a certificate file the connection string points at that cannot be read (exit 3), not an internal error', async () => {
    const err = await connect({
      role: 'source',
      connectionString: 'postgres://u:pw@127.0.0.1:1/db?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem',
    }).catch((e: unknown) => e);
    expect(err).toMatchObject({
      exitCode: 3,
      message: 'the source connection string names /nonexistent/ca.pem, which cannot be read (ENOENT)',
      hint: 'check the sslrootcert, sslcert and sslkey paths in the connection string',
    });
  });
});
