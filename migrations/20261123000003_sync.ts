/**
 * Live sync, cutover and rollback:
 * - replication_objects: every slot, publication and write fence cloudshift creates, recorded the
 *   moment it exists (before, as 'creating'), so abort, rollback and `cleanup` can drop each one;
 * - applied_lsn gains what the operator watches (lag, retained WAL, divergences) and the position
 *   below which zero-row updates and deletes are expected (rows copied from a newer snapshot);
 * - switches: each cutover and rollback, its state as it goes (coordination with a syncing
 *   process, recovery after a crash) and its measured pause.
 */
import type { Knex } from 'knex';

export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('replication_objects', (t) => {
    t.bigIncrements('id');
    t.uuid('run_id').notNullable().references('id').inTable('runs').onDelete('CASCADE');
    t.text('side').notNullable();
    t.text('kind').notNullable();
    t.text('name').notNullable();
    t.text('direction').notNullable();
    t.text('status').notNullable().defaultTo('creating');
    t.timestamp('created_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.timestamp('dropped_at', { useTz: true });
    t.unique(['run_id', 'side', 'kind', 'name']);
  });
  await knex.raw(`ALTER TABLE replication_objects ADD CONSTRAINT replication_objects_side_check CHECK (side IN ('source', 'target'))`);
  await knex.raw(
    `ALTER TABLE replication_objects ADD CONSTRAINT replication_objects_kind_check CHECK (kind IN ('slot', 'publication', 'origin', 'write-fence'))`,
  );
  await knex.raw(
    `ALTER TABLE replication_objects ADD CONSTRAINT replication_objects_status_check CHECK (status IN ('creating', 'created', 'dropped'))`,
  );

  await knex.schema.alterTable('applied_lsn', (t) => {
    t.specificType('tolerate_until', 'pg_lsn');
    t.bigInteger('lag_bytes');
    t.integer('lag_ms');
    t.bigInteger('retained_wal_bytes');
    t.timestamp('measured_at', { useTz: true });
    t.integer('divergences').notNullable().defaultTo(0);
    t.text('applier');
  });

  await knex.schema.createTable('switches', (t) => {
    t.bigIncrements('id');
    t.uuid('run_id').notNullable().references('id').inTable('runs').onDelete('CASCADE');
    t.text('kind').notNullable();
    t.text('state').notNullable();
    t.text('by').notNullable();
    t.specificType('fence_lsn', 'pg_lsn');
    t.integer('pause_ms');
    t.timestamp('started_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.timestamp('finished_at', { useTz: true });
    t.jsonb('details').notNullable().defaultTo('{}');
    t.index(['run_id', 'id']);
  });
  await knex.raw(`ALTER TABLE switches ADD CONSTRAINT switches_kind_check CHECK (kind IN ('cutover', 'rollback'))`);
  await knex.raw(
    `ALTER TABLE switches ADD CONSTRAINT switches_state_check CHECK (state IN ('started', 'paused', 'fenced', 'switched', 'done', 'aborted'))`,
  );
}

export async function down(): Promise<void> {
  throw new Error('the state store is append-only: migrations are not reverted');
}
