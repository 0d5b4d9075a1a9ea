/** The dry run's size and duration estimate, from catalog statistics only. */
import type { TableInfo } from '../source/introspect.js';
import type { Estimate } from './types.js';

/** Assumed end-to-end copy throughput for the duration estimate (bytes/s); see README. */
export const ASSUMED_BYTES_PER_SECOND = 40 * 1024 * 1024;

export function estimate(tables: Iterable<TableInfo>): Estimate {
  let rows = 0;
  let bytes = 0;
  for (const t of tables) {
    rows += t.estimatedRows ?? 0;
    bytes += t.bytes;
  }
  return { rows, bytes, seconds: Math.ceil(bytes / ASSUMED_BYTES_PER_SECOND) };
}
