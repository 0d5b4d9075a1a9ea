/**
 * Documents uploaded to Blob Storage: one row per document, written after its blob is committed,
 * so a retried batch skips documents already uploaded (and verified) instead of uploading again.
 */
import type { Knex } from 'knex';

export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('documents', (t) => {
    t.uuid('run_id').notNullable().references('id').inTable('runs').onDelete('CASCADE');
    t.text('relation').notNullable();
    t.jsonb('key').notNullable();
    t.text('blob_name').notNullable();
    t.bigInteger('size').notNullable();
    t.text('md5').notNullable();
    t.text('sha256').notNullable();
    t.text('status').notNullable().defaultTo('uploaded');
    t.timestamp('uploaded_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.timestamp('verified_at', { useTz: true });
    t.primary(['run_id', 'relation', 'key']);
  });
  await knex.raw(`ALTER TABLE documents ADD CONSTRAINT documents_status_check CHECK (status IN ('uploaded', 'verified', 'mismatch'))`);
}

export async function down(): Promise<void> {
  throw new Error('the state store is append-only: migrations are not reverted');
}
