/** `cloudshift status` as text: the run, a table per table, the last events, what to do next. */
import { formatBytes, formatCount, formatSeconds } from '../../preflight/format.js';
import type { Overview } from '../../views/overview.js';

export function renderStatus(o: Overview): string {
  const lines: string[] = [];
  if (!o.run) {
    lines.push(`plan ${o.plan}: no run yet`);
  } else {
    const r = o.run;
    const process = r.processActive ? ', a process is working on it' : r.processStalled ? ', its process is NOT RESPONDING' : '';
    lines.push(`plan ${o.plan}, run ${r.id}: phase ${r.phase}, ${r.status}${process}`);
    lines.push(`started ${r.startedAt} by ${r.createdBy} (cloudshift ${r.toolVersion}), last change ${r.updatedAt}`);
  }
  if (o.tables.length > 0) {
    const w = Math.max(5, ...o.tables.map((t) => t.table.length));
    lines.push('');
    lines.push(
      `${'table'.padEnd(w)}  ${'batches'.padStart(11)}  ${'rows'.padStart(12)}  ${'bytes'.padStart(10)}  ${'rows/s'.padStart(9)}  ${'MB/s'.padStart(6)}  ${'ETA'.padStart(10)}  verification`,
    );
    for (const t of o.tables) {
      const b = t.batches;
      const ver =
        t.verification === 'mismatched'
          ? `${b.mismatched} MISMATCHED`
          : t.verification === 'verified'
            ? 'verified'
            : `${b.verified}/${b.total} verified`;
      lines.push(
        `${t.table.padEnd(w)}  ${`${b.done}/${b.total}`.padStart(11)}  ${formatCount(t.rows).padStart(12)}  ${formatBytes(t.bytes).padStart(10)}  ${formatCount(Math.round(t.rowsPerSecond)).padStart(9)}  ${(t.bytesPerSecond / 1024 / 1024).toFixed(1).padStart(6)}  ${eta(t.etaSeconds).padStart(10)}  ${ver}`,
      );
    }
    const tot = o.totals;
    lines.push(
      `${'total'.padEnd(w)}  ${`${tot.done}/${tot.batches}`.padStart(11)}  ${formatCount(tot.rows).padStart(12)}  ${formatBytes(tot.bytes).padStart(10)}  ${formatCount(Math.round(tot.rowsPerSecond)).padStart(9)}  ${''.padStart(6)}  ${eta(tot.etaSeconds).padStart(10)}`,
    );
  }
  const alive = o.workers.filter((w) => w.alive);
  if (alive.length > 0) {
    lines.push('');
    lines.push(`workers: ${alive.length}`);
    for (const w of alive)
      lines.push(`  ${w.leader ? 'leader' : 'worker'} ${w.id}  since ${w.startedAt}  seen ${w.lastSeen}  ${w.doing ?? ''}`);
  }
  lines.push('');
  lines.push(...syncLines(o));
  if (o.events.length > 0) {
    lines.push('');
    lines.push('last events:');
    for (const e of o.events) lines.push(`  ${e.at}  ${e.who}  ${e.kind}: ${e.message}`);
  }
  lines.push('');
  lines.push(`next: ${o.next}`);
  return `${lines.join('\n')}\n`;
}

function syncLines(o: Overview): string[] {
  const s = o.sync;
  if (s === null) return ['live sync: not started'];
  if (o.run?.phase === 'cutover' && o.run.status === 'active') {
    const w = s.lastSwitch;
    return [
      `cut over to the target${w ? ` at ${w.startedAt} by ${w.by}${w.pauseMs === null ? '' : `, write pause ${w.pauseMs} ms`}` : ''}`,
      '  the source is read-only for the application; the reverse slot on the target keeps its WAL until rollback or cleanup',
    ];
  }
  const measured = s.measuredAt ? ` (measured ${s.measuredAt}${s.lagStale ? ', not since: no cloudshift run measures it now' : ''})` : '';
  const behind = s.lagBytes === null ? '? of WAL' : `${formatBytes(s.lagBytes)} of WAL`;
  // Before live sync begins (the copy), the leader measures the WAL, not the lag in time.
  const lag =
    s.lagMs !== null
      ? `${s.lagStale ? 'last known lag' : 'lag'} ${s.lagMs} ms, ${behind}`
      : s.lagBytes !== null && o.run?.phase !== 'sync'
        ? `${behind} to catch up once live sync begins`
        : 'lag unknown';
  const lines = [
    `live sync: slot ${s.slot ?? '?'} (publication ${s.publication ?? '?'}), applied up to ${s.appliedLsn} (source commit ${s.sourceCommitAt ?? 'none yet'})`,
    s.slotDropped
      ? '  the slot was dropped (cleanup or rollback): the source keeps no WAL for it'
      : `  ${lag}; the source retains ${s.retainedWalBytes === null ? '?' : formatBytes(s.retainedWalBytes)} of WAL for the slot${measured}`,
  ];
  const now = s.readFromSource;
  if (now)
    lines.push(
      `  now, read from the source at ${now.at}: it retains ${now.retainedWalBytes === null ? '?' : formatBytes(now.retainedWalBytes)} of WAL for the slot, ${now.walBehindBytes === null ? '?' : formatBytes(now.walBehindBytes)} not yet applied`,
    );
  if (s.divergences > 0)
    lines.push(`  ${s.divergences} DIVERGENCES: updates or deletes that matched no target row; run cloudshift verify --repair`);
  if (s.lastSwitch) {
    const w = s.lastSwitch;
    lines.push(`  last ${w.kind}: ${w.state} at ${w.startedAt} by ${w.by}${w.pauseMs === null ? '' : `, write pause ${w.pauseMs} ms`}`);
  }
  return lines;
}

function eta(s: number | null): string {
  if (s === null) return '?';
  if (s === 0) return 'done';
  return formatSeconds(s);
}
