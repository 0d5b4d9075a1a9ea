import { existsSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { cli } from '../harness/cli.js';

describe('cloudshift demo', () => {
  it('runs a whole migration on its own local servers and shows the verification summary', async () => {
    const r = await cli(['demo', '--scale', '0.002', '--jobs', '2']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('» starting PostgreSQL 15 (source), PostgreSQL 17 (target) and Azurite (Blob Storage) on loopback');
    expect(r.stdout).toMatch(/dry run passed: \d+ passed, \d+ warnings, 0 failed/);
    expect(r.stdout).toMatch(/public\.observations\s+\d+\s+[\d,]+\s+.*verified/);
    expect(r.stdout).toMatch(/public\.documents\s+\d+\s+200\s+.*verified/);
    expect(r.stdout).toMatch(/public\.scans\s+\d+\s+50\s+.*verified/);
    expect(r.stdout).toMatch(/in sync: applied up to/);
    // Its servers are gone when it prints: no command to run next against them, and no plan left behind.
    expect(r.stdout).not.toMatch(/Next: cloudshift|Resume with/);
    const plan = /dry run of (\S+demo\.yaml)/.exec(r.stdout)![1]!;
    expect(existsSync(plan)).toBe(false);
    expect(r.stdout).toMatch(/cut over to the target: write pause \d+ ms \(paused \d+ ms, .*\), after catching up in \d+ ms\n/);
    expect(r.stdout).toMatch(/the application wrote \d+ transactions through PgBouncer during the migration: 0 errors/);
    expect(r.stdout).toContain('» stopping the local servers');
  }, 180_000);
});
