/**
 * The state store's first schema. Append-only: later changes are new migrations, never edits.
 * Batches are claimed with FOR UPDATE SKIP LOCKED (see src/state/sql/claimBatches.ts), so the
 * (run_id, status) index is what claims scan.
 */
import type { Knex } from 'knex';

export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('runs', (t) => {
    t.uuid('id').primary();
    t.text('plan_name').notNullable();
    t.text('plan_fingerprint').notNullable();
    t.text('tool_version').notNullable();
    t.text('phase').notNullable().defaultTo('created');
    t.text('status').notNullable().defaultTo('active');
    t.text('created_by').notNullable();
    t.timestamp('created_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.timestamp('updated_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.text('slot_name');
    t.text('publication_name');
    t.text('snapshot_name');
    t.specificType('consistent_lsn', 'pg_lsn');
    t.text('leader_id');
    t.timestamp('leader_until', { useTz: true });
    t.jsonb('details').notNullable().defaultTo('{}');
  });
  await knex.raw(`ALTER TABLE runs ADD CONSTRAINT runs_status_check CHECK (status IN ('active', 'finished', 'failed', 'aborted'))`);
  // One active run per plan name: a second `cloudshift run` joins it, never starts a rival.
  await knex.raw(`CREATE UNIQUE INDEX runs_one_active_per_plan ON runs (plan_name) WHERE status = 'active'`);

  await knex.schema.createTable('batches', (t) => {
    t.bigIncrements('id');
    t.uuid('run_id').notNullable().references('id').inTable('runs').onDelete('CASCADE');
    t.text('kind').notNullable();
    t.text('relation').notNullable();
    t.integer('seq').notNullable();
    t.jsonb('key_low');
    t.jsonb('key_high');
    t.text('status').notNullable().defaultTo('pending');
    t.bigInteger('rows');
    t.bigInteger('bytes');
    t.text('source_checksum');
    t.text('target_checksum');
    t.integer('attempts').notNullable().defaultTo(0);
    t.text('claimed_by');
    t.timestamp('claimed_at', { useTz: true });
    t.timestamp('started_at', { useTz: true });
    t.timestamp('finished_at', { useTz: true });
    t.text('error');
    t.unique(['run_id', 'relation', 'seq']);
    t.index(['run_id', 'status']);
  });
  await knex.raw(
    `ALTER TABLE batches ADD CONSTRAINT batches_status_check CHECK (status IN ('pending', 'claimed', 'copied', 'verified', 'mismatch', 'failed'))`,
  );
  await knex.raw(`ALTER TABLE batches ADD CONSTRAINT batches_kind_check CHECK (kind IN ('table', 'documents'))`);

  await knex.schema.createTable('applied_lsn', (t) => {
    t.uuid('run_id').primary().references('id').inTable('runs').onDelete('CASCADE');
    t.specificType('lsn', 'pg_lsn').notNullable();
    t.timestamp('source_commit_at', { useTz: true });
    t.timestamp('applied_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
  });

  await knex.schema.createTable('workers', (t) => {
    t.text('id').primary();
    t.uuid('run_id').notNullable().references('id').inTable('runs').onDelete('CASCADE');
    t.text('host').notNullable();
    t.integer('pid').notNullable();
    t.timestamp('started_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.timestamp('last_seen', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.text('doing');
  });

  await knex.schema.createTable('events', (t) => {
    t.bigIncrements('id');
    t.uuid('run_id').references('id').inTable('runs').onDelete('SET NULL');
    t.timestamp('at', { useTz: true }).notNullable().defaultTo(knex.raw('clock_timestamp()'));
    t.text('os_user').notNullable();
    t.text('host').notNullable();
    t.integer('pid').notNullable();
    t.text('kind').notNullable();
    t.text('message').notNullable();
    t.jsonb('details').notNullable().defaultTo('{}');
    t.index(['run_id', 'id']);
  });
  // The event log is evidence for change boards: rows are appended, never changed.
  await knex.raw(`
    CREATE FUNCTION events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      RAISE EXCEPTION 'the cloudshift event log is append-only';
    END $$`);
  await knex.raw(`CREATE TRIGGER events_append_only BEFORE UPDATE ON events FOR EACH ROW EXECUTE FUNCTION events_append_only()`);
}

export async function down(): Promise<void> {
  throw new Error('the state store is append-only: migrations are not reverted');
}
