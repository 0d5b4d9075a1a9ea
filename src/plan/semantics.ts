/**
 * Cross-field rules of a plan that passed the schema. Each problem carries the path of the value
 * to fix; parse.ts adds line and column.
 */
import type { PlanInput } from './schema.js';
import { displayName, parseQualifiedName, splitIdentifiers } from './names.js';
import { namesMayMeet } from './templates.js';

export interface PathProblem {
  path: Array<string | number>;
  message: string;
}

export function checkSemantics(plan: PlanInput): PathProblem[] {
  const problems: PathProblem[] = [];
  const tables = plan.tables ?? [];
  const documents = plan.documents ?? [];

  if (tables.length === 0 && documents.length === 0) {
    problems.push({ path: ['tables'], message: 'the plan moves nothing: list at least one table under `tables` or `documents`' });
  }

  problems.push(
    ...listedTwice(
      tables.map((t) => t.name),
      'table',
      (i) => ['tables', i, 'name'],
    ),
    ...listedTwice(plan.sequences ?? [], 'sequence', (i) => ['sequences', i]),
  );

  // A column as PostgreSQL names it: `Content` and `"content"` are one column.
  const column = (text: string) => splitIdentifiers(text)?.[0] ?? text;
  const docSeen = new Map<string, { index: number; content: string }>();
  documents.forEach((d, i) => {
    const table = displayName(parseQualifiedName(d.table));
    const first = docSeen.get(table);
    if (first !== undefined && column(first.content) === column(d.content)) {
      problems.push({
        path: ['documents', i, 'content'],
        message: `documents column ${table}.${d.content} is listed twice (also documents[${first.index}])`,
      });
    } else if (first !== undefined) {
      problems.push({
        path: ['documents', i, 'table'],
        message: `${table} already has a documents entry (documents[${first.index}], column ${first.content}): this version moves one content column per table`,
      });
    } else docSeen.set(table, { index: i, content: d.content });
    if (column(d.keep.column) === column(d.content)) {
      problems.push({
        path: ['documents', i, 'keep', 'column'],
        message: `keep.column must differ from the content column "${d.content}": the content column is not copied`,
      });
    }
  });

  // Entries share the container: two whose names could meet would overwrite each other's blobs.
  documents.forEach((d, j) => {
    const other = documents.findIndex((e, i) => i < j && namesMayMeet(e.blob, d.blob));
    if (other < 0) return;
    problems.push({
      path: ['documents', j, 'blob'],
      message: `"${d.blob}" and documents[${other}]'s "${documents[other]!.blob}" can name the same blob: give each entry a folder of its own, such as "${parseQualifiedName(d.table).name}/{…}"`,
    });
  });

  const blob = plan.target.blob;
  if (documents.length > 0 && !blob) {
    problems.push({
      path: ['target'],
      message: 'the plan has documents but no `target.blob`: add target.blob with a container and credentials',
    });
  }
  if (blob) {
    const ways = [blob.connectionString, blob.account].filter((v) => v !== undefined).length;
    if (ways !== 1) {
      problems.push({ path: ['target', 'blob'], message: 'give exactly one of `connectionString` or `account`' });
    }
    if (blob.sas !== undefined && blob.account === undefined) {
      problems.push({
        path: ['target', 'blob', 'sas'],
        message: '`sas` needs `account` (a connection string carries its own credentials)',
      });
    }
    if (blob.endpoint !== undefined && blob.account === undefined) {
      problems.push({ path: ['target', 'blob', 'endpoint'], message: '`endpoint` needs `account`' });
    }
  }

  if (plan.azure && documents.length > 0 && plan.azure.storageAccount === undefined) {
    problems.push({
      path: ['azure'],
      message: 'the plan has documents: name their storage account in `azure.storageAccount` so the dry run can check it',
    });
  }

  // The state store's schema in the target database must not be one the migrated tables go to:
  // its tables (runs, batches, documents, events…) would meet theirs.
  if (plan.state?.postgres === undefined || plan.state.postgres === plan.target.postgres) {
    const stateSchema = plan.state?.schema === undefined ? 'cloudshift' : parseQualifiedName(`${plan.state.schema}.x`).schema;
    const named: Array<{ path: Array<string | number>; table: string }> = [
      ...tables.map((t, i) => ({ path: ['tables', i, 'name'], table: t.name })),
      ...documents.map((d, i) => ({ path: ['documents', i, 'table'], table: d.table })),
    ];
    const clash = named.find((n) => parseQualifiedName(n.table).schema === stateSchema);
    if (clash) {
      problems.push({
        path: plan.state?.schema === undefined ? clash.path : ['state', 'schema'],
        message: `the state store's schema "${stateSchema}" is in the target database, where ${displayName(parseQualifiedName(clash.table))} goes too: set state.schema to a schema no migrated table uses`,
      });
    }
  }

  // Live sync streams every row's changes: a table copied with a row filter would take rows the
  // filter leaves out, and its verification would call them extra.
  if (plan.sync?.mode === 'logical') {
    tables.forEach((t, i) => {
      if (t.where !== undefined)
        problems.push({
          path: ['tables', i, 'where'],
          message: 'a row filter cannot be kept by live sync (it replays every change of the table): remove it, or set sync.mode: none',
        });
    });
  }

  // The forward sync commits its position with the changes it applies, in the target database.
  const statePg = plan.state?.postgres;
  if (plan.sync?.mode === 'logical' && statePg !== undefined && statePg !== plan.target.postgres) {
    problems.push({
      path: ['state', 'postgres'],
      message:
        'live sync keeps its position in the target database, with the changes it applies in the same transaction: with `sync.mode: logical` the state store is the target database (remove state.postgres)',
    });
  }

  const sw = plan.cutover?.switch;
  if (sw?.pgbouncer && plan.sync?.mode !== 'logical') {
    problems.push({
      path: ['cutover', 'switch', 'pgbouncer'],
      message: 'a PgBouncer cutover keeps writes flowing and needs live sync: set `sync.mode: logical`',
    });
  } else if (sw && plan.sync?.mode !== 'logical') {
    const kind = Object.keys(sw)[0] ?? 'switch';
    problems.push({
      path: ['cutover', 'switch', kind],
      message: 'cutover and rollback need live sync (the target caught up, then the source fed from it): set `sync.mode: logical`',
    });
  }
  if (sw?.arm && !plan.azure) {
    problems.push({
      path: ['cutover', 'switch', 'arm'],
      message: 'the ARM switch talks to Azure Resource Manager: add the `azure` section (subscriptionId, resourceGroup, postgresServer)',
    });
  }
  return problems;
}

/** A name listed a second time in `tables` or `sequences` (as PostgreSQL names it). */
function listedTwice(names: string[], what: 'table' | 'sequence', path: (i: number) => Array<string | number>): PathProblem[] {
  const seen = new Map<string, number>();
  const list = `${what}s`;
  return names.flatMap((name, i) => {
    const key = displayName(parseQualifiedName(name));
    const first = seen.get(key);
    if (first === undefined) seen.set(key, i);
    return first === undefined
      ? []
      : [{ path: path(i), message: `${what} ${key} is listed twice (also ${list}[${first}]); list each ${what} once` }];
  });
}
