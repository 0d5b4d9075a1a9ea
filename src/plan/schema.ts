/**
 * The plan's schema: the single source of truth for plan fields, their types and their
 * documentation. plans/plan.schema.json and the README's plan reference are generated from it.
 * Every description says what the field means and "Required." or "Optional; default …". The
 * defaults themselves live in defaults.ts and are applied after validation, never here.
 */
import { z } from 'zod';
import { isIdentifier, isQualifiedName, parseIdentifier } from './names.js';
import { isDuration, isSize, parseDurationMs } from './units.js';
import {
  FLEXIBLE_SERVER,
  GUID,
  RESOURCE_GROUP,
  STORAGE_ACCOUNT,
  isResourceRef,
  resourceRefMessage,
  type AzureResourceType,
} from './azureIds.js';
import { checkBlobTemplate, checkConnectionString, checkSecretReference, checkTemplate } from './valueChecks.js';

const identifier = (what: string) =>
  z.string().refine(isIdentifier, {
    params: { showValue: true },
    message: `${what} must be a PostgreSQL identifier: letters, digits, _ and $ (not starting with a digit), or a "double-quoted" name`,
  });

const tableName = z.string().refine(isQualifiedName, {
  params: { showValue: true },
  message: 'must be a table name, `schema.table` or `table`; quote unusual names as "My Table"',
});

const sequenceName = z.string().refine(isQualifiedName, {
  params: { showValue: true },
  message: 'must be a sequence name, `schema.sequence` or `sequence`; quote unusual names as "My Sequence"',
});

const connection = (what: string, presence = 'Required.') =>
  z
    .string()
    .min(1)
    .superRefine(checkConnectionString)
    .describe(
      `${what}: a PostgreSQL connection string (URL or key=value). Put passwords in a reference, e.g. "\${env:NAME}" or "postgres://app:\${env:PGPASSWORD}@host/db"; literal passwords are refused. ${presence}`,
    );

const duration = z
  .string()
  .refine(isDuration, { params: { showValue: true }, message: 'must be a duration such as "500ms", "2s" or "5m"' });
const size = z.string().refine(isSize, { params: { showValue: true }, message: 'must be a size such as "512MB" or "10GB"' });
const template = z.string().min(1).superRefine(checkTemplate);

const blobTarget = z
  .strictObject({
    connectionString: z
      .string()
      .superRefine(checkSecretReference('UseDevelopmentStorage=true'))
      .optional()
      .describe(
        'Storage connection string, always as a reference ("${env:AZURE_STORAGE_CONNECTION_STRING}"). Use for Azurite and development. Optional; give this or `account`.',
      ),
    account: z
      .string()
      .regex(/^[a-z0-9]{3,24}$/, 'must be a storage account name: 3 to 24 lower-case letters and digits')
      .optional()
      .describe(
        'Storage account name; authenticates with Entra ID (DefaultAzureCredential) unless `sas` is set. Optional; give this or `connectionString`.',
      ),
    sas: z
      .string()
      .superRefine(checkSecretReference())
      .optional()
      .describe('A SAS token for `account`, always as a reference ("${env:AZURE_STORAGE_SAS}"). Optional.'),
    endpoint: z
      .string()
      .url()
      .optional()
      .describe('Blob service URL for `account`. Optional; default https://<account>.blob.core.windows.net.'),
    container: z
      .string()
      .regex(/^[a-z0-9](?!.*--)[a-z0-9-]{1,61}[a-z0-9]$/, 'must be a container name: 3 to 63 lower-case letters, digits and single hyphens')
      .describe('Container the documents go to; created by `cloudshift run` if absent. Required.'),
  })
  .describe('Azure Blob Storage for documents. Optional; required when the plan has `documents`.');

const table = z
  .strictObject({
    name: tableName.describe('Source table, `schema.table` (schema defaults to public). Required.'),
    batch: z
      .strictObject({
        rows: z.number().int().positive().describe('Rows per batch. Optional; default `copy.batch.rows`.'),
      })
      .optional()
      .describe('Batching for this table. Optional.'),
    where: z
      .string()
      .min(1)
      .optional()
      .describe(
        'SQL condition selecting the rows to copy (trusted input: it is run as written). Not with `sync.mode: logical`, which replays every change of the table. Optional; default all rows.',
      ),
    replicaIdentity: z
      .enum(['full', 'index', 'insert-only'])
      .optional()
      .describe(
        'For live sync of a table without a primary key: how its rows are identified. `cloudshift run` sets it on the source before publishing the table (ALTER TABLE … REPLICA IDENTITY, waiting at most 5 s for the lock; it stays after the migration): `full` (every column), `index` (its unique index whose columns are all NOT NULL). `insert-only` changes nothing: the application never updates or deletes (an UPDATE or DELETE would fail on the source while the publication exists). Live sync refuses such a table without it, and a table with a primary key that it (or a partition) has set to `REPLICA IDENTITY NOTHING`. Optional; default the primary key.',
      ),
  })
  .describe('A record table to copy.');

const document = z
  .strictObject({
    table: tableName.describe('Source table holding the documents. Required.'),
    content: identifier('content').describe(
      'Column holding the bytes: `bytea`, or `oid` of a large object (or a domain over oid, such as `lo` from the lo extension). Required.',
    ),
    blob: template
      .superRefine(checkBlobTemplate)
      .describe(
        'Blob name template from the row\'s columns, e.g. "patients/{patient_id}/{id}-{filename}"; each value is URL-safe encoded (with the character after its placeholder, so no two rows share a name), and placeholders need a character between them. Required.',
      ),
    contentType: template
      .optional()
      .describe('Content type, fixed or a template such as "{mime_type}". Optional; default application/octet-stream.'),
    metadata: z
      .record(
        z
          .string()
          .regex(
            /^[A-Za-z_][A-Za-z0-9_]*$/,
            'a metadata name is letters, digits and _, not starting with a digit (Azure: a C# identifier)',
          ),
        template,
      )
      .superRefine((metadata, ctx) => {
        // Azure metadata names are case-insensitive (HTTP headers): two would become one.
        const seen = new Map<string, string>();
        for (const name of Object.keys(metadata)) {
          const other = seen.get(name.toLowerCase());
          if (other !== undefined)
            ctx.addIssue({
              code: 'custom',
              path: [name],
              message: `metadata names are case-insensitive: "${name}" is the same as "${other}"`,
            });
          else seen.set(name.toLowerCase(), name);
        }
      })
      .optional()
      .describe('Blob metadata: name (letters, digits, _; case-insensitive) → template. Optional.'),
    tier: z.enum(['Hot', 'Cool', 'Cold', 'Archive']).optional().describe("Access tier. Optional; default the account's default tier."),
    tags: z
      .record(
        z.string().regex(/^[A-Za-z0-9 +\-./:=_]{1,128}$/, 'a tag name is 1 to 128 letters, digits, spaces and + - . / : = _'),
        template,
      )
      .refine((t) => Object.keys(t).length <= 10, { message: 'a blob has at most 10 tags' })
      .optional()
      .describe(
        'Blob index tags: name → template. A row whose value Azure would refuse in a tag (over 256 characters, or other than letters, digits, spaces and + - . / : = _) stops the run, naming it. Optional.',
      ),
    keep: z
      .strictObject({
        column: identifier('keep.column').describe(
          'Column added to the target table holding the blob name; the content column is not copied. Required.',
        ),
      })
      .describe('What the target row keeps in place of the bytes. Required.'),
  })
  .describe('A documents column moved to Blob Storage.');

const pgbouncerSwitch = z
  .strictObject({
    admin: z
      .string()
      .min(1)
      .superRefine(checkConnectionString)
      .describe('PgBouncer admin console connection string, as a reference ("${env:PGBOUNCER_ADMIN_URL}"). Required.'),
    database: z.string().min(1).describe('The PgBouncer database name the application connects to. Required.'),
    config: z
      .string()
      .min(1)
      .describe("Path of the ini file, included by PgBouncer, holding that database's `[databases]` entry. Required."),
  })
  .describe('Switch the application through PgBouncer (PAUSE, repoint, RELOAD, RESUME). Optional; name exactly one switch.');

const commandSwitch = z
  .strictObject({
    run: z.string().min(1).describe('Command to run; it gets CLOUDSHIFT_SIDE (target|source) in its environment. Required.'),
  })
  .describe('Switch the application by running your own command. Optional; name exactly one switch.');

const armSwitch = z
  .strictObject({
    resource: z
      .string()
      .regex(/^\/subscriptions\/[^/]+\/.+/i, 'must be an ARM resource id such as /subscriptions/<id>/resourceGroups/<rg>/providers/...')
      .describe(
        "ARM id of the resource holding the setting, e.g. an App Service's `/config/appsettings`, an App Configuration key-value, a DNS CNAME record set. Required.",
      ),
    apiVersion: z
      .string()
      .regex(/^\d{4}-\d{2}-\d{2}(-preview)?$/, 'must be an ARM api-version such as 2023-12-01')
      .describe("The resource provider's api-version for that resource type. Required."),
    property: z
      .string()
      .regex(/^[A-Za-z0-9_$-]+(\.[A-Za-z0-9_$-]+)+$/, 'must be a dotted path into the resource, such as properties.DATABASE_HOST')
      .describe('Dotted path of the property to set in the resource body, e.g. `properties.DATABASE_HOST`. Required.'),
    target: z
      .string()
      .min(1)
      .superRefine(checkConnectionString)
      .describe(
        'Value that points the application at Azure (a `${env:}` reference when it holds a secret: a connection string with a literal password is refused). Required.',
      ),
    source: z
      .string()
      .min(1)
      .superRefine(checkConnectionString)
      .describe(
        'Value that points it back at the source, set at rollback (a `${env:}` reference when it holds a secret: a connection string with a literal password is refused). Required.',
      ),
  })
  .describe(
    'Switch the application by setting one property of an ARM resource (needs the `azure` section). The application reconnects rather than waits: see the README. Optional; name exactly one switch.',
  );

const httpsUrl = z
  .string()
  .url()
  .refine((v) => v.startsWith('https://'), { params: { showValue: true }, message: 'must be an https:// URL' });
const azureResource = (t: AzureResourceType) =>
  z.string().refine((v) => isResourceRef(t, v), { params: { showValue: true }, message: resourceRefMessage(t) });

const azure = z
  .strictObject({
    subscriptionId: z
      .string()
      .regex(GUID, 'must be a subscription id (a GUID such as 00000000-0000-0000-0000-000000000000)')
      .describe('Azure subscription holding the target resources (a GUID). Required.'),
    resourceGroup: z
      .string()
      .regex(RESOURCE_GROUP, 'must be a resource group name: 1 to 90 letters, digits, _ - . ( ), not ending with a period')
      .describe('Resource group of the target resources; `cloudshift provision` deploys the template into it. Required.'),
    storageAccount: azureResource(STORAGE_ACCOUNT)
      .optional()
      .describe(
        'Storage account for documents: a name (in `resourceGroup`) or a full resource id. The dry run checks TLS, secure transfer and public access. Optional; required when the plan has `documents`.',
      ),
    postgresServer: azureResource(FLEXIBLE_SERVER).describe(
      'Azure Database for PostgreSQL flexible server: a name (in `resourceGroup`) or a full resource id. The dry run checks its version, server parameters and storage. Required.',
    ),
    template: z
      .string()
      .regex(/\.json$/i, 'must be the path of an ARM JSON template ending in .json (compile Bicep with `az bicep build` first)')
      .optional()
      .describe('ARM JSON template for the target resources, relative to the plan file; used by `cloudshift provision`. Optional.'),
    resourceManagerEndpoint: httpsUrl
      .optional()
      .describe('Azure Resource Manager endpoint, for sovereign clouds. Optional; default https://management.azure.com.'),
    authorityHost: httpsUrl
      .optional()
      .describe(
        'Microsoft Entra ID authority host, for sovereign clouds. Optional; default the AZURE_AUTHORITY_HOST environment variable, else https://login.microsoftonline.com.',
      ),
  })
  .describe('The Azure resources the target lives in, checked by the dry run through Azure Resource Manager (read-only). Optional.');

export const planSchema = z
  .strictObject({
    $schema: z.string().optional().describe('JSON Schema for editors. Optional.'),
    version: z.literal(1).describe('Plan format version; always 1. Required.'),
    name: z
      .string()
      .regex(/^[a-z0-9][a-z0-9_-]{0,39}$/, 'must be 1 to 40 lower-case letters, digits, _ and -, starting with a letter or digit')
      .describe('Name of the migration; names the run, the replication slot and the publication. Required.'),
    source: z
      .strictObject({ postgres: connection('Source database') })
      .describe('The on-premises PostgreSQL database being migrated. Required.'),
    target: z
      .strictObject({
        postgres: connection('Target database (Azure Database for PostgreSQL)'),
        blob: blobTarget.optional(),
        existingData: z
          .enum(['refuse', 'truncate'])
          .optional()
          .describe(
            'What to do when a target table already holds rows: `refuse` stops before writing (exit 3), `truncate` empties it. Optional; default refuse.',
          ),
      })
      .describe('Where the data goes. Required.'),
    state: z
      .strictObject({
        postgres: connection('State store database', 'Not with live sync. Optional; default target.postgres.').optional(),
        schema: identifier('state.schema')
          .refine((name) => !isIdentifier(name) || !parseIdentifier(name).startsWith('pg_'), {
            params: { showValue: true },
            message: 'state.schema must not begin with pg_, which PostgreSQL reserves for its own schemas',
          })
          .optional()
          .describe('Schema of the state store. Optional; default cloudshift.'),
      })
      .optional()
      .describe('Where cloudshift records runs, batches and events. Optional; default schema cloudshift in the target database.'),
    tables: z.array(table).optional().describe('Record tables to copy. Optional; default none (a plan needs tables or documents).'),
    documents: z.array(document).optional().describe('Documents moved to Blob Storage. Optional; default none.'),
    sequences: z
      .array(sequenceName)
      .optional()
      .describe(
        "Sequences the application calls by name (`nextval('mrn_seq')`) that no migrated table owns or uses in a column default: created on the target, set to the source's value after the copy and at cutover, and back at rollback. A migrated table's own sequences (serial, identity, defaults) are always carried. One added while a run is under way is made by the next `cloudshift run --force`; cutover refuses until then. Optional; default none.",
      ),
    copy: z
      .strictObject({
        jobs: z.number().int().min(1).max(64).optional().describe('Batches copied at once. Optional; default 4.'),
        batch: z
          .strictObject({ rows: z.number().int().positive().optional().describe('Rows per batch. Optional; default 100000.') })
          .optional()
          .describe('Default batching for every table. Optional.'),
        maxWorkers: z
          .number()
          .int()
          .min(1)
          .max(256)
          .optional()
          .describe(
            'Most `cloudshift run` processes sharing the run at once (the leader included); more are refused. Optional; default no limit.',
          ),
        workerTimeout: duration
          // Workers beat every 5 s: a shorter timeout would take live ones for gone.
          .refine((d) => !isDuration(d) || parseDurationMs(d) >= 10_000, { message: 'must be at least 10s (workers beat every 5 s)' })
          .optional()
          .describe(
            'A worker whose heartbeat is older than this is gone: its claimed batches go back to the others; at least 10s. Optional; default 20s.',
          ),
      })
      .optional()
      .describe('Bulk copy settings. Optional.'),
    sync: z
      .strictObject({
        mode: z
          .enum(['logical', 'none'])
          .describe('`logical`: keep the target in sync through logical replication until cutover; `none`: copy once. Required.'),
        slot: z
          .string()
          .regex(
            /^[a-z_][a-z0-9_]{0,54}$/,
            'must be 1 to 55 lower-case letters, digits and _, not starting with a digit (a replication slot name; rollback adds "_reverse")',
          )
          .optional()
          .describe(
            'Replication slot name: lower-case letters, digits and _, not starting with a digit, at most 55. Optional; default cloudshift_<name>.',
          ),
        publication: identifier('sync.publication').optional().describe('Publication name. Optional; default cloudshift_<name>.'),
        warnRetainedWal: size.optional().describe('Warn when the slot retains more WAL than this on the source. Optional; default 10GB.'),
      })
      .optional()
      .describe('Live sync. Optional; default mode none.'),
    cutover: z
      .strictObject({
        switch: z
          .strictObject({ pgbouncer: pgbouncerSwitch.optional(), command: commandSwitch.optional(), arm: armSwitch.optional() })
          .refine((s) => Object.keys(s).length === 1, { message: 'name exactly one switch: pgbouncer, command or arm' })
          .describe('How the application is pointed at the target. Required.'),
        maxPause: duration
          .optional()
          .describe('Longest write pause allowed; beyond it cutover resumes on the source. Optional; default 2s.'),
        maxLag: duration.optional().describe('Replication lag under which cutover may start. Optional; default 1s.'),
      })
      .optional()
      .describe('Cutover settings. Optional.'),
    azure: azure.optional(),
  })
  .describe('A cloudshift migration plan.');

export type PlanInput = z.infer<typeof planSchema>;
