/**
 * `cloudshift report` end to end: a real run (interrupted and resumed, with one batch corrupted on
 * the target so verification fails, and a table whose name is an HTML injection), the report
 * written by the CLI, then opened in headless Chromium (Debian's `chromium`): the DOM it builds
 * must hold the charts, the tables and the verification summary; nothing may reach the console
 * (a CSP violation, a script error) or the network.
 *
 * Chromium: `apt-get install -y chromium` (CI installs it). Without it this file is skipped
 * locally and fails in CI (CI=true).
 */
import { spawn } from 'node:child_process';
import { accessSync, constants, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runMigration } from '../../src/engine/run.js';
import { loadPlan } from '../../src/plan/parse.js';
import { CHART_IDS } from '../../src/report/html.js';
import { cli } from '../harness/cli.js';
import { harness, sql } from '../harness/db.js';
import { hospitalScenario, type Scenario } from '../harness/scenario.js';

const HOSTILE_SQL = `public."x""; <script>alert(1)</script>"`;
/** How the hostile name reads in the DOM Chromium serialises: text nodes escape <, > and &, not quotes. */
const HOSTILE_IN_DOM = 'public."x""; &lt;script&gt;alert(1)&lt;/script&gt;"';

const PLAN = `version: 1
name: reporttest
source: { postgres: "\${env:SOURCE_DATABASE_URL}" }
target: { postgres: "\${env:TARGET_DATABASE_URL}" }
tables:
  - name: public.patients
  - name: public.encounters
  - name: public.observations
    batch: { rows: 200 }
  - name: public.medications
  - name: '${HOSTILE_SQL}'
    batch: { rows: 20 }
copy: { jobs: 1, batch: { rows: 300 } }
`;

function findOnPath(name: string): string | null {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    const candidate = join(dir, name);
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not here
    }
  }
  return null;
}

const CHROMIUM = findOnPath('chromium');
const REQUIRED = process.env.CI === 'true';

interface BrowserRun {
  code: number | null;
  stdout: string;
  stderr: string;
  /** URLs the page asked the network for (from Chromium's net log; the browser's own background requests excluded). */
  pageRequests: string[];
}

/** Runs headless Chromium on a file with a fresh profile; kills its whole process group after `timeoutMs`. */
function chromium(file: string, mode: string[], timeoutMs = 60_000): Promise<BrowserRun> {
  const profile = mkdtempSync(join(tmpdir(), 'cs-chromium-'));
  const netLog = join(profile, 'netlog.json');
  const args = [
    '--headless',
    '--no-sandbox',
    '--disable-gpu',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
    '--no-first-run',
    // Nothing leaves the machine, whatever the page or the browser asks for.
    '--host-resolver-rules=MAP * ~NOTFOUND',
    `--user-data-dir=${profile}`,
    '--enable-logging=stderr',
    '--v=0',
    `--log-net-log=${netLog}`,
    ...mode,
    pathToFileURL(file).href,
  ];
  return new Promise((resolve, reject) => {
    const child = spawn(CHROMIUM ?? 'chromium', args, { detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => {
      if (child.pid) process.kill(-child.pid, 'SIGKILL');
    }, timeoutMs);
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      try {
        resolve({ code, stdout, stderr, pageRequests: pageRequests(netLog) });
      } finally {
        rmSync(profile, { recursive: true, force: true });
      }
    });
  });
}

/**
 * Requests started on behalf of a document. The browser's own requests (update checks and the
 * like, which --disable-background-networking does not silence entirely) have no initiator
 * origin; a page's have one (`null` for a file:// page).
 */
function pageRequests(netLogFile: string): string[] {
  if (!existsSync(netLogFile)) return [];
  const log = JSON.parse(readFileSync(netLogFile, 'utf8')) as {
    constants: { logEventTypes: Record<string, number> };
    events: Array<{ type: number; params?: { url?: string; initiator?: string } }>;
  };
  const start = log.constants.logEventTypes['URL_REQUEST_START_JOB'];
  return log.events
    .filter((e) => e.type === start && e.params?.url && e.params.initiator !== 'not an origin')
    .map((e) => e.params!.url!)
    .filter((url) => !url.startsWith('file:') && !url.startsWith('data:'));
}

/** Console output (errors, CSP violations: "blocked"), uncaught errors, failed loads. */
function consoleProblems(stderr: string): string[] {
  return stderr.split('\n').filter((l) => /:CONSOLE[:(]|Uncaught|Content Security Policy|net::ERR_|has been blocked/i.test(l));
}

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/** The SVG element with this id, as serialised in the DOM. */
function svgById(dom: string, id: string): string {
  const at = dom.indexOf(`<svg id="${id}"`);
  expect(at, `svg#${id}`).toBeGreaterThanOrEqual(0);
  return dom.slice(at, dom.indexOf('</svg>', at) + '</svg>'.length);
}

if (!CHROMIUM && REQUIRED) {
  describe('cloudshift report in Chromium', () => {
    it('needs chromium on the PATH in CI (apt-get install -y chromium)', () => {
      expect(CHROMIUM, 'chromium executable on PATH').not.toBeNull();
    });
  });
}

describe.runIf(CHROMIUM !== null)('cloudshift report in Chromium', () => {
  let s: Scenario;
  let file: string;
  let out: string;
  let runId: string;
  let batches: Array<{ relation: string; total: number; verified: number; mismatched: number; rows: string }>;

  beforeAll(async () => {
    s = await hospitalScenario('report');
    await sql(
      'source',
      s.dbs.source,
      `CREATE TABLE ${HOSTILE_SQL} (id int PRIMARY KEY, label text NOT NULL);
       INSERT INTO ${HOSTILE_SQL} SELECT g, 'label ' || g FROM generate_series(1, 60) AS g;`,
    );
    file = s.plan(PLAN);
    out = join(s.dir, 'report.html');
  });
  afterAll(async () => s?.drop());

  it('refuses to report a plan without a run (exit 3) and writes nothing', async () => {
    const r = await cli(['report', file, '--out', out], s.env);
    expect(r.code).toBe(3);
    expect(r.stderr).toContain('error: plan reporttest has no run yet: there is nothing to report');
    expect(r.stderr).toContain(`hint: check the plan with \`cloudshift dry-run ${file}\``);
    expect(existsSync(out)).toBe(false);
    // read-only: not even the state store schema was created
    const schemas = await sql<{ n: string }>('target', s.dbs.target, `SELECT count(*) AS n FROM pg_namespace WHERE nspname = 'cloudshift'`);
    expect(schemas[0]!.n).toBe('0');
  });

  it('writes a report of an interrupted, resumed run with a mismatch, read-only and atomically', async () => {
    const loaded = await loadPlan(file);
    // First attempt: Ctrl-C after a few batches.
    const controller = new AbortController();
    let commits = 0;
    const first = await runMigration(loaded, {
      env: s.env,
      abortSignal: controller.signal,
      hooks: {
        afterBatchCommit: () => {
          commits += 1;
          if (commits === 5) controller.abort();
        },
      },
    });
    expect(first.interrupted).toBe(true);
    // Resumed: the target changes the rows of the hostile table's first batch after each commit,
    // so that batch fails verification twice and is recorded as mismatched.
    let corrupted: string | null = null;
    const second = await runMigration(loaded, {
      env: s.env,
      hooks: {
        afterBatchCommit: async (batch) => {
          if (batch.table !== HOSTILE_SQL) return;
          corrupted ??= batch.batchId;
          if (batch.batchId !== corrupted) return;
          await sql(
            'target',
            s.dbs.target,
            `UPDATE ${HOSTILE_SQL} AS t SET label = t.label || '!'
               FROM cloudshift.batches AS b
              WHERE b.id = $1
                AND ((b.key_low->>0) IS NULL OR t.id >= (b.key_low->>0)::int)
                AND ((b.key_high->>0) IS NULL OR t.id < (b.key_high->>0)::int)`,
            [corrupted],
          );
        },
      },
    });
    expect(second.interrupted).toBe(false);
    expect(second.mismatches).toBe(1);
    runId = second.runId;
    batches = await sql(
      'target',
      s.dbs.target,
      `SELECT relation, count(*)::int AS total, count(*) FILTER (WHERE status = 'verified')::int AS verified,
              count(*) FILTER (WHERE status = 'mismatch')::int AS mismatched, sum(rows)::text AS rows
         FROM cloudshift.batches GROUP BY relation ORDER BY relation COLLATE "C"`,
    );
    expect(batches.map((b) => [b.relation, b.mismatched])).toEqual([
      [HOSTILE_SQL, 1],
      ['public.encounters', 0],
      ['public.medications', 0],
      ['public.observations', 0],
      ['public.patients', 0],
    ]);

    const eventsBefore = await sql<{ n: string }>('target', s.dbs.target, `SELECT count(*) AS n FROM cloudshift.events`);
    const r = await cli(['report', file, '--out', out], s.env);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(`report written to ${out}\n`);
    expect(readdirSync(s.dir).filter((f) => f.endsWith('.tmp'))).toEqual([]);
    const eventsAfter = await sql<{ n: string }>('target', s.dbs.target, `SELECT count(*) AS n FROM cloudshift.events`);
    expect(eventsAfter[0]!.n).toBe(eventsBefore[0]!.n);

    const html = readFileSync(out, 'utf8');
    expect(html).toContain(runId);
    expect(html).toContain('<code>${env:TARGET_DATABASE_URL}</code>');
    for (const secret of [harness().source.password, harness().target.password, s.env.TARGET_DATABASE_URL]) {
      expect(html).not.toContain(secret);
    }
    expect(html).not.toMatch(/<script/i);

    // An unwritable destination: exit 2, nothing written, the earlier report kept.
    const bad = await cli(['report', file, '--out', join(s.dir, 'missing-folder', 'report.html')], s.env);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/error: cannot write the report to .*missing-folder\/report\.html \(ENOENT\)/);
    expect(readFileSync(out, 'utf8')).toBe(html);
  });

  it('opens in headless Chromium: charts, tables and verification in the DOM; no console output, no network', async () => {
    const page = await chromium(out, ['--dump-dom']);
    expect(page.code).toBe(0);
    expect(consoleProblems(page.stderr)).toEqual([]);
    expect(page.pageRequests).toEqual([]);
    const dom = page.stdout;

    // The HTML parser built what the report says, with no script anywhere.
    expect(dom).toContain('<meta http-equiv="Content-Security-Policy"');
    expect(dom).not.toMatch(/<script/i);

    const timeline = svgById(dom, CHART_IDS.timeline);
    const phases = [...timeline.matchAll(/class="phase-bar[^"]*" data-phase="([^"]+)"/g)].map((m) => m[1]);
    expect(phases).toEqual(['schema', 'planning', 'copy', 'copy', 'indexes', 'sequences', 'final', 'done']);
    expect(timeline).toContain('class="phase-bar interrupted" data-phase="copy"');

    for (const id of [CHART_IDS.rowsPerSecond, CHART_IDS.megabytesPerSecond]) {
      const chart = svgById(dom, id);
      expect(chart).toContain('class="chart time-chart bars-chart throughput-chart"');
      expect(chart.match(/<rect class="bar" /g)?.length ?? 0, id).toBeGreaterThan(0);
      expect(chart).toContain('time since the run started');
    }
    expect(dom).not.toMatch(/NaN|Infinity/);

    for (const table of ['public.patients', 'public.encounters', 'public.observations', 'public.medications', HOSTILE_IN_DOM]) {
      expect(dom).toContain(`<td>${table}</td>`);
    }
    expect(dom).toContain('Verification failed.');
    const total = batches.reduce((n, b) => n + b.total, 0);
    expect(dom).toContain(`1 of ${total} batches do not match the source`);
    const verification = dom.slice(dom.indexOf('<table id="verification-tables">'));
    for (const b of batches) {
      const name = b.relation === HOSTILE_SQL ? HOSTILE_IN_DOM : b.relation;
      const bad = b.mismatched > 0 ? `<strong class="bad">${b.mismatched}</strong>` : '0';
      const rows = Number(b.rows).toLocaleString('en-GB');
      expect(verification).toContain(
        `<td class="wrap">${name}</td><td class="nowrap">table</td><td class="num">${b.verified}</td><td class="num">${bad}</td>` +
          `<td class="num">${b.total}</td><td class="num">${rows}</td>`,
      );
    }
    const mismatched = dom.slice(dom.indexOf('<table id="mismatched-batches">'));
    expect(mismatched).toMatch(
      new RegExp(`<td>${escapeRegExp(HOSTILE_IN_DOM)}</td><td class="num">\\d+</td><td class="wrap"><code>\\[.+?, .+?\\)</code></td>`),
    );
    expect(mismatched).toMatch(/checksum mismatch: source sha256:[0-9a-f]{64}:\d+, target sha256:[0-9a-f]{64}:\d+/);

    expect(dom).toContain('Live sync was not used in this run.');
    expect(dom).toContain('No cutover recorded.');
    const log = dom.slice(dom.indexOf('<table id="event-log">'));
    for (const kind of ['run:start', 'run:phase', 'run:interrupted', 'run:resume', 'batch:mismatch', 'run:done']) {
      expect(log).toContain(`<code>${kind}</code>`);
    }
    expect(log).toContain(`${HOSTILE_IN_DOM} batch `);
  });

  it('renders a full-page screenshot', async () => {
    const png = join(s.dir, 'report.png');
    const shot = await chromium(out, [`--screenshot=${png}`, '--window-size=1280,2400', '--hide-scrollbars']);
    expect(shot.code).toBe(0);
    expect(consoleProblems(shot.stderr)).toEqual([]);
    const bytes = readFileSync(png);
    expect(bytes.subarray(1, 4).toString('latin1')).toBe('PNG');
    expect([bytes.readUInt32BE(16), bytes.readUInt32BE(20)]).toEqual([1280, 2400]);
  });

  it('the checks above catch a page that scripts, loads from the network or breaks the CSP', async () => {
    const bad = join(s.dir, 'canary.html');
    writeFileSync(
      bad,
      `<!DOCTYPE html><html><head><meta charset="utf-8"></head><body><p>canary</p>` +
        `<img src="https://cdn.example.com/logo.png"><script>console.error("boom"); undefinedFunction();</script></body></html>`,
    );
    const page = await chromium(bad, ['--dump-dom']);
    expect(page.code).toBe(0);
    expect(page.pageRequests).toEqual(['https://cdn.example.com/logo.png']);
    expect(consoleProblems(page.stderr).join('\n')).toMatch(/"boom"[\s\S]*Uncaught ReferenceError/);
    const csp = join(s.dir, 'canary-csp.html');
    writeFileSync(
      csp,
      `<!DOCTYPE html><html><head><meta charset="utf-8"><meta http-equiv="Content-Security-Policy" content="default-src 'none'"></head>` +
        `<body><img src="https://cdn.example.com/logo.png"></body></html>`,
    );
    const blocked = await chromium(csp, ['--dump-dom']);
    expect(blocked.pageRequests).toEqual([]);
    expect(consoleProblems(blocked.stderr).join('\n')).toContain('violates the following Content Security Policy directive');
  });
});
