import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { applyDefaults } from '../../src/plan/defaults.js';
import { loadPlan, PlanInvalidError, validatePlanText } from '../../src/plan/parse.js';
import { planJsonSchemaText } from '../../src/plan/jsonSchema.js';
import { scratchDir } from '../../src/embedded/util.js';

const good = `version: 1
name: ppm
source:
  postgres: "\${env:SOURCE_DATABASE_URL}"
target:
  postgres: "\${env:TARGET_DATABASE_URL}"
tables:
  - name: public.patients
`;

function problems(text: string) {
  return validatePlanText(text).problems.map((p) => `${p.line}:${p.column} ${p.path}: ${p.message}`);
}

describe('plan validation', () => {
  it('accepts a minimal plan and fills defaults in a separate step', () => {
    const result = validatePlanText(good);
    expect(result.valid).toBe(true);
    if (!result.valid) return;
    expect(result.input).not.toHaveProperty('copy');
    const plan = applyDefaults(result.input);
    expect(plan.tables[0]).toMatchObject({ name: { schema: 'public', name: 'patients' }, batchRows: 100000 });
    expect(plan.state).toMatchObject({ schema: 'cloudshift', postgres: { where: 'target.postgres' } });
    expect(plan.sync).toMatchObject({ mode: 'none', slot: 'cloudshift_ppm', publication: 'cloudshift_ppm' });
    expect(plan.cutover).toMatchObject({ maxPauseMs: 2000, maxLagMs: 1000 });
  });

  it('accepts every example plan in plans/', async () => {
    for (const file of ['minimal', 'documents', 'ppm']) {
      const loaded = await loadPlan(`plans/${file}.yaml`);
      expect(loaded.plan.name).toBeTruthy();
      expect(loaded.fingerprint).toMatch(/^[0-9a-f]{64}$/);
    }
  });

  it('reports malformed YAML with its line and column', () => {
    expect(problems('version: 1\nname: [unclosed\n')).toEqual([expect.stringMatching(/^3:1 : YAML syntax: /)]);
  });

  it('rejects unknown keys with a suggestion, at the key', () => {
    expect(problems(good.replace('tables:', 'tabels:'))).toEqual(
      [
        '7:1 tabels: unknown key "tabels"; did you mean "tables"?',
        '1:1 tables: the plan moves nothing: list at least one table under `tables` or `documents`',
      ].slice(0, 1),
    );
  });

  it('reports every problem at once, sorted by position', () => {
    const text = `version: 2
name: "Bad Name"
source:
  postgres: "postgres://app:hunter2@db.example/ehr"
target:
  postgres: "\${env:TARGET_DATABASE_URL}"
  blob: { connectionString: "DefaultEndpointsProtocol=https;AccountName=a;AccountKey=abc", container: docs }
tables:
  - name: 'x"; drop table y; --'
    batch: { rows: many }
  - name: public.observations
    bach: {}
sync: { mode: logicl }
cutover:
  switch: {}
  maxPause: 2 seconds
`;
    expect(problems(text)).toEqual([
      '1:10 version: must be 1, got number 2',
      '2:7 name: must be 1 to 40 lower-case letters, digits, _ and -, starting with a letter or digit, got the string "Bad Name"',
      '4:13 source.postgres: contains a literal password; put the whole connection string or the password in a reference such as "${env:SOURCE_DATABASE_URL}"',
      '7:29 target.blob.connectionString: is a secret: give it as a reference such as "${env:AZURE_STORAGE_CONNECTION_STRING}", not a literal value',
      '9:11 tables[0].name: must be a table name, `schema.table` or `table`; quote unusual names as "My Table", got the string "x\\"; drop table y; --"',
      '10:20 tables[0].batch.rows: expected a number, got the string "many"',
      '12:5 tables[1].bach: unknown key "bach"; did you mean "batch"?',
      '13:15 sync.mode: must be "logical" or "none", got the string "logicl"',
      '15:11 cutover.switch: name exactly one switch: pgbouncer, command or arm',
      '16:13 cutover.maxPause: must be a duration such as "500ms", "2s" or "5m", got the string "2 seconds"',
    ]);
  });

  it('reports a missing required key at its parent', () => {
    expect(problems('version: 1\nname: x\nsource: {}\ntarget:\n  postgres: "${env:T}"\ntables: [{ name: a }]\n')).toEqual([
      '3:9 source.postgres: is required',
    ]);
  });

  it('rejects malformed references and templates', () => {
    const text = `${good}documents:
  - table: public.documents
    content: content
    blob: "patients/{patient_id/{id}"
    contentType: "{mime type}"
    keep: { column: blob_path }
`.replace('"${env:TARGET_DATABASE_URL}"', '"${secret:TARGET}"');
    expect(problems(text)).toEqual([
      '6:13 target.postgres: "${secret:TARGET}" is not a valid reference: use ${env:NAME} or ${file:PATH}',
      '12:11 documents[0].blob: template placeholder "{patient_id/{id}" is not a column name',
      '13:18 documents[0].contentType: template placeholder "{mime type}" is not a column name',
    ]);
  });

  it('refuses two blob name placeholders with nothing between them', () => {
    const text = `${good}documents:
  - table: public.documents
    content: content
    blob: "patients/{patient_id}{id}.pdf"
    keep: { column: blob_path }
`;
    expect(problems(text)).toEqual([
      "12:11 documents[0].blob: placeholders {patient_id} and {id} are next to each other: put a character between them, or two rows' values could run together into one name",
    ]);
    expect(problems(text.replace('{patient_id}{id}.pdf', '{patient_id}/{id}%.pdf'))).toEqual([
      '12:11 documents[0].blob: placeholder {id} is followed by "%", which starts the escapes of its encoded value: put another character after it',
    ]);
  });

  it("keeps the state store's schema apart from the migrated tables' in the target", () => {
    expect(problems(`${good}state: { schema: public }\n`)).toEqual([
      '9:18 state.schema: the state store\'s schema "public" is in the target database, where public.patients goes too: set state.schema to a schema no migrated table uses',
    ]);
    expect(problems(`${good}  - name: cloudshift.runs\n`)).toEqual([
      '9:11 tables[1].name: the state store\'s schema "cloudshift" is in the target database, where cloudshift.runs goes too: set state.schema to a schema no migrated table uses',
    ]);
    expect(problems(`${good}state: { schema: migration_state }\n`)).toEqual([]);
    // The target's own connection string named again is the same database.
    expect(problems(`${good}state: { postgres: "\${env:TARGET_DATABASE_URL}", schema: public }\n`)).toHaveLength(1);
  });

  it('refuses a row filter with live sync, which replays every change of the table', () => {
    const filtered = good.replace('  - name: public.patients\n', '  - name: public.patients\n    where: "id > 10"\n');
    expect(problems(`${filtered}sync: { mode: logical }\n`)).toEqual([
      '9:12 tables[0].where: a row filter cannot be kept by live sync (it replays every change of the table): remove it, or set sync.mode: none',
    ]);
    expect(problems(`${filtered}sync: { mode: none }\n`)).toEqual([]);
  });

  it('keeps the state store in the target database with live sync', () => {
    const text = `${good}state: { postgres: "\${env:STATE_DATABASE_URL}" }\nsync: { mode: logical }\n`;
    expect(problems(text)).toEqual([
      '9:20 state.postgres: live sync keeps its position in the target database, with the changes it applies in the same transaction: with `sync.mode: logical` the state store is the target database (remove state.postgres)',
    ]);
    expect(problems(text.replace('sync: { mode: logical }', 'sync: { mode: none }'))).toEqual([]);
  });

  it('refuses a worker timeout shorter than two heartbeats, and says what a whole number is', () => {
    expect(problems(`${good}copy: { workerTimeout: 1ms, jobs: 1.5 }\n`)).toEqual([
      '9:24 copy.workerTimeout: must be at least 10s (workers beat every 5 s)',
      '9:35 copy.jobs: expected a whole number, got number 1.5',
    ]);
  });

  it('refuses a replication slot name PostgreSQL would refuse', () => {
    for (const slot of ['"My-Slot"', 'slot$1', 'Upper', 'x'.repeat(56), '2024_ehr'])
      expect(problems(`${good}sync: { mode: logical, slot: '${slot}' }\n`), slot).toEqual([
        expect.stringMatching(
          /^9:30 sync\.slot: must be 1 to 55 lower-case letters, digits and _, not starting with a digit \(a replication slot name; rollback adds "_reverse"\), got /,
        ),
      ]);
    expect(problems(`${good}sync: { mode: logical, slot: ehr_move_2 }\n`)).toEqual([]);
  });

  it('refuses a second documents entry on one table (one content column per table)', () => {
    const entry = (content: string, folder: string) => `  - table: public.documents
    content: ${content}
    blob: "${folder}/{id}"
    keep: { column: ${folder}_path }
`;
    const text = `${good}documents:\n${entry('letter', 'letters')}${entry('scan', 'scans')}`;
    expect(problems(text).filter((p) => p.includes('documents['))).toEqual([
      '14:12 documents[1].table: public.documents already has a documents entry (documents[0], column letter): this version moves one content column per table',
    ]);
  });

  it('refuses metadata and tag names Azure refuses, where they are written', () => {
    const text = `${good}documents:
  - table: public.documents
    content: content
    blob: "d/{id}"
    metadata: { "patient id": "{patient_id}", ok_name: "x" }
    tags: { "a&b": "{id}" }
    keep: { column: blob_path }
`;
    expect(problems(text).filter((p) => p.includes('documents['))).toEqual([
      expect.stringMatching(/^13:17 documents\[0\]\.metadata\.patient id: a metadata name is letters, digits and _/),
      expect.stringMatching(/^14:13 documents\[0\]\.tags\.a&b: a tag name is 1 to 128 letters/),
    ]);
  });

  it('refuses blob names that would climb out of the container or name an empty folder', () => {
    const text = `${good}documents:
  - table: public.documents
    content: content
    blob: "../audit/{id}"
    keep: { column: blob_path }
`;
    const outside = '12:11 documents[0].blob: has a path segment "..", which would put the blob outside its container: name the folder';
    expect(problems(text)).toEqual([outside]);
    expect(problems(text.replace('../audit/{id}', 'p/./{id}'))).toEqual([outside.replace('".."', '"."')]);
    for (const empty of ['/p/{id}', 'p//{id}', 'p/{id}/'])
      expect(problems(text.replace('../audit/{id}', empty)), empty).toEqual([
        '12:11 documents[0].blob: has an empty path segment (a leading or trailing "/", or "//"): every "/" must have a name on both sides',
      ]);
    expect(problems(text.replace('../audit/{id}', 'p/..{id}/x.pdf')).filter((p) => p.includes('.blob:'))).toEqual([]);
  });

  it('refuses two documents entries whose blob names could meet, and takes those whose fixed text keeps them apart', () => {
    const blobProblems = (a: string, b: string) => problems(entries(a, b)).filter((x) => x.includes('.blob: '));
    const entries = (a: string, b: string) => `${good}documents:
  - table: public.letters
    content: content
    blob: "${a}"
    keep: { column: blob_path }
  - table: public.scans
    content: image
    blob: "${b}"
    keep: { column: blob_name }
`;
    expect(blobProblems('docs/{id}.pdf', 'docs/{id}.pdf')).toEqual([
      `16:11 documents[1].blob: "docs/{id}.pdf" and documents[0]'s "docs/{id}.pdf" can name the same blob: give each entry a folder of its own, such as "scans/{…}"`,
    ]);
    expect(blobProblems('p/{patient_id}/{id}', 'p/{patient_id}/scan-{id}')).toHaveLength(1);
    expect(blobProblems('docs/{id}', 'docs/index')).toHaveLength(1);
    // Apart: another folder, another number of folders, another fixed start or end.
    for (const [a, b] of [
      ['patients/{patient_id}/letters/{id}', 'patients/{patient_id}/scans/{id}'],
      ['patients/{patient_id}/{id}-{filename}', 'scans/{id}.dcm'],
      ['docs/{id}.pdf', 'docs/{id}.dcm'],
      ['docs/letter-{id}', 'docs/scan-{id}'],
      ['docs/{id}', 'docs/{year}/{id}'],
    ])
      expect(blobProblems(a!, b!), `${a} / ${b}`).toEqual([]);
  });

  it('allows a password given as a reference inside a URL', () => {
    const text = good.replace('"${env:SOURCE_DATABASE_URL}"', '"postgres://app:${env:PGPASSWORD}@db/ehr"');
    expect(problems(text)).toEqual([]);
  });

  it('refuses key=value literal passwords too', () => {
    const text = good.replace('"${env:SOURCE_DATABASE_URL}"', '"host=db dbname=ehr user=app password=secret"');
    expect(problems(text)).toEqual([
      '4:13 source.postgres: contains a literal password; put the whole connection string or the password in a reference such as "${env:SOURCE_DATABASE_URL}"',
    ]);
  });

  it('refuses a literal password in the values an ARM switch sets (ADO.NET key=value, URL)', () => {
    const text = `${good}cutover:
  switch:
    arm:
      resource: /subscriptions/s/resourceGroups/rg/providers/Microsoft.Web/sites/ehr/config/appsettings
      apiVersion: "2023-12-01"
      property: properties.EHR_DATABASE
      target: "Host=ehr.postgres.database.azure.com;Password=Sup3rSecret;Database=ehr"
      source: "postgres://app:Sup3rSecret@db/ehr"
`;
    const literal =
      'contains a literal password; put the whole connection string or the password in a reference such as "${env:SOURCE_DATABASE_URL}"';
    expect(problems(text)).toEqual([`15:15 cutover.switch.arm.target: ${literal}`, `16:15 cutover.switch.arm.source: ${literal}`]);
    // A host name, or a reference, is no secret.
    const fine = text
      .replace(/target: "Host.*/, 'target: ehr.postgres.database.azure.com')
      .replace(/source: "postgres.*/, 'source: "${env:APP_SOURCE}"');
    expect(problems(fine).filter((p) => / cutover\.switch\.arm\.(target|source):/.test(p))).toEqual([]);
  });

  it("refuses a literal password in a URL's query too", () => {
    const text = good.replace('"${env:SOURCE_DATABASE_URL}"', '"postgresql://db/ehr?user=app&password=secret"');
    expect(problems(text)).toEqual([
      '4:13 source.postgres: contains a literal password; put the whole connection string or the password in a reference such as "${env:SOURCE_DATABASE_URL}"',
    ]);
  });

  it('applies cross-field rules', () => {
    const text = `${good}  - name: PUBLIC.Patients
documents:
  - table: public.documents
    content: Content
    blob: "d/{id}"
    keep: { column: '"content"' }
sync: { mode: none }
cutover:
  switch:
    pgbouncer: { admin: "\${env:PGB}", database: ehr, config: /etc/pgbouncer/db.ini }
`;
    expect(problems(text)).toEqual(
      [
        '6:3 target: the plan has documents but no `target.blob`: add target.blob with a container and credentials',
        '9:11 tables[1].name: table public.patients is listed twice (also tables[0]); list each table once',
        '14:21 documents[0].keep.column: keep.column must differ from the content column "Content": the content column is not copied',
        '18:16 cutover.switch.pgbouncer: a PgBouncer cutover keeps writes flowing and needs live sync: set `sync.mode: logical`',
      ].sort((a, b) => Number(a.split(':')[0]) - Number(b.split(':')[0])),
    );
  });

  it('reads the sequences a plan lists, and refuses one listed twice or a name that is none, at its line', () => {
    const listed = validatePlanText(`${good}sequences: [public.mrn_seq, '"Ward Codes"']\n`);
    expect(listed.valid).toBe(true);
    if (listed.valid)
      expect(applyDefaults(listed.input).sequences).toEqual([
        { schema: 'public', name: 'mrn_seq' },
        { schema: 'public', name: 'Ward Codes' },
      ]);
    expect(problems(`${good}sequences:\n  - public.mrn_seq\n  - MRN_SEQ\n`)).toEqual([
      '11:5 sequences[1]: sequence public.mrn_seq is listed twice (also sequences[0]); list each sequence once',
    ]);
    expect(problems(`${good}sequences:\n  - public.mrn_seq\n  - a.b.c\n`)).toEqual([
      '11:5 sequences[1]: must be a sequence name, `schema.sequence` or `sequence`; quote unusual names as "My Sequence", got the string "a.b.c"',
    ]);
  });

  it('never echoes a literal password put where a mapping belongs', () => {
    const text = good
      .replace('postgres: "${env:SOURCE_DATABASE_URL}"', 'postgres://admin:Secr3t@db.example.com/ehr')
      .replace('source:\n  ', 'source: ');
    const found = problems(text);
    expect(found).toEqual(['3:9 source: expected a mapping, got the string "postgres://admin:***@db.example.com/ehr"']);
    expect(found.join('')).not.toContain('Secr3t');
  });

  it('takes many uses of an anchor, and refuses an alias bomb with a located problem', () => {
    const tables = Array.from({ length: 300 }, (_, i) => `  - { name: public.t${i}, batch: *b }`).join('\n');
    const many = `${good.replace(/tables:[\s\S]*/, '')}copy: { batch: &b { rows: 5000 } }\ntables:\n${tables}\n`;
    expect(problems(many)).toEqual([]);
    const bomb = `${good}x0: &a0 [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\n${Array.from({ length: 8 }, (_, i) => `x${i + 1}: &a${i + 1} [${Array(10).fill(`*a${i}`).join(', ')}]`).join('\n')}\n`;
    expect(problems(bomb)).toEqual([
      expect.stringMatching(/^1:1 : YAML aliases expand too far \(more than 10000 uses of anchored values\)/),
    ]);
  });

  it('refuses an unknown YAML tag and nesting too deep to read, each where it is', () => {
    const tagged = good.replace('"${env:SOURCE_DATABASE_URL}"', '!secret SOURCE_DATABASE_URL');
    expect(problems(tagged)).toEqual(['4:13 : unknown YAML tag !secret: a plan is plain YAML (a secret is referenced as "${env:NAME}")']);
    const deep = `${good}x: ${'['.repeat(20_000)}${']'.repeat(20_000)}\n`;
    expect(problems(deep)).toEqual([expect.stringMatching(/^\d+:\d+ : YAML nested too deeply to read$/)]);
  });

  it('refuses a state schema PostgreSQL reserves, zero rows per batch, and metadata names that differ only in case', () => {
    const text = `${good}    batch: { rows: 0 }
state: { schema: pg_cloudshift }
documents:
  - table: public.documents
    content: content
    blob: "d/{id}"
    metadata: { Kind: "{kind}", kind: "{kind}" }
    keep: { column: blob_path }
`;
    expect(problems(text)).toEqual([
      '9:20 tables[0].batch.rows: must be greater than 0, got number 0',
      '10:18 state.schema: state.schema must not begin with pg_, which PostgreSQL reserves for its own schemas, got the string "pg_cloudshift"',
      '15:39 documents[0].metadata.kind: metadata names are case-insensitive: "kind" is the same as "Kind"',
    ]);
  });

  it('refuses any cutover switch without live sync, which cutover and rollback need', () => {
    const text = `${good}cutover:\n  switch:\n    command: { run: ./switch.sh }\n`;
    expect(problems(text)).toEqual([
      '11:14 cutover.switch.command: cutover and rollback need live sync (the target caught up, then the source fed from it): set `sync.mode: logical`',
    ]);
    expect(problems(`${text}sync: { mode: logical }\n`)).toEqual([]);
  });

  it('treats quoted identifiers literally and never as SQL', () => {
    const result = validatePlanText(good.replace('public.patients', `'public."x""; drop table y; --"'`));
    expect(result.valid).toBe(true);
    if (!result.valid) return;
    expect(applyDefaults(result.input).tables[0]!.name).toEqual({ schema: 'public', name: 'x"; drop table y; --' });
  });

  it('loadPlan throws one error listing every problem (exit code 2)', async () => {
    const dir = scratchDir('cs-plan');
    const file = join(dir, 'p.yaml');
    writeFileSync(file, 'version: 1\nname: x\n');
    const err = await loadPlan(file).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(PlanInvalidError);
    expect((err as PlanInvalidError).exitCode).toBe(2);
    expect((err as PlanInvalidError).problems.map((p) => p.path)).toEqual(['source', 'target']);
  });

  it('fingerprint changes with the plan, not with formatting or comments', async () => {
    const dir = scratchDir('cs-plan');
    const a = join(dir, 'a.yaml');
    const b = join(dir, 'b.yaml');
    const c = join(dir, 'c.yaml');
    writeFileSync(a, good);
    writeFileSync(b, `# a comment\n${good.replace('name: ppm', "name: 'ppm'")}`);
    writeFileSync(c, good.replace('public.patients', 'public.encounters'));
    const [fa, fb, fc] = await Promise.all([a, b, c].map(async (f) => (await loadPlan(f)).fingerprint));
    expect(fa).toBe(fb);
    expect(fa).not.toBe(fc);
  });
});

describe('plan JSON Schema', () => {
  it('plans/plan.schema.json is up to date (run `npm run schema` after changing the plan schema)', () => {
    expect(readFileSync('plans/plan.schema.json', 'utf8')).toBe(planJsonSchemaText());
  });

  it('describes every field with Required or Optional', () => {
    const missing: string[] = [];
    const walk = (node: unknown, path: string): void => {
      if (!node || typeof node !== 'object') return;
      const n = node as { properties?: Record<string, { description?: string }>; items?: unknown; additionalProperties?: unknown };
      for (const [k, v] of Object.entries(n.properties ?? {})) {
        if (!/(Required\.|Optional)/.test(v.description ?? '')) missing.push(`${path}${k}`);
        walk(v, `${path}${k}.`);
      }
      if (n.items) walk(n.items, path);
    };
    walk(JSON.parse(planJsonSchemaText()), '');
    expect(missing).toEqual([]);
  });
});
