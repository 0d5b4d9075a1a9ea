/**
 * Foreign keys the target already had on the plan's tables, set aside for the copy and put back
 * after the data: recorded before they are dropped, so a crash in between loses none.
 */
import type { Knex } from 'knex';

export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('set_aside_constraints', (t) => {
    t.uuid('run_id').notNullable().references('id').inTable('runs').onDelete('CASCADE');
    t.text('table_schema').notNullable();
    t.text('table_name').notNullable();
    t.text('name').notNullable();
    t.text('definition').notNullable();
    t.boolean('validated').notNullable();
    t.primary(['run_id', 'table_schema', 'table_name', 'name']);
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTable('set_aside_constraints');
}
