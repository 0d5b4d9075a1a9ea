import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { quoteIdent, quoteQualified, splitIdentifiers } from '../../src/plan/names.js';
import { resolveReferences } from '../../src/plan/refs.js';
import { parseTemplate } from '../../src/plan/templates.js';
import { parseDurationMs, parseSizeBytes } from '../../src/plan/units.js';
import { redact, redactDeep } from '../../src/redact.js';
import { formatSeconds } from '../../src/preflight/format.js';
import { scratchDir } from '../../src/embedded/util.js';

describe('identifiers', () => {
  it('folds plain names and keeps quoted ones literally', () => {
    expect(splitIdentifiers('Public.Patients')).toEqual(['public', 'patients']);
    expect(splitIdentifiers('"My Schema"."x""; drop table y; --"')).toEqual(['My Schema', 'x"; drop table y; --']);
    expect(splitIdentifiers('x"; drop table y; --')).toBeNull();
    expect(splitIdentifiers('a..b')).toBeNull();
    expect(splitIdentifiers('a.')).toBeNull();
    expect(splitIdentifiers('""')).toBeNull();
    expect(splitIdentifiers('a'.repeat(64))).toBeNull();
  });

  it('quotes every identifier for SQL', () => {
    expect(quoteIdent('x"; drop table y; --')).toBe('"x""; drop table y; --"');
    expect(quoteQualified({ schema: 'public', name: 'Patients' })).toBe('"public"."Patients"');
  });
});

describe('references', () => {
  const ctx = (env: Record<string, string>) => ({ env, baseDir: '/nonexistent', where: 'source.postgres' });

  it('resolves env references inside a larger string', () => {
    expect(resolveReferences('postgres://app:${env:PW}@db/ehr', ctx({ PW: 's3cr3t' }))).toBe('postgres://app:s3cr3t@db/ehr');
  });

  it('names a missing variable, never a value', () => {
    expect(() => resolveReferences('${env:SOURCE_DATABASE_URL}', ctx({ OTHER: 'postgres://u:pw@h/d' }))).toThrow(
      'source.postgres: environment variable SOURCE_DATABASE_URL is not set',
    );
  });

  it('reads files relative to the plan and reports unreadable ones', () => {
    const dir = scratchDir('cs-ref');
    writeFileSync(join(dir, 'pw'), 'from-file\n');
    expect(resolveReferences('${file:pw}', { env: {}, baseDir: dir, where: 'x' })).toBe('from-file');
    expect(() => resolveReferences('${file:missing}', { env: {}, baseDir: dir, where: 'target.postgres' })).toThrow(
      `target.postgres: cannot read ${join(dir, 'missing')} (ENOENT) for \${file:missing}`,
    );
  });
});

describe('templates', () => {
  it('parses placeholders and escaped braces', () => {
    expect(parseTemplate('p/{patient_id}/{{x}}-{Id}')).toEqual([
      { kind: 'text', text: 'p/' },
      { kind: 'column', column: 'patient_id', raw: 'patient_id' },
      { kind: 'text', text: '/{x}-' },
      { kind: 'column', column: 'id', raw: 'Id' },
    ]);
    expect(() => parseTemplate('a/{b')).toThrow('unclosed "{" at character 3');
    expect(() => parseTemplate('a}')).toThrow('unmatched "}" at character 2');
  });
});

describe('units', () => {
  it('parses durations and sizes', () => {
    expect(parseDurationMs('500ms')).toBe(500);
    expect(parseDurationMs('2s')).toBe(2000);
    expect(parseDurationMs('1.5m')).toBe(90000);
    expect(parseSizeBytes('10GB')).toBe(10 * 1024 ** 3);
  });
});

describe('redaction', () => {
  it('masks every string inside details, keeping their shape', () => {
    const details = { reason: 'connect postgres://u:pw@h/db failed', steps: [{ step: 'paused', ms: 3 }], n: null };
    expect(redactDeep(details)).toEqual({ reason: 'connect postgres://u:***@h/db failed', steps: [{ step: 'paused', ms: 3 }], n: null });
  });

  it('masks passwords, keys and SAS signatures', () => {
    expect(redact('postgres://app:hunter2@db:5432/ehr')).toBe('postgres://app:***@db:5432/ehr');
    expect(redact('postgres://app:p@ss@w0rd@db:5432/ehr failed')).toBe('postgres://app:***@db:5432/ehr failed');
    expect(redact('host=db password=hunter2 user=app')).toBe('host=db password=*** user=app');
    expect(redact("password='a b c' host=x")).toBe('password=*** host=x');
    expect(redact('DefaultEndpointsProtocol=https;AccountName=a;AccountKey=abc/def==;EndpointSuffix=x')).toBe(
      'DefaultEndpointsProtocol=https;AccountName=a;AccountKey=***;EndpointSuffix=x',
    );
    expect(redact('https://a.blob.core.windows.net/c?sv=2024&sig=abc%2Fdef&se=1')).toBe(
      'https://a.blob.core.windows.net/c?sv=2024&sig=***&se=1',
    );
  });

  it('masks a password a script echoes under a longer name, or as JSON', () => {
    // A switch command run with `set -x` prints its environment assignments.
    expect(redact('+ PGPASSWORD=hunter22 psql -h db')).toBe('+ PGPASSWORD=*** psql -h db');
    expect(redact("export DB_PASSWORD='a b'; deploy")).toBe('export DB_PASSWORD=***; deploy');
    expect(redact('{"adminPassword": "hun\\"ter22", "user": "app"}')).toBe('{"adminPassword": "***", "user": "app"}');
    // Not a password: left as it is.
    expect(redact('passwords are masked; PWDIR=/srv')).toBe('passwords are masked; PWDIR=/srv');
  });
});

describe('durations for people', () => {
  it('rounds the whole before splitting it into units', () => {
    expect([45.2, 119.6, 3599.6, 7199, 5430].map(formatSeconds)).toEqual(['46 s', '2 min 0 s', '1 h 0 min', '2 h 0 min', '1 h 31 min']);
  });
});
