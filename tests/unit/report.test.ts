import { describe, expect, it } from 'vitest';
import { applyDefaults } from '../../src/plan/defaults.js';
import { fingerprintOf, validatePlanText, type LoadedPlan } from '../../src/plan/parse.js';
import { escapeHtml, text } from '../../src/report/escape.js';
import { CHART_IDS, CONTENT_SECURITY_POLICY, formatDuration, formatKeyRange, renderReportHtml, verdict } from '../../src/report/html.js';
import { formatElapsed, formatValue, ganttChart, linearScale, niceStep, timeChart, timeTicks, valueTicks } from '../../src/report/svg.js';
import type { RunPhaseRow } from '../../src/state/sql/runPhases.js';
import { bucketCount, chooseBucketMs, MAX_POINTS, phaseSpan, throughputSeries, type History } from '../../src/views/history.js';
import type { Overview } from '../../src/views/overview.js';

const HOSTILE = 'public."x""; <script>alert(1)</script>"';

function loadedPlan(text: string): LoadedPlan {
  const r = validatePlanText(text);
  if (!r.valid) throw new Error(JSON.stringify(r.problems));
  return { file: 'plans/report.yaml', dir: '/nonexistent', fingerprint: fingerprintOf(r.input), plan: applyDefaults(r.input) };
}

const PLAN = loadedPlan(`version: 1
name: reporttest
source: { postgres: "\${env:SOURCE_DATABASE_URL}" }
target: { postgres: "\${env:TARGET_DATABASE_URL}" }
tables:
  - name: public.patients
  - name: '${HOSTILE.replace(/'/g, "''")}'
    batch: { rows: 10 }
sync: { mode: logical }
cutover:
  switch:
    pgbouncer: { admin: "\${env:PGBOUNCER_ADMIN_URL}", database: ehr, config: /etc/pgbouncer/cs.ini }
`);

const T0 = Date.parse('2026-11-23T10:00:00.000Z');
const iso = (ms: number) => new Date(T0 + ms).toISOString();

function overview(mismatched = 1): Overview {
  const table = (name: string, total: number, bad: number) => ({
    table: name,
    kind: 'table' as const,
    batches: { total, done: total, pending: 0, inFlight: 0, verified: total - bad, mismatched: bad },
    rows: total * 10,
    bytes: total * 1000,
    rowsPerSecond: 0,
    bytesPerSecond: 0,
    etaSeconds: 0,
    verification: bad > 0 ? ('mismatched' as const) : ('verified' as const),
  });
  const tables = [table('public.patients', 4, 0), table(HOSTILE, 2, mismatched)];
  return {
    plan: 'reporttest',
    planFile: 'plans/report.yaml',
    run: {
      id: '2edaedc5-61cf-4676-9837-0a961b722965',
      phase: 'done',
      status: 'finished',
      startedAt: iso(0),
      updatedAt: iso(5_000),
      createdBy: 'alice@db-admin-01',
      toolVersion: '0.1.0',
      processActive: false,
      processStalled: null,
      planChanged: false,
      lastFailure: null,
    },
    tables,
    totals: { rows: 60, bytes: 6000, batches: 6, done: 6, mismatched, verified: 6 - mismatched, rowsPerSecond: 0, etaSeconds: 0 },
    sync: null,
    workers: [],
    events: [],
    next: 'copy finished',
  };
}

function history(): History {
  const span = 3_000;
  const bucketMs = chooseBucketMs(span);
  return {
    runId: '2edaedc5-61cf-4676-9837-0a961b722965',
    phases: [
      phaseSpan({
        phase: 'schema',
        started_at: new Date(T0 + 10),
        next_kind: 'run:phase',
        next_at: new Date(T0 + 400),
        last_activity: null,
      }),
      phaseSpan({
        phase: 'planning',
        started_at: new Date(T0 + 400),
        next_kind: 'run:phase',
        next_at: new Date(T0 + 600),
        last_activity: null,
      }),
      phaseSpan({
        phase: 'copy',
        started_at: new Date(T0 + 600),
        next_kind: 'run:phase',
        next_at: new Date(T0 + 3_700),
        last_activity: null,
      }),
      phaseSpan({
        phase: 'done',
        started_at: new Date(T0 + 3_700),
        next_kind: 'run:done',
        next_at: new Date(T0 + 3_705),
        last_activity: null,
      }),
    ],
    throughput: throughputSeries(new Date(T0 + 650), span, bucketMs, [
      { bucket: 3, batches: 2, rows: 20, bytes: 2_000 },
      { bucket: 40, batches: 3, rows: 30, bytes: 3_000 },
      { bucket: 60, batches: 1, rows: 10, bytes: 1_000 },
    ]),
    lag: { key: 'lag', label: 'live sync lag', unit: 's', bucketMs: 0, points: [], startedAt: null },
    switches: [],
    mismatches: {
      total: 1,
      listed: [
        {
          table: HOSTILE,
          seq: 1,
          status: 'mismatch',
          keyLow: ['10'],
          keyHigh: null,
          rows: 10,
          attempts: 2,
          error: 'checksum mismatch: source sha256:aa:10, target sha256:bb:10',
          finishedAt: iso(3_000),
        },
      ],
    },
    events: [
      { id: '1', at: iso(5), kind: 'run:start', message: 'run of plan reporttest started', who: 'alice@db-admin-01 (pid 42)' },
      {
        id: '2',
        at: iso(3_000),
        kind: 'batch:mismatch',
        message: `${HOSTILE} batch 1: <img src=x onerror=alert(2)>`,
        who: 'alice@db-admin-01 (pid 42)',
      },
      {
        id: '3',
        at: iso(3_100),
        kind: 'note',
        message: 'connected to postgres://app:hunter2@db.internal/ehr',
        who: 'alice@db-admin-01 (pid 42)',
      },
      {
        id: '4',
        at: iso(3_705),
        kind: 'run:done',
        message: 'copied 60 rows in 2 tables; 1 mismatched batches',
        who: 'alice@db-admin-01 (pid 42)',
      },
    ],
  };
}

function render(o = overview(), h = history()): string {
  return renderReportHtml({ overview: o, history: h, plan: PLAN, generatedAt: new Date(T0 + 60_000) });
}

describe('escaping', () => {
  it('escapes the five HTML metacharacters', () => {
    expect(escapeHtml(`x"; <script>alert('1')</script> & more`)).toBe(
      'x&quot;; &lt;script&gt;alert(&#39;1&#39;)&lt;/script&gt; &amp; more',
    );
    expect(escapeHtml('plain text')).toBe('plain text');
  });

  it('redacts before escaping', () => {
    expect(text('postgres://app:hunter2@db/x?sslmode=require&sig=abc')).toBe('postgres://app:***@db/x?sslmode=require&amp;sig=***');
    expect(text(42)).toBe('42');
  });
});

describe('the report', () => {
  const html = render();

  it('is one self-contained document: CSP, no script, no external resource', () => {
    expect(html.startsWith('<!DOCTYPE html>')).toBe(true);
    expect(html).toContain(`<meta http-equiv="Content-Security-Policy" content="${escapeHtml(CONTENT_SECURITY_POLICY)}">`);
    expect(html).not.toMatch(/<script/i);
    expect(html).not.toMatch(/<(img|link|iframe|object|embed)\b/i);
    expect(html).not.toMatch(/https?:\/\//);
    // markup (escaped text has no "<"): no event handler, no link or source but in-page anchors
    const tags = html.match(/<[a-zA-Z][^>]*>/g)!;
    expect(tags.length).toBeGreaterThan(100);
    for (const tag of tags) {
      expect(tag).not.toMatch(/\son[a-z]+\s*=/i);
      expect(tag).not.toMatch(/\s(src|href|xlink:href|action|style)\s*=\s*"(?!#)/i);
    }
  });

  it('renders hostile names and messages as text', () => {
    expect(html).toContain('public.&quot;x&quot;&quot;; &lt;script&gt;alert(1)&lt;/script&gt;&quot;');
    expect(html).toContain('batch 1: &lt;img src=x onerror=alert(2)&gt;');
  });

  it('shows plan values as written and never a secret', () => {
    expect(html).toContain('<code>${env:SOURCE_DATABASE_URL}</code>');
    expect(html).toContain('<code>${env:PGBOUNCER_ADMIN_URL}</code>');
    expect(html).not.toContain('hunter2');
    expect(html).toContain('connected to postgres://app:***@db.internal/ehr');
  });

  it('has the run, the charts, verification and the event log', () => {
    expect(html).toContain('2edaedc5-61cf-4676-9837-0a961b722965');
    expect(html).toContain('alice@db-admin-01');
    expect(html).toContain('Verification failed.');
    expect(html).toContain(`id="${CHART_IDS.timeline}"`);
    expect(html.match(/class="phase-bar/g)).toHaveLength(4);
    expect(html).toContain(`id="${CHART_IDS.rowsPerSecond}"`);
    expect(html).toContain(`id="${CHART_IDS.megabytesPerSecond}"`);
    const rowsChart = html.slice(html.indexOf(`id="${CHART_IDS.rowsPerSecond}"`));
    expect(rowsChart.slice(0, rowsChart.indexOf('</svg>')).match(/class="bar"/g)).toHaveLength(3);
    expect(html).toContain('Live sync was not used in this run.');
    expect(html).toContain('No cutover recorded.');
    expect(html).toContain('<code>[10, +∞)</code>');
    expect(html).toContain('Event log (4 events)');
    expect(html).not.toMatch(/NaN|Infinity|undefined/);
  });

  it('says so when every batch verified', () => {
    const ok = render(overview(0), { ...history(), mismatches: { total: 0, listed: [] } });
    expect(ok).toContain('Copy finished; every batch verified.');
    expect(ok).toContain('No batch failed verification.');
  });

  it('shows the live sync and every cutover and rollback of a run that cut over', () => {
    const o = overview(0);
    const synced: Overview = {
      ...o,
      run: { ...o.run!, status: 'active', phase: 'cutover' },
      sync: {
        slot: 'cloudshift_ehr',
        publication: 'cloudshift_ehr',
        consistentLsn: '0/1000',
        appliedLsn: '0/3C60FD0',
        sourceCommitAt: iso(50_000),
        appliedAt: iso(50_100),
        lagMs: 169,
        lagBytes: 2048,
        retainedWalBytes: 4096,
        slotDropped: false,
        measuredAt: iso(50_200),
        lagStale: false,
        readFromSource: null,
        divergences: 0,
        lastSwitch: { kind: 'cutover', state: 'done', pauseMs: 119, startedAt: iso(55_000), by: 'alice@db-admin-01' },
      },
    };
    const h: History = {
      ...history(),
      lag: {
        key: 'lag',
        label: 'live sync lag',
        unit: 's',
        bucketMs: 1_000,
        startedAt: iso(40_000),
        points: [
          { at: iso(40_000), value: 0.4 },
          { at: iso(41_000), value: 2.5 },
          { at: iso(45_000), value: 0.2 },
        ],
      },
      mismatches: { total: 0, listed: [] },
      switches: [
        {
          kind: 'cutover',
          state: 'aborted',
          startedAt: iso(52_000),
          by: 'alice@db-admin-01',
          pauseMs: null,
          steps: [],
          reason: 'lag 3 s over maxLag; resumed on the source',
        },
        {
          kind: 'cutover',
          state: 'done',
          startedAt: iso(55_000),
          by: 'alice@db-admin-01',
          pauseMs: 119,
          steps: [{ step: 'paused', ms: 15 }],
          reason: null,
        },
      ],
    };
    const out = render(synced, h);
    expect(out).not.toContain('Live sync was not used');
    expect(out).not.toContain('No cutover recorded.');
    expect(out).toContain('applied up to <code>0/3C60FD0</code>');
    // The lag over time: one bar per sampled bucket, its peak in the description.
    const lagChart = new RegExp(`<svg[^>]*id="${CHART_IDS.lag}"[\\s\\S]*?</svg>`).exec(out)?.[0] ?? '';
    expect(lagChart).toContain('peak 2.50 s');
    expect(lagChart.match(/<rect class="bar"/g)).toHaveLength(3);
    expect(out).not.toContain('no chart');
    expect(out).toContain('undone: the application stayed');
    expect(out).toContain('paused 15 ms');
    expect(out).toContain('Cut over to the target.');
    expect(out).not.toMatch(/NaN|Infinity|undefined/);
  });

  it('renders a run with nothing copied yet', () => {
    const o = overview(0);
    const h: History = {
      ...history(),
      phases: [phaseSpan({ phase: 'schema', started_at: new Date(T0), next_kind: null, next_at: null, last_activity: null })],
      throughput: throughputSeries(null, 0, 10, []),
      mismatches: { total: 0, listed: [] },
      events: [],
    };
    const out = render({ ...o, run: { ...o.run!, status: 'active', phase: 'schema' }, tables: [] }, h);
    expect(out).toContain('Run not finished.');
    expect(out).toContain('no batch was copied');
    expect(out).not.toMatch(/NaN|Infinity|undefined/);
  });
});

describe('verdict', () => {
  it('fails on mismatches, passes a finished verified run, warns otherwise', () => {
    expect(verdict(overview(1)).level).toBe('fail');
    expect(verdict(overview(0)).level).toBe('ok');
    const o = overview(0);
    expect(verdict({ ...o, run: { ...o.run!, status: 'active' } }).level).toBe('warn');
    expect(verdict({ ...o, run: null }).level).toBe('warn');
    // Finished, and yet a batch was never compared: not called verified.
    const unsettled = verdict({ ...o, totals: { ...o.totals, verified: 5 } });
    expect(unsettled).toMatchObject({ level: 'warn', title: 'Copy finished; 1 of 6 batches not verified.' });
    // Every batch verified at the copy, but a later `cloudshift verify` found a table differing.
    const later = verdict({ ...o, tables: o.tables.map((t) => ({ ...t, verification: 'mismatched' as const })) });
    expect(later).toMatchObject({ level: 'fail', title: 'Verification failed.' });
    expect(later.detail).toContain(`found ${o.tables.map((t) => t.table).join(', ')} differing from the source`);
  });
});

describe('chart scaling', () => {
  it('maps a domain onto a range; a single value to the middle', () => {
    const x = linearScale(0, 10, 100, 200);
    expect([x(0), x(5), x(10)]).toEqual([100, 150, 200]);
    expect(linearScale(3, 3, 0, 100)(3)).toBe(50);
    expect(linearScale(0, 10, 200, 100)(10)).toBe(100);
  });

  it('picks nice steps and value ticks from 0', () => {
    expect(niceStep(10, 5)).toBe(2);
    expect(niceStep(12, 5)).toBe(2.5);
    expect(niceStep(0, 5)).toBe(1);
    expect(valueTicks(0)).toEqual([0, 0.2, 0.4, 0.6, 0.8, 1]);
    expect(valueTicks(7)).toEqual([0, 2, 4, 6, 8]);
    expect(valueTicks(10)).toEqual([0, 2, 4, 6, 8, 10]);
    expect(valueTicks(0.3)).toEqual([0, 0.1, 0.2, 0.3]);
    expect(valueTicks(123_456)).toEqual([0, 25_000, 50_000, 75_000, 100_000, 125_000]);
  });

  it('picks time ticks and labels elapsed time', () => {
    expect(timeTicks(0, 10_000, 8)).toEqual({ step: 2_000, ticks: [0, 2_000, 4_000, 6_000, 8_000, 10_000] });
    expect(timeTicks(5, 5)).toEqual({ step: 1_000, ticks: [5] });
    expect(formatElapsed(1_250, 250)).toBe('1.25 s');
    expect(formatElapsed(1_500, 500)).toBe('1.5 s');
    expect(formatElapsed(20, 10)).toBe('0.02 s');
    expect(formatElapsed(45_000)).toBe('45 s');
    expect(formatElapsed(150_000, 30_000)).toBe('2:30');
    expect(formatElapsed(3_900_000, 600_000)).toBe('1:05:00');
    expect(formatValue(0)).toBe('0');
    expect(formatValue(7.5)).toBe('7.5');
    expect(formatValue(1_500)).toBe('1.5k');
    expect(formatValue(12_000)).toBe('12k');
    expect(formatValue(3_400_000)).toBe('3.4M');
  });

  const base = { id: 'c', title: 't', bucketMs: 1_000, unit: 'rows/s', xLabel: 'x', yLabel: 'y' };
  const numbers = (svg: string) => [...svg.matchAll(/\s(?:x|y|width|height|cx|cy)="([^"]*)"/g)].map((m) => Number(m[1]));

  it('draws an empty chart with 0 points', () => {
    const svg = timeChart({ ...base, points: [], emptyMessage: 'no batch was copied' });
    expect(svg).toContain('class="chart time-chart bars-chart empty"');
    expect(svg).toContain('no batch was copied');
    expect(svg).not.toContain('class="bar"');
  });

  it('draws 1 point inside the plot area', () => {
    const bars = timeChart({ ...base, points: [{ atMs: 2_000, value: 500 }] });
    expect(bars.match(/class="bar"/g)).toHaveLength(1);
    expect(numbers(bars).every(Number.isFinite)).toBe(true);
  });

  it('draws many points scaled to the axes: the highest reaches the top tick, zeros draw no bar', () => {
    const points = Array.from({ length: 100 }, (_, i) => ({ atMs: i * 1_000, value: i % 10 === 0 ? 0 : i * 10 }));
    const svg = timeChart({
      ...base,
      points,
      size: { width: 600, height: 200, margin: { top: 10, right: 10, bottom: 40, left: 50 } },
    });
    const bars = [...svg.matchAll(/<rect class="bar" x="([^"]+)" y="([^"]+)" width="([^"]+)" height="([^"]+)"/g)].map((m) =>
      m.slice(1).map(Number),
    );
    expect(bars).toHaveLength(90);
    for (const [x, y, w, h] of bars) {
      expect(x).toBeGreaterThanOrEqual(50);
      expect(x! + w!).toBeLessThanOrEqual(590.1);
      expect(y! + h!).toBeCloseTo(160, 0);
      expect(y).toBeGreaterThanOrEqual(10);
    }
    // max 990 → ticks up to 1000: the tallest bar is 99% of the plot height
    const tallest = Math.max(...bars.map((b) => b[3]!));
    expect(tallest).toBeCloseTo(150 * 0.99, 0);
  });

  it('draws a Gantt chart: empty, a zero-length span, several spans on repeated rows', () => {
    expect(ganttChart({ id: 'g', title: 't', rows: [], bars: [], xLabel: 'x', emptyMessage: 'no phases recorded' })).toContain(
      'no phases recorded',
    );
    const one = ganttChart({
      id: 'g',
      title: 't',
      rows: ['done'],
      bars: [{ row: 'done', startMs: 0, endMs: 0, label: '0 ms', title: 'done' }],
      xLabel: 'x',
    });
    expect(one).toMatch(/class="phase-bar" data-phase="done" x="[\d.]+" y="\d+" width="2"/);
    const many = ganttChart({
      id: 'g',
      title: 't',
      rows: ['schema', 'copy'],
      bars: [
        { row: 'schema', startMs: 0, endMs: 100, label: '100 ms', title: '' },
        { row: 'copy', startMs: 100, endMs: 500, label: '400 ms', title: '', className: 'interrupted' },
        { row: 'copy', startMs: 700, endMs: 1_000, label: '300 ms', title: '' },
      ],
      xLabel: 'x',
    });
    expect(many.match(/class="phase-bar/g)).toHaveLength(3);
    expect(many).toContain('class="phase-bar interrupted" data-phase="copy"');
    expect(numbers(many).every(Number.isFinite)).toBe(true);
  });
});

describe('history shaping', () => {
  it('chooses buckets giving at most 120 points (and at least 48 for spans over a second)', () => {
    expect(chooseBucketMs(0)).toBe(10);
    expect(bucketCount(0, 10)).toBe(1);
    for (const span of [1_500, 7_000, 59_999, 60_000, 61_000, 3_600_000, 5 * 3_600_000, 86_400_000, 30 * 86_400_000, 400 * 86_400_000]) {
      const n = bucketCount(span, chooseBucketMs(span));
      expect(n, `span ${span}`).toBeLessThanOrEqual(MAX_POINTS);
      expect(n, `span ${span}`).toBeGreaterThanOrEqual(48);
    }
    expect(chooseBucketMs(3_600_000)).toBe(60_000);
  });

  it('fills empty buckets with zeros and turns sums into rates', () => {
    const t = throughputSeries(new Date(T0), 2_500, 1_000, [
      { bucket: 0, batches: 1, rows: 100, bytes: 1_048_576 },
      { bucket: 2, batches: 2, rows: 300, bytes: 2_097_152 },
    ]);
    expect(t.rowsPerSecond.points.map((p) => p.value)).toEqual([100, 0, 300]);
    expect(t.megabytesPerSecond.points.map((p) => p.value)).toEqual([1, 0, 2]);
    expect(t.batches.points.map((p) => p.at)).toEqual([iso(0), iso(1_000), iso(2_000)]);
    expect(t.endedAt).toBe(iso(2_500));
    expect(throughputSeries(null, 0, 10, []).rowsPerSecond.points).toEqual([]);
  });

  it('ends each phase at the next marker, or at its last activity when none was recorded', () => {
    const row = (over: Partial<RunPhaseRow>): RunPhaseRow => ({
      phase: 'copy',
      started_at: new Date(T0),
      next_kind: null,
      next_at: null,
      last_activity: null,
      ...over,
    });
    expect(phaseSpan(row({ next_kind: 'run:phase', next_at: new Date(T0 + 500) }))).toMatchObject({ durationMs: 500, ended: 'next' });
    expect(phaseSpan(row({ next_kind: 'run:done', next_at: new Date(T0 + 5) }))).toMatchObject({ durationMs: 5, ended: 'finished' });
    expect(phaseSpan(row({ next_kind: 'run:interrupted', next_at: new Date(T0 + 50) })).ended).toBe('interrupted');
    expect(phaseSpan(row({ next_kind: 'run:resume', next_at: new Date(T0 + 99_000), last_activity: new Date(T0 + 700) }))).toMatchObject({
      durationMs: 700,
      ended: 'stopped',
      endedAt: iso(700),
    });
    expect(phaseSpan(row({}))).toMatchObject({ durationMs: 0, ended: 'open' });
  });
});

describe('formatting', () => {
  it('shows key ranges half-open, with open ends, composite keys and pages', () => {
    expect(formatKeyRange(['1'], ['501'])).toBe('[1, 501)');
    expect(formatKeyRange(null, ['501'])).toBe('[−∞, 501)');
    expect(formatKeyRange(['7', '2024-01-01', 'x'], null)).toBe('[(7, 2024-01-01, x), +∞)');
    expect(formatKeyRange(0, 12)).toBe('pages [0, 12)');
    expect(formatKeyRange(null, null)).toBe('[−∞, +∞)');
  });

  it('shows durations', () => {
    expect(formatDuration(5)).toBe('5 ms');
    expect(formatDuration(2_345)).toBe('2.35 s');
    expect(formatDuration(42_000)).toBe('42.0 s');
    expect(formatDuration(185_000)).toBe('3 min 5 s');
  });
});
