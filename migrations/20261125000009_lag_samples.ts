/**
 * The live sync's lag over time, for the report's chart: the syncing process keeps one sample
 * every few seconds beside the latest figures in applied_lsn (which it overwrites every second).
 */
import type { Knex } from 'knex';

export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('lag_samples', (t) => {
    t.uuid('run_id').notNullable().references('id').inTable('runs').onDelete('CASCADE');
    t.timestamp('at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.bigInteger('lag_ms').notNullable();
    t.bigInteger('lag_bytes');
    t.index(['run_id', 'at'], 'lag_samples_run_at');
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTable('lag_samples');
}
