/**
 * Documents are verified by listing the container (one request for thousands of blobs), not
 * one request each: a document remembers its batch, so the batch is verified once its rows and
 * all its documents are, and listed blobs are found by name.
 */
import type { Knex } from 'knex';

export async function up(knex: Knex): Promise<void> {
  await knex.schema.alterTable('documents', (t) => {
    t.bigInteger('batch_id');
    t.index(['run_id', 'blob_name'], 'documents_run_blob_name');
    t.index(['batch_id'], 'documents_batch');
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.alterTable('documents', (t) => {
    t.dropIndex([], 'documents_batch');
    t.dropIndex([], 'documents_run_blob_name');
    t.dropColumn('batch_id');
  });
}
