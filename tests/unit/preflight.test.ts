import { describe, expect, it } from 'vitest';
import { liveSyncVersionProblem } from '../../src/preflight/sourceChecks.js';

describe('the source version live sync needs', () => {
  it('refuses a source older than PostgreSQL 14 (no logical decoding messages in pgoutput), naming its version', () => {
    expect(liveSyncVersionProblem(130015)).toEqual({
      message:
        'the source runs PostgreSQL 13, and live sync needs 14 or later (its fence and heartbeats are logical decoding messages, which pgoutput sends from 14)',
      hint: 'upgrade the source first, or migrate without live sync (sync: { mode: none }) in a maintenance window',
    });
    expect(liveSyncVersionProblem(120022)?.message).toMatch(/^the source runs PostgreSQL 12,/);
  });

  it('accepts 14 and later', () => {
    expect(liveSyncVersionProblem(140000)).toBeNull();
    expect(liveSyncVersionProblem(150018)).toBeNull();
    expect(liveSyncVersionProblem(170010)).toBeNull();
  });
});
