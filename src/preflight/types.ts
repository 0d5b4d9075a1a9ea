/** The dry run's result: every check at once, and an estimate. Stable JSON field names. */
import { redactValues } from '../redact.js';

export type CheckStatus = 'pass' | 'warn' | 'fail';

export interface Check {
  /** Stable identifier, e.g. "source.wal_level", "table.key". */
  id: string;
  status: CheckStatus;
  message: string;
  /** What the check is about: a table, a documents entry, a server. */
  subject: string;
}

export interface Estimate {
  rows: number;
  bytes: number;
  seconds: number;
}

export interface PreflightReport {
  ok: boolean;
  checks: Check[];
  estimate: Estimate;
  /** True when a server could not be reached (the CLI exits 3). */
  unreachable: boolean;
}

export class CheckList {
  readonly checks: Check[] = [];
  /** `secrets`: resolved secret values, masked wherever a message would quote them. */
  constructor(private readonly secrets: readonly string[] = []) {}
  add(id: string, status: CheckStatus, subject: string, message: string): void {
    this.checks.push({ id, status, subject, message: redactValues(message, this.secrets) });
  }
  pass(id: string, subject: string, message: string): void {
    this.add(id, 'pass', subject, message);
  }
  warn(id: string, subject: string, message: string): void {
    this.add(id, 'warn', subject, message);
  }
  fail(id: string, subject: string, message: string): void {
    this.add(id, 'fail', subject, message);
  }
}
