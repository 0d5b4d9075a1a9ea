import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createHttpHeaders, createPipelineRequest, RestError } from '@azure/core-rest-pipeline';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { renderVerify } from '../../src/cli/commands/verify.js';
import { reportError } from '../../src/cli/errors.js';
import type { CliIO } from '../../src/cli/io.js';
import { progressRenderer } from '../../src/cli/render/progress.js';
import { cli } from '../harness/cli.js';
import { scratchDir } from '../../src/embedded/util.js';

function planFile(text: string): string {
  const file = join(scratchDir('cs-cli'), 'plan.yaml');
  writeFileSync(file, text);
  return file;
}

const bad = `version: 1
name: ppm
source: { postgres: "\${env:S}" }
target: { postgres: "\${env:T}" }
tables:
  - name: public.patients
    batch: { rowz: 10 }
`;

describe('cloudshift plan validate', () => {
  it('prints valid and exits 0 for a good plan', async () => {
    const r = await cli(['plan', 'validate', 'plans/ppm.yaml']);
    expect(r).toMatchObject({ code: 0, stdout: 'plans/ppm.yaml: valid\n' });
  });

  it('text: file:line:col: path: message, exit 2', async () => {
    const file = planFile(bad);
    const r = await cli(['plan', 'validate', file]);
    expect(r.code).toBe(2);
    expect(r.stdout).toBe(`${file}:7:14: tables[0].batch.rowz: unknown key "rowz"; did you mean "rows"?\n`);
  });

  it('json: {valid, errors[path,line,column,message]}', async () => {
    const file = planFile(bad);
    const r = await cli(['plan', 'validate', file, '--format', 'json']);
    expect(r.code).toBe(2);
    expect(JSON.parse(r.stdout)).toEqual({
      valid: false,
      errors: [{ path: 'tables[0].batch.rowz', line: 7, column: 14, message: 'unknown key "rowz"; did you mean "rows"?' }],
    });
  });

  it('github: workflow annotations', async () => {
    const file = planFile(bad);
    const r = await cli(['plan', 'validate', file, '--format', 'github']);
    expect(r.stdout).toBe(
      `::error file=${file},line=7,col=14,title=plan tables[0].batch.rowz::tables[0].batch.rowz: unknown key "rowz"; did you mean "rows"?\n`,
    );
  });

  it('a missing plan file is a usage error (exit 2) naming the file', async () => {
    const r = await cli(['plan', 'validate', 'plans/nope.yaml']);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('cannot read plan plans/nope.yaml (ENOENT)');
    // In the format asked for, for CI.
    const json = await cli(['plan', 'validate', 'plans/nope.yaml', '--format', 'json']);
    expect(json.code).toBe(2);
    expect(JSON.parse(json.stdout)).toEqual({
      error: { code: 'CS_USAGE', message: 'cannot read plan plans/nope.yaml (ENOENT)', hint: null },
    });
  });

  it('usage errors exit 2', async () => {
    expect((await cli(['plan', 'validat'])).code).toBe(2);
    expect((await cli(['plan', 'validate', 'plans/ppm.yaml', '--format', 'xml'])).code).toBe(2);
    // Before any server starts.
    const big = await cli(['demo', '--scale', '5000']);
    expect([big.code, big.stdout]).toEqual([2, '']);
    expect(big.stderr).toMatch(/option '--scale <n>' argument '5000' is invalid\. expected at most \d+/);
    expect((await cli(['--help'])).code).toBe(0);
    // No command (help shown for want of one) is a usage error; help asked for is not.
    expect((await cli([])).code).toBe(2);
    expect((await cli(['plan'])).code).toBe(2);
    expect((await cli(['help', 'run'])).code).toBe(0);
    // A timeout of 0 would never time out.
    const zero = await cli(['dry-run', 'plans/ppm.yaml', '--connect-timeout', '0s']);
    expect(zero.code).toBe(2);
    expect(zero.stderr).toContain("option '--connect-timeout <duration>' argument '0s' is invalid. expected a duration above zero");
  });
});

describe('cloudshift dry-run before connecting', () => {
  it('names every missing environment variable, exit 2', async () => {
    const r = await cli(['dry-run', 'plans/ppm.yaml'], { TARGET_DATABASE_URL: 'postgres://u:topsecret@127.0.0.1:1/x' });
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('source.postgres: environment variable SOURCE_DATABASE_URL is not set');
    expect(r.stderr).toContain('target.blob.connectionString: environment variable AZURE_STORAGE_CONNECTION_STRING is not set');
    // The switch's too: the dry run asks PgBouncer's admin console.
    expect(r.stderr).toContain('cutover.switch.pgbouncer.admin: environment variable PGBOUNCER_ADMIN_URL is not set');
    expect(r.stderr + r.stdout).not.toContain('topsecret');
  });

  it('github format: the error as one annotation, escaped, with its hint', async () => {
    const r = await cli(['dry-run', 'plans/ppm.yaml', '--format', 'github'], { SOURCE_DATABASE_URL: 'postgres://u@127.0.0.1:1/x' });
    expect(r.code).toBe(2);
    expect(r.stdout.split('\n')).toEqual([
      expect.stringMatching(
        /^::error title=cloudshift CS_USAGE::target\.postgres: environment variable TARGET_DATABASE_URL is not set%0A.*%0Ahint: export TARGET_DATABASE_URL=\.\.\. before running cloudshift/,
      ),
      '',
    ]);
  });

  it('an invalid plan exits 2 with its problems', async () => {
    const r = await cli(['dry-run', planFile(bad), '--format', 'json']);
    expect(r.code).toBe(2);
    expect(JSON.parse(r.stdout).errors[0].path).toBe('tables[0].batch.rowz');
  });
});

describe('run progress', () => {
  it('counts a batch copied again (a retry) once, with its last figures', () => {
    const lines: string[] = [];
    const out = { write: (t: string) => void lines.push(t) };
    const progress = progressRenderer('plain', out, out);
    const at = new Date().toISOString();
    progress.onEvent({
      type: 'table:planned',
      at,
      table: 'public.docs',
      batches: 2,
      done: 0,
      estimatedRows: 20,
      bytes: 0,
      key: 'id',
      copiedRows: 0,
      copiedBytes: 0,
    });
    const copied = (batchId: string, rows: number) =>
      progress.onEvent({ type: 'batch:copied', at, table: 'public.docs', batchId, seq: Number(batchId), rows, bytes: rows * 100, ms: 5 });
    copied('1', 10);
    copied('2', 10);
    copied('2', 9); // its documents were wrong: copied again (a row gone meanwhile)
    progress.onEvent({ type: 'table:done', at, table: 'public.docs', rows: 19, bytes: 1900, mismatches: 0 });
    progress.stop();
    expect(lines.at(-1)).toMatch(/^public\.docs: 2\/2 batches, 19 rows, 1\.9 kB,/);
  });

  it('a batch the sweep sends back is counted afresh by the next pass, which plans the table again', () => {
    const lines: string[] = [];
    const out = { write: (t: string) => void lines.push(t) };
    const progress = progressRenderer('plain', out, out);
    const at = new Date().toISOString();
    const planned = (done: number, copiedRows: number, copiedBytes: number) =>
      progress.onEvent({
        type: 'table:planned',
        at,
        table: 'public.docs',
        batches: 2,
        done,
        estimatedRows: 20,
        bytes: 0,
        key: 'id',
        copiedRows,
        copiedBytes,
      });
    const copied = (batchId: string, rows: number) =>
      progress.onEvent({ type: 'batch:copied', at, table: 'public.docs', batchId, seq: Number(batchId), rows, bytes: rows * 100, ms: 5 });
    planned(0, 0, 0);
    copied('1', 10);
    copied('2', 10);
    // The sweep found a document of batch 2 wrong: the next pass plans the table with batch 1 done
    // (as a resumed run does: its figures, rows and bytes, from before).
    planned(1, 10, 1000);
    copied('2', 9);
    progress.onEvent({ type: 'table:done', at, table: 'public.docs', rows: 19, bytes: 1900, mismatches: 0 });
    progress.stop();
    expect(lines.at(-1)).toMatch(/^public\.docs: 2\/2 batches, 19 rows, 1\.9 kB,/);
  });
});

describe('run progress rates', () => {
  afterEach(() => void vi.useRealTimers());

  it("measures a table's rate from its own first batch, not from when every table was planned", () => {
    vi.useFakeTimers({ now: 0 });
    const lines: string[] = [];
    const out = { write: (t: string) => void lines.push(t) };
    const progress = progressRenderer('plain', out, out);
    const at = new Date().toISOString();
    for (const table of ['public.first', 'public.second'])
      progress.onEvent({
        type: 'table:planned',
        at,
        table,
        batches: 2,
        done: 0,
        estimatedRows: 10,
        bytes: 0,
        key: 'id',
        copiedRows: 0,
        copiedBytes: 0,
      });
    // The second table's batches begin a minute in, once the first table is done.
    const copied = (table: string, batchId: string, now: number) => {
      vi.setSystemTime(now);
      progress.onEvent({ type: 'batch:copied', at, table, batchId, seq: 1, rows: 100, bytes: 1000, ms: 10_000 });
    };
    copied('public.second', '3', 70_000);
    copied('public.second', '4', 80_000);
    progress.onEvent({ type: 'table:done', at, table: 'public.second', rows: 200, bytes: 2000, mismatches: 0 });
    progress.stop();
    // 200 rows over the 20 s since its first batch began (not 80 s).
    expect(lines.at(-1)).toMatch(/^public\.second: 2\/2 batches, 200 rows, 2\.0 kB, 10 rows\/s, 0\.0 MB\/s, done\n$/);
  });
});

describe('errors that reach the CLI', () => {
  const report = (err: unknown) => {
    let stderr = '';
    const out = { write: (s: string) => ((stderr += s), true) };
    const code = reportError({ stdout: { write: () => true }, stderr: out, env: {}, cwd: '.' } as CliIO, err);
    return { code, stderr };
  };

  it('a lost connection or a PostgreSQL error is said plainly, no stack, with its exit code', () => {
    const lost = report(Object.assign(new Error('connect ECONNREFUSED 10.0.0.4:5432'), { code: 'ECONNREFUSED' }));
    expect(lost.code).toBe(3);
    expect(lost.stderr).toBe(
      'error: a database connection failed: connect ECONNREFUSED 10.0.0.4:5432\nhint: check that the servers answer, then run the same command again\n',
    );
    // A permission or a table missing is a precondition not met (3); a deadlock a statement that failed (1).
    const refused = report(Object.assign(new Error('permission denied for table patients'), { severity: 'ERROR', code: '42501' }));
    expect(refused.code).toBe(3);
    expect(refused.stderr).toMatch(/^error: PostgreSQL refused a statement: permission denied for table patients \(SQLSTATE 42501\)\n/);
  });

  it('a deadlock is PostgreSQL refusing a statement, not a lost connection', () => {
    const deadlock = report(Object.assign(new Error('deadlock detected'), { severity: 'ERROR', code: '40P01' }));
    expect(deadlock.code).toBe(1);
    expect(deadlock.stderr).toMatch(/^error: PostgreSQL refused a statement: deadlock detected \(SQLSTATE 40P01\)\n/);
  });

  it('the Blob service failing past the retries, anywhere, is resumable (3) with its status, code and request id', () => {
    const request = createPipelineRequest({
      url: 'http://127.0.0.1:10000/devstoreaccount1/docs?restype=container&comp=list',
      headers: createHttpHeaders({ 'x-ms-version': '2025-01-05' }),
    });
    const response = {
      request,
      status: 503,
      headers: createHttpHeaders({ 'x-ms-error-code': 'ServerBusy', 'x-ms-request-id': 'req-7' }),
    };
    const busy = report(new RestError('The server is busy.', { statusCode: 503, code: 'ServerBusy', request, response }));
    expect(busy.code).toBe(3);
    expect(busy.stderr).toBe(
      'error: the Blob service failed: HTTP 503 ServerBusy (request id req-7): The server is busy.\nhint: documents already uploaded are kept; when the service answers again, run the same command to resume\n',
    );
  });

  it('anything else is an internal error with its stack (a bug to report), our own bad SQL too', () => {
    const bug = report(new TypeError('x is undefined'));
    expect(bug.code).toBe(1);
    expect(bug.stderr).toMatch(/^internal error: TypeError: x is undefined\n\s+at /);
    const sql = report(Object.assign(new Error('column "nope" does not exist'), { severity: 'ERROR', code: '42703' }));
    expect(sql.stderr).toMatch(/^internal error: Error: column "nope" does not exist\n\s+at /);
  });
});

describe('verify output', () => {
  const table = { table: 'public.t', ranges: 1, rangesChecked: 1, rows: 5, repaired: 0 };
  it('says a table differs when its checksums differ though no row could be named, never "match"', () => {
    const text = renderVerify({ ok: false, sampled: false, findings: [], tables: [{ ...table, matched: false, differences: 0 }] });
    expect(text).toBe(
      'public.t: 1 range, 5 rows: differs (the checksums differ; no row could be named)\nverify: DIFFERENCES FOUND (run with --repair to re-copy exactly those rows)\n',
    );
    expect(renderVerify({ ok: true, sampled: false, findings: [], tables: [{ ...table, matched: true, differences: 0 }] })).toContain(
      'public.t: 1 range, 5 rows: match\n',
    );
  });
});
