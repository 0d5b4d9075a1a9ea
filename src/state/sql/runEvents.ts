import type { Knex } from 'knex';
import type { EventRow } from '../types.js';

/** Every event of a run, oldest first (the event log is append-only; id order is write order). */
export async function runEvents(knex: Knex, runId: string): Promise<EventRow[]> {
  return knex<EventRow>('events').where({ run_id: runId }).orderBy('id');
}
