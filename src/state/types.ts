/** Rows of the state store as the rest of cloudshift sees them. */
import type { DatabaseIdentity } from '../pg/identity.js';

export type RunStatus = 'active' | 'finished' | 'failed' | 'aborted';
export type BatchStatus = 'pending' | 'claimed' | 'copied' | 'verified' | 'mismatch' | 'failed';

export interface RunRow {
  id: string;
  plan_name: string;
  plan_fingerprint: string;
  tool_version: string;
  phase: string;
  status: RunStatus;
  created_by: string;
  created_at: Date;
  updated_at: Date;
  slot_name: string | null;
  publication_name: string | null;
  snapshot_name: string | null;
  consistent_lsn: string | null;
  leader_id: string | null;
  leader_until: Date | null;
  /** `databases`: the source and target the run was begun on (RunDatabases). */
  details: Record<string, unknown>;
}

/** The databases a run copies from and to (never a host, user or secret). */
export interface RunDatabases {
  source: DatabaseIdentity;
  target: DatabaseIdentity;
}

export interface BatchRow {
  id: string;
  run_id: string;
  kind: 'table' | 'documents';
  relation: string;
  seq: number;
  key_low: unknown;
  key_high: unknown;
  status: BatchStatus;
  rows: string | null;
  bytes: string | null;
  source_checksum: string | null;
  target_checksum: string | null;
  attempts: number;
  claimed_by: string | null;
  claimed_at: Date | null;
  started_at: Date | null;
  finished_at: Date | null;
  error: string | null;
}

export interface EventRow {
  id: string;
  run_id: string | null;
  at: Date;
  os_user: string;
  host: string;
  pid: number;
  kind: string;
  message: string;
  details: Record<string, unknown>;
}

export interface NewBatch {
  kind: 'table' | 'documents';
  relation: string;
  seq: number;
  keyLow: unknown;
  keyHigh: unknown;
}
