/**
 * Cutover: large-object documents are not in the WAL stream, so their in-place changes are found
 * by the transaction ids that wrote them. applied_lsn.lo_horizon is the oldest transaction id
 * (xid8, as text) whose large-object writes may not be on the target yet.
 */
import type { Knex } from 'knex';

export async function up(knex: Knex): Promise<void> {
  await knex.schema.alterTable('applied_lsn', (t) => {
    t.text('lo_horizon');
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.alterTable('applied_lsn', (t) => {
    t.dropColumn('lo_horizon');
  });
}
