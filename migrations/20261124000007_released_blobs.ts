/**
 * Blobs that live sync let go of (their rows deleted, renamed, truncated), written in the apply
 * transaction that let go of them and removed after it commits: a process killed in between
 * leaves them here, and the next one removes them before it applies anything.
 */
import type { Knex } from 'knex';

export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('released_blobs', (t) => {
    t.uuid('run_id').notNullable().references('id').inTable('runs').onDelete('CASCADE');
    t.text('name').notNullable();
    t.primary(['run_id', 'name']);
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTable('released_blobs');
}
