/**
 * Renders engine events: ora spinners on a terminal (one line per table with rows/s, MB/s and
 * ETA), plain lines when output is not a terminal, one JSON object per line with --json. This
 * is the only place that imports ora.
 */
import ora, { type Ora } from 'ora';
import type { EngineEvent } from '../../engine/events.js';
import { formatBytes, formatCount, formatSeconds } from '../../preflight/format.js';
import type { Output } from '../io.js';

export type ProgressMode = 'tty' | 'plain' | 'json';

interface TableLine {
  batches: number;
  done: number;
  rows: number;
  bytes: number;
  startRows: number;
  startBytes: number;
  startDone: number;
  /** When this process began copying the table (its first batch's start); null before. */
  startedAt: number | null;
  finished: boolean;
  mismatches: number;
}

export interface ProgressRenderer {
  onEvent(e: EngineEvent): void;
  stop(): void;
}

export function progressRenderer(mode: ProgressMode, out: Output, err: Output): ProgressRenderer {
  if (mode === 'json') {
    return { onEvent: (e) => void out.write(`${JSON.stringify(e)}\n`), stop: () => undefined };
  }
  const tables = new Map<string, TableLine>();
  /** What each batch copied in this process, by batch id. */
  const copied = new Map<string, { table: string; rows: number; bytes: number }>();
  let spinner: Ora | null = null;
  let phase = '';
  let lastDraw = 0;

  const line = (name: string, t: TableLine): string => {
    // Rates over the time this process has copied the table (tables are copied one after another,
    // not all from the start); the ETA from its batches left, which the statistics cannot misjudge.
    const secs = t.startedAt === null ? 0 : Math.max((Date.now() - t.startedAt) / 1000, 0.001);
    const rowsPerSec = secs ? (t.rows - t.startRows) / secs : 0;
    const mbPerSec = secs ? (t.bytes - t.startBytes) / secs / 1024 / 1024 : 0;
    const batchesPerSec = secs ? (t.done - t.startDone) / secs : 0;
    const eta = t.finished ? 'done' : batchesPerSec > 0 ? `ETA ${formatSeconds((t.batches - t.done) / batchesPerSec)}` : 'ETA …';
    const mism = t.mismatches ? `, ${t.mismatches} MISMATCHED` : '';
    return `${name}: ${t.done}/${t.batches} batches, ${formatCount(t.rows)} rows, ${formatBytes(t.bytes)}, ${formatCount(Math.round(rowsPerSec))} rows/s, ${mbPerSec.toFixed(1)} MB/s, ${eta}${mism}`;
  };
  const draw = (force = false) => {
    if (!spinner || (!force && Date.now() - lastDraw < 100)) return;
    lastDraw = Date.now();
    spinner.text = [`${phase}`, ...[...tables].map(([n, t]) => `  ${line(n, t)}`)].join('\n');
  };
  const say = (text: string) => {
    if (spinner) {
      spinner.clear();
      err.write(`${text}\n`);
      spinner.render();
    } else out.write(`${text}\n`);
  };
  if (mode === 'tty') spinner = ora({ text: 'starting', stream: err as NodeJS.WritableStream, discardStdin: false }).start();

  return {
    onEvent(e) {
      switch (e.type) {
        case 'run:start':
          say(`${e.resumed ? 'resuming' : 'starting'} run ${e.runId} of plan ${e.planName}`);
          break;
        case 'run:phase':
          phase = `phase: ${e.phase}`;
          if (mode === 'plain') say(phase);
          break;
        case 'table:planned':
          // A pass after the first (the sweep sent a batch back) counts from what is done now.
          for (const [batchId, c] of copied) if (c.table === e.table) copied.delete(batchId);
          tables.set(e.table, {
            batches: e.batches,
            done: e.done,
            rows: e.copiedRows,
            bytes: e.copiedBytes,
            startRows: e.copiedRows,
            startBytes: e.copiedBytes,
            startDone: e.done,
            startedAt: null,
            finished: e.done === e.batches,
            mismatches: 0,
          });
          if (mode === 'plain')
            say(
              `${e.table}: ${e.batches} batch${e.batches === 1 ? '' : 'es'} by ${e.key}, about ${formatCount(e.estimatedRows)} rows${e.done ? ` (${e.done} done before)` : ''}`,
            );
          break;
        case 'batch:copied': {
          const t = tables.get(e.table);
          if (!t) break;
          t.startedAt ??= Date.now() - e.ms;
          // A batch copied again (a retry) replaces its earlier figures instead of adding to them.
          const before = copied.get(e.batchId);
          if (before) {
            t.rows -= before.rows;
            t.bytes -= before.bytes;
          } else t.done += 1;
          t.rows += e.rows;
          t.bytes += e.bytes;
          copied.set(e.batchId, { table: e.table, rows: e.rows, bytes: e.bytes });
          break;
        }
        case 'batch:retry':
          say(`retry: ${e.table} batch ${e.seq}: ${e.reason}`);
          break;
        case 'batch:mismatch': {
          const t = tables.get(e.table);
          if (t) t.mismatches += 1;
          say(`MISMATCH: ${e.table} batch ${e.seq}: source ${e.source}, target ${e.target}`);
          break;
        }
        case 'table:done': {
          const t = tables.get(e.table);
          if (t) t.finished = true;
          if (t && mode === 'plain') say(line(e.table, t));
          break;
        }
        case 'warning':
          say(`warning: ${e.message}`);
          break;
        default:
          break;
      }
      draw();
    },
    stop() {
      draw(true);
      if (spinner) {
        spinner.stopAndPersist({ symbol: '' });
        spinner = null;
      }
    },
  };
}
