/**
 * How many times the document sweep sent a batch back for another attempt. A batch gets one:
 * its claims (`attempts`) also count the ones a crash cut short, which must not use it up.
 */
import type { Knex } from 'knex';

export async function up(knex: Knex): Promise<void> {
  await knex.schema.alterTable('batches', (t) => {
    t.integer('sweep_returns').notNullable().defaultTo(0);
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.alterTable('batches', (t) => {
    t.dropColumn('sweep_returns');
  });
}
