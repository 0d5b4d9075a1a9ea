/**
 * The plan's sequences on the source: each listed one exists, is a sequence, and can be read (and
 * set, which rollback does, with live sync); and a sequence in a migrated table's schema that
 * belongs to no table, and that no column default uses, is named (warn): the application may call
 * nextval() on it, and unless the plan lists it the target has no such sequence after cutover.
 */
import type pg from 'pg';
import { migratedTables, type Plan } from '../plan/defaults.js';
import { displayName } from '../plan/names.js';
import { findListedSequences, listedSequenceProblem } from '../source/listedSequences.js';
import type { CheckList } from './types.js';

export async function checkSequences(client: pg.Client, plan: Plan, checks: CheckList): Promise<void> {
  const listed = plan.sequences;
  (await findListedSequences(client, listed)).forEach((s, i) => {
    const subject = displayName(s.name);
    const problem = listedSequenceProblem(s, i);
    if (problem !== null) checks.fail('sequence.exists', subject, problem);
    else if (plan.sync.mode === 'logical' && !s.canSet)
      checks.fail(
        'sequence.exists',
        subject,
        `permission denied: the source user may not set sequence ${subject} (plan sequences[${i}]), which rollback does; GRANT UPDATE ON SEQUENCE ${subject} TO <user>`,
      );
    else
      checks.pass(
        'sequence.exists',
        subject,
        `sequence exists${s.lastValue === null ? ', never used' : ` at ${s.lastValue}`}; set on the target after the copy and at cutover`,
      );
  });

  const schemas = [...new Set(migratedTables(plan).map((t) => t.schema))];
  const { rows: loose } = await client.query<{ schema: string; name: string }>(
    `SELECT n.nspname AS schema, s.relname AS name
       FROM pg_class s JOIN pg_namespace n ON n.oid = s.relnamespace
      WHERE s.relkind = 'S' AND n.nspname = ANY($1::text[])
        AND NOT EXISTS (SELECT 1 FROM pg_depend d
                         WHERE d.classid = 'pg_class'::regclass AND d.objid = s.oid AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i'))
        AND NOT EXISTS (SELECT 1 FROM pg_depend d
                         WHERE d.classid = 'pg_attrdef'::regclass AND d.refclassid = 'pg_class'::regclass AND d.refobjid = s.oid)
      ORDER BY 1, 2`,
    [schemas],
  );
  const named = new Set(listed.map(displayName));
  for (const q of loose) {
    const subject = displayName(q);
    if (named.has(subject)) continue;
    checks.warn(
      'sequence.unlisted',
      subject,
      `sequence ${subject} belongs to no table and no column default uses it, so it is not migrated: if the application calls nextval() on it, list it under \`sequences\` so the target has it, going on from the source's value`,
    );
  }
}
