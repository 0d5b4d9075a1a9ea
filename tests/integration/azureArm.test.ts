/**
 * The Azure control plane end to end, without the internet: the real cloudshift executable, with
 * the real @azure/identity and ARM clients, against a fake Entra ID and ARM on 127.0.0.1 over
 * HTTPS (tests/harness/azure/), and the harness's real PostgreSQL servers for the rest of the
 * dry run. Asserts the exact requests and the handling of every kind of answer.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import {
  DEPLOYMENTS,
  RESOURCE_GROUP,
  RG_PATH,
  SERVER_ID,
  STORAGE_ID,
  SUBSCRIPTION,
  armError,
  azureSection,
  configuration,
  flexibleServer,
  healthyAzure,
  ok,
} from '../harness/azure/armFixtures.js';
import { CLIENT_ID, CLIENT_SECRET, FakeAzure, spawnCli, type RecordedRequest } from '../harness/azure/fakeAzure.js';
import { sql } from '../harness/db.js';
import { HOSPITAL_PLAN, hospitalScenario, type Scenario } from '../harness/scenario.js';

let s: Scenario;
let fake: FakeAzure;

beforeAll(async () => {
  s = await hospitalScenario('azurearm');
  await sql('source', s.dbs.source, 'CREATE EXTENSION citext; CREATE EXTENSION pgcrypto');
  fake = await FakeAzure.start();
});
afterAll(async () => {
  await fake?.close();
  await s?.drop();
});
beforeEach(() => fake.reset());

interface Report {
  ok: boolean;
  checks: Array<{ id: string; status: string; message: string; subject: string }>;
}

const plan = (extra = '') => `${HOSPITAL_PLAN}${azureSection(fake.url, extra)}`;

async function dryRun(planText: string, env: Record<string, string> = {}) {
  const r = await spawnCli(['dry-run', s.plan(planText, 'azure-plan.yaml'), '--format', 'json'], { ...s.env, ...fake.env(), ...env });
  let report: Report | undefined;
  try {
    report = JSON.parse(r.stdout) as Report;
  } catch {
    throw new Error(`dry-run printed no JSON (exit ${r.code}): ${r.stdout}\n${r.stderr}`);
  }
  return { ...r, report };
}

function check(report: Report, id: string) {
  const found = report.checks.filter((c) => c.id === id);
  expect(found, `check ${id}`).toHaveLength(1);
  return found[0]!;
}

const line = (r: RecordedRequest) => `${r.method} ${r.path}?${new URLSearchParams(r.query).toString()}`;
const detail = (code: string, status: number, r: RecordedRequest) => `(ARM error ${code}, HTTP ${status}, request id ${r.requestId})`;

describe('cloudshift dry-run: Azure checks through ARM', () => {
  it('reads the resource group, storage account, flexible server and its parameters with GETs only', async () => {
    healthyAzure(fake);
    const { code, report, stderr } = await dryRun(plan());
    expect(
      report.checks.filter((c) => c.status === 'fail'),
      stderr,
    ).toEqual([]);
    expect(code).toBe(0);

    // Exactly these ARM requests, each with an explicit api-version: nothing is created or changed.
    expect(fake.armRequests().map(line)).toEqual([
      `GET ${RG_PATH}?api-version=2025-04-01`,
      `GET ${STORAGE_ID}?api-version=2023-05-01`,
      `GET ${SERVER_ID}?api-version=2024-08-01`,
      `GET ${SERVER_ID}/configurations/wal_level?api-version=2024-08-01`,
      `GET ${SERVER_ID}/configurations/require_secure_transport?api-version=2024-08-01`,
      `GET ${SERVER_ID}/configurations/azure.extensions?api-version=2024-08-01`,
    ]);
    // One token, from the client credentials in the environment, for the ARM endpoint's scope.
    const tokens = fake.tokenRequests();
    expect(tokens).toHaveLength(1);
    expect(Object.fromEntries(['grant_type', 'client_id', 'client_secret', 'scope'].map((k) => [k, tokens[0]!.form.get(k)]))).toEqual({
      grant_type: 'client_credentials',
      client_id: CLIENT_ID,
      client_secret: CLIENT_SECRET,
      scope: `${fake.url}/.default`,
    });
    for (const r of fake.armRequests()) expect(r.headers['authorization']).toBe(`Bearer ${fake.tokens[0]!.token}`);

    expect(check(report, 'azure.connect').message).toBe(
      `Azure Resource Manager at ${fake.url} answered for subscription 0b1f6471-1bf0-4dda-aec3-cb9272f09590`,
    );
    expect(check(report, 'azure.resource_group').message).toBe('resource group rg-ehr-migration exists in uksouth');
    expect(check(report, 'azure.storage_account').message).toBe('storage account ehrdocs exists in uksouth');
    expect(check(report, 'azure.storage_tls').message).toBe('minimum TLS version is TLS 1.2');
    expect(check(report, 'azure.storage_https').message).toBe('secure transfer is required (HTTPS only)');
    expect(check(report, 'azure.storage_public_access').message).toBe('anonymous public access to blobs is off');
    expect(check(report, 'azure.postgres_server').message).toBe(
      'flexible server ehr-pg exists (uksouth, ehr-pg.postgres.database.azure.com)',
    );
    expect(check(report, 'azure.postgres_version').message).toBe('PostgreSQL 17 on the server, 15 on the source');
    expect(check(report, 'azure.wal_level').message).toBe('wal_level is logical: reverse replication for a rollback can start');
    expect(check(report, 'azure.require_secure_transport').message).toBe('require_secure_transport is on: only TLS connections');
    expect(check(report, 'azure.extensions').message).toBe('azure.extensions allows every extension the source uses: citext, pgcrypto');
    expect(check(report, 'azure.storage_size')).toMatchObject({ status: 'pass' });
    expect(check(report, 'azure.storage_size').message).toMatch(
      /^estimated table data [\d.]+ kB of 128 GB storage \(0\.0 %; indexes and WAL need more\)\. Documents go to Blob Storage and are not counted\.$/,
    );
    // The harness's target is on 127.0.0.1 without TLS: both are said, as warnings.
    expect(check(report, 'azure.postgres_host')).toMatchObject({
      status: 'warn',
      message: `target.postgres connects to 127.0.0.1, not to this server's host ehr-pg.postgres.database.azure.com: the Azure checks are about ehr-pg.postgres.database.azure.com, the data goes to 127.0.0.1`,
    });
    expect(check(report, 'azure.postgres_sslmode').status).toBe('warn');
  });

  it('fails a misconfigured environment with the fix spelled out, exit 1', async () => {
    healthyAzure(fake, {
      storage: { minimumTlsVersion: 'TLS1_0', supportsHttpsTrafficOnly: false, allowBlobPublicAccess: true },
      server: { version: '14', storageSizeGB: 0 },
      parameters: { wal_level: 'replica', require_secure_transport: 'off', 'azure.extensions': 'pgcrypto' },
    });
    const { code, report } = await dryRun(plan());
    expect(code).toBe(1);
    expect(report.ok).toBe(false);
    const update = 'az storage account update --resource-group rg-ehr-migration --name ehrdocs';
    const set = 'az postgres flexible-server parameter set --resource-group rg-ehr-migration --server-name ehr-pg';
    expect(check(report, 'azure.storage_tls')).toMatchObject({
      status: 'fail',
      message: `minimum TLS version is TLS1_0; documents need TLS 1.2 or later: ${update} --min-tls-version TLS1_2`,
    });
    expect(check(report, 'azure.storage_https')).toMatchObject({
      status: 'fail',
      message: `secure transfer is not required: the account accepts plain HTTP: ${update} --https-only true`,
    });
    expect(check(report, 'azure.storage_public_access')).toMatchObject({
      status: 'warn',
      message: `anonymous public access to blobs is allowed on the account: a container could expose documents; turn it off: ${update} --allow-blob-public-access false`,
    });
    expect(check(report, 'azure.postgres_version')).toMatchObject({
      status: 'warn',
      message:
        "the server runs PostgreSQL 14, older than the source's 15: features the source uses may be missing; choose version 15 or later",
    });
    expect(check(report, 'azure.wal_level')).toMatchObject({
      status: 'fail',
      message: `wal_level is replica: a rollback replicates back from the target, which needs logical. Fix: ${set} --name wal_level --value logical, then az postgres flexible-server restart --resource-group rg-ehr-migration --name ehr-pg`,
    });
    expect(check(report, 'azure.require_secure_transport')).toMatchObject({
      status: 'warn',
      message: `require_secure_transport is off: the server accepts unencrypted connections; turn it on: ${set} --name require_secure_transport --value on`,
    });
    expect(check(report, 'azure.extensions')).toMatchObject({
      status: 'fail',
      message: `extension used on the source but not allowed by azure.extensions: citext. Fix: ${set} --name azure.extensions --value pgcrypto,citext`,
    });
    expect(check(report, 'azure.storage_size')).toMatchObject({ status: 'fail' });
    expect(check(report, 'azure.storage_size').message).toMatch(
      /: the data does not fit and storage auto-grow is off: raise the storage size\./,
    );
  });

  it('wal_level: a warning without live sync, and a restart still pending', async () => {
    healthyAzure(fake, { parameters: { wal_level: 'replica' } });
    const noSync = await dryRun(plan().replace('sync: { mode: logical }\n', ''));
    expect(check(noSync.report, 'azure.wal_level').status).toBe('warn');
    expect(noSync.code).toBe(0);

    fake.reset();
    healthyAzure(fake);
    fake.on('GET', `${SERVER_ID}/configurations/wal_level`, ok(configuration('wal_level', 'logical', true)));
    const pending = await dryRun(plan());
    expect(check(pending.report, 'azure.wal_level')).toMatchObject({
      status: 'warn',
      message:
        'wal_level is set to logical but takes effect only after a restart: az postgres flexible-server restart --resource-group rg-ehr-migration --name ehr-pg',
    });
  });

  it('a missing resource group or resource is a failed check naming the ARM code, status and request id', async () => {
    healthyAzure(fake);
    fake.on('GET', RG_PATH, armError(404, 'ResourceGroupNotFound', "Resource group 'rg-ehr-migration' could not be found."));
    fake.on(
      'GET',
      STORAGE_ID,
      armError(
        404,
        'ResourceNotFound',
        "The Resource 'Microsoft.Storage/storageAccounts/ehrdocs' under resource group 'rg-ehr-migration' was not found.",
      ),
    );
    const { code, report } = await dryRun(plan());
    expect(code).toBe(1);
    const [rg, storage] = fake.armRequests();
    expect(check(report, 'azure.connect').status).toBe('pass');
    expect(check(report, 'azure.resource_group')).toMatchObject({
      status: 'fail',
      message: `reading resource group rg-ehr-migration: Resource group 'rg-ehr-migration' could not be found. ${detail('ResourceGroupNotFound', 404, rg!)}`,
    });
    expect(check(report, 'azure.storage_account')).toMatchObject({
      status: 'fail',
      message: `reading storage account ehrdocs: The Resource 'Microsoft.Storage/storageAccounts/ehrdocs' under resource group 'rg-ehr-migration' was not found. ${detail('ResourceNotFound', 404, storage!)}`,
    });
    expect(report.checks.some((c) => c.id === 'azure.storage_tls')).toBe(false);
    // The server is still checked.
    expect(check(report, 'azure.postgres_server').status).toBe('pass');
  });

  it('retries a 429 after its Retry-After, then passes', async () => {
    healthyAzure(fake);
    fake.on(
      'GET',
      SERVER_ID,
      armError(429, 'TooManyRequests', 'Too many requests, retry later.', { 'retry-after': '1' }),
      ok(flexibleServer()),
    );
    const { code, report } = await dryRun(plan());
    expect(code).toBe(0);
    expect(check(report, 'azure.postgres_server').status).toBe('pass');
    const gets = fake.armRequests().filter((r) => r.path === SERVER_ID);
    expect(gets).toHaveLength(2);
    expect(gets[1]!.at - gets[0]!.at).toBeGreaterThanOrEqual(900);
  });

  it('credentials Entra ID refuses: exit 3, the Entra code and trace id, and no ARM request', async () => {
    healthyAzure(fake);
    const { code, report, stdout, stderr } = await dryRun(plan(), { AZURE_CLIENT_SECRET: 'a-wrong-secret' });
    expect(code).toBe(3);
    const token = fake.tokenRequests()[0]!;
    expect(check(report, 'azure.connect')).toMatchObject({
      status: 'fail',
      message: `reading resource group rg-ehr-migration: Microsoft Entra ID refused the credentials: AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '${CLIENT_ID}'. (Entra ID error invalid_client, no HTTP status, trace id trace-${token.requestId})`,
    });
    expect(fake.armRequests()).toEqual([]);
    expect(report.checks.filter((c) => c.id.startsWith('azure.')).map((c) => c.id)).toEqual(['azure.connect']);
    expect(stdout + stderr).not.toContain('a-wrong-secret');
  });

  it('403 from ARM: exit 3 with the ARM code, and the other reads are not attempted', async () => {
    healthyAzure(fake);
    fake.on(
      'GET',
      RG_PATH,
      armError(
        403,
        'AuthorizationFailed',
        `The client '${CLIENT_ID}' does not have authorization to perform action 'Microsoft.Resources/subscriptions/resourcegroups/read'.`,
      ),
    );
    const { code, report } = await dryRun(plan());
    expect(code).toBe(3);
    const [rg] = fake.armRequests();
    expect(fake.armRequests()).toHaveLength(1);
    expect(check(report, 'azure.connect').message).toContain(detail('AuthorizationFailed', 403, rg!));
  });
});

describe('cloudshift provision', () => {
  const template = readFileSync('plans/azure/target.json', 'utf8');
  const name = 'cloudshift-hospital';
  const provisionPlan = () => {
    s.plan(template, 'target.json');
    return s.plan(plan('  template: target.json\n'), 'provision.yaml');
  };
  const provision = (args: string[]) => spawnCli(['provision', provisionPlan(), ...args], { ...s.env, ...fake.env() });

  const whatIfResult = {
    status: 'Succeeded',
    properties: {
      changes: [
        {
          resourceId: STORAGE_ID,
          changeType: 'Create',
          after: { name: 'ehrdocs', properties: { minimumTlsVersion: 'TLS1_2' } },
        },
        {
          resourceId: SERVER_ID,
          changeType: 'Modify',
          before: {},
          after: {},
          delta: [
            { path: 'properties.storage.storageSizeGB', propertyChangeType: 'Modify', before: 64, after: 128 },
            { path: 'properties.authConfig.passwordAuth', propertyChangeType: 'Modify', before: 'Enabled', after: 'Disabled' },
            { path: 'tags.owner', propertyChangeType: 'Create', after: 'trust' },
          ],
        },
        { resourceId: `${SERVER_ID}/configurations/wal_level`, changeType: 'NoChange' },
      ],
    },
  };

  it('--what-if posts the template and its parameters, polls the long-running operation, and prints the changes', async () => {
    const op = `${fake.url}/operations/whatif-1?api-version=2025-04-01`;
    fake.on('POST', `${DEPLOYMENTS}/${name}/whatIf`, { status: 202, headers: { location: op, 'retry-after': '1' } });
    fake.on('GET', '/operations/whatif-1', { status: 202, headers: { location: op, 'retry-after': '1' } }, ok(whatIfResult));
    const r = await provision(['--what-if']);
    expect(r.stderr).not.toMatch(/error/);
    expect(r.code).toBe(0);

    const [post, ...polls] = fake.armRequests();
    expect(line(post!)).toBe(`POST ${DEPLOYMENTS}/${name}/whatIf?api-version=2025-04-01`);
    expect(JSON.parse(post!.body)).toEqual({
      properties: {
        mode: 'Incremental',
        template: JSON.parse(template),
        parameters: { storageAccountName: { value: 'ehrdocs' }, postgresServerName: { value: 'ehr-pg' } },
      },
    });
    expect(polls.map(line)).toEqual(['GET /operations/whatif-1?api-version=2025-04-01', 'GET /operations/whatif-1?api-version=2025-04-01']);
    expect(polls[1]!.at - polls[0]!.at).toBeGreaterThanOrEqual(900); // the poll's Retry-After honoured

    expect(r.stdout).toBe(
      [
        `what-if: deployment ${name} of target.json in resource group rg-ehr-migration`,
        `+ Create      ${STORAGE_ID}`,
        `~ Modify      ${SERVER_ID}`,
        '    ~ properties.storage.storageSizeGB: 64 => 128',
        '    ~ properties.authConfig.passwordAuth: "Enabled" => "Disabled"',
        '    + tags.owner: "trust"',
        `= NoChange    ${SERVER_ID}/configurations/wal_level`,
        'changes: 1 to create, 1 to modify, 0 to delete, 1 unchanged',
        '',
      ].join('\n'),
    );
  });

  it('--what-if --format json: one document with stable field names', async () => {
    fake.on('POST', `${DEPLOYMENTS}/${name}/whatIf`, ok(whatIfResult));
    const r = await provision(['--what-if', '--format', 'json']);
    expect(r.code).toBe(0);
    const doc = JSON.parse(r.stdout) as Record<string, unknown>;
    expect(doc).toEqual({
      deployment: name,
      resourceGroup: 'rg-ehr-migration',
      template: 'target.json',
      status: 'Succeeded',
      changes: [
        { changeType: 'Create', resourceId: STORAGE_ID, delta: [] },
        {
          changeType: 'Modify',
          resourceId: SERVER_ID,
          delta: [
            { path: 'properties.storage.storageSizeGB', change: 'Modify', before: 64, after: 128, children: [] },
            { path: 'properties.authConfig.passwordAuth', change: 'Modify', before: 'Enabled', after: 'Disabled', children: [] },
            { path: 'tags.owner', change: 'Create', after: 'trust', children: [] },
          ],
        },
        { changeType: 'NoChange', resourceId: `${SERVER_ID}/configurations/wal_level`, delta: [] },
      ],
      diagnostics: [],
      summary: { Create: 1, Modify: 1, NoChange: 1 },
    });
  });

  it('--what-if of a template ARM rejects: exit 2 with the ARM code, status and request id (JSON error)', async () => {
    fake.on(
      'POST',
      `${DEPLOYMENTS}/${name}/whatIf`,
      armError(400, 'InvalidTemplate', "Deployment template validation failed: 'The template parameter 'skuName' is not valid.'."),
    );
    const r = await provision(['--what-if', '--format', 'json']);
    expect(r.code).toBe(2);
    const [post] = fake.armRequests();
    expect(JSON.parse(r.stdout)).toEqual({
      error: {
        code: 'CS_AZURE',
        message: `what-if of template target.json as deployment ${name} in resource group rg-ehr-migration: Deployment template validation failed: 'The template parameter 'skuName' is not valid.'. ${detail('InvalidTemplate', 400, post!)}`,
        hint: 'fix what Azure refused (see the message), then try again',
      },
    });
  });

  it('deploys: PUT, polls Azure-AsyncOperation until Succeeded, reads the deployment, with progress lines', async () => {
    const op = `${fake.url}/operations/deploy-1?api-version=2025-04-01`;
    const deployment = (state: string) => ({
      id: `${DEPLOYMENTS}/${name}`,
      name,
      properties: {
        provisioningState: state,
        correlationId: 'corr-42',
        outputResources: [{ id: STORAGE_ID }, { id: SERVER_ID }],
        outputs: { postgresHost: { type: 'String', value: 'ehr-pg.postgres.database.azure.com' } },
      },
    });
    fake.on('PUT', `${DEPLOYMENTS}/${name}`, {
      status: 201,
      body: deployment('Accepted'),
      headers: { 'azure-asyncoperation': op, 'retry-after': '0' },
    });
    fake.on('GET', '/operations/deploy-1', ok({ status: 'Running' }, { 'retry-after': '0' }), ok({ status: 'Succeeded' }));
    fake.on('GET', `${DEPLOYMENTS}/${name}`, ok(deployment('Succeeded')));
    const r = await provision([]);
    expect(r.stderr).not.toMatch(/error/);
    expect(r.code).toBe(0);
    const requests = fake.armRequests();
    expect(requests.map(line)).toEqual([
      `PUT ${DEPLOYMENTS}/${name}?api-version=2025-04-01`,
      'GET /operations/deploy-1?api-version=2025-04-01',
      'GET /operations/deploy-1?api-version=2025-04-01',
      `GET ${DEPLOYMENTS}/${name}?api-version=2025-04-01`,
    ]);
    expect(JSON.parse(requests[0]!.body)).toMatchObject({ properties: { mode: 'Incremental', template: JSON.parse(template) } });
    const progress = r.stderr.trim().split('\n');
    expect(progress[0]).toMatch(new RegExp(`^deployment ${name}: submitted \\(\\d+ s\\)$`));
    expect(progress.at(-1)).toMatch(new RegExp(`^deployment ${name}: succeeded \\(\\d+ s\\)$`));
    expect(r.stdout).toMatch(
      new RegExp(
        `^deployment ${name} of target.json in resource group rg-ehr-migration: Succeeded in \\d+ s\\n  ${STORAGE_ID}\\n  ${SERVER_ID}\\noutput postgresHost: "ehr-pg.postgres.database.azure.com"\\n$`,
      ),
    );
  });

  it('409 while another deployment of the same name runs: exit 4, with the ARM code, status and request id', async () => {
    fake.on(
      'PUT',
      `${DEPLOYMENTS}/${name}`,
      armError(
        409,
        'DeploymentActive',
        `Unable to edit or replace deployment '${name}': previous deployment from '1/1/2026 10:00:00 AM' is still active.`,
      ),
    );
    const r = await provision([]);
    expect(r.code).toBe(4);
    const [put] = fake.armRequests();
    expect(r.stderr).toBe(
      `error: deploying template target.json as deployment ${name} in resource group rg-ehr-migration: Unable to edit or replace deployment '${name}': previous deployment from '1/1/2026 10:00:00 AM' is still active. ${detail('DeploymentActive', 409, put!)}\nhint: another operation holds the resource: wait for it to finish, then try again\n`,
    );
  });

  it("a template ARM's validation refuses: its inner errors are shown, not just 'see inner errors'", async () => {
    fake.on('PUT', `${DEPLOYMENTS}/${name}`, {
      status: 400,
      body: {
        error: {
          code: 'InvalidTemplateDeployment',
          message: `The template deployment '${name}' is not valid according to the validation procedure. See inner errors for details.`,
          details: [{ code: 'StorageAccountAlreadyTaken', message: 'The storage account named ehrdocs is already taken.' }],
        },
      },
    });
    const r = await provision([]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(
      'See inner errors for details. (StorageAccountAlreadyTaken: The storage account named ehrdocs is already taken.) (ARM error InvalidTemplateDeployment, HTTP 400',
    );
  });

  it('a deployment that ends Failed: exit 1, with the deployment error, its details, and a request id', async () => {
    const op = `${fake.url}/operations/deploy-2?api-version=2025-04-01`;
    fake.on('PUT', `${DEPLOYMENTS}/${name}`, {
      status: 201,
      body: { name, properties: { provisioningState: 'Accepted' } },
      headers: { 'azure-asyncoperation': op, 'retry-after': '0' },
    });
    const error = {
      code: 'DeploymentFailed',
      message: 'At least one resource deployment operation failed.',
      details: [{ code: 'ServerNameAlreadyExists', message: 'Specified server name is already used.' }],
    };
    fake.on('GET', '/operations/deploy-2', ok({ status: 'Failed', error }));
    fake.on('GET', `${DEPLOYMENTS}/${name}`, ok({ name, properties: { provisioningState: 'Failed', correlationId: 'corr-7', error } }));
    const r = await provision([]);
    expect(r.code).toBe(1);
    const get = fake.armRequests().at(-1)!;
    expect(line(get)).toBe(`GET ${DEPLOYMENTS}/${name}?api-version=2025-04-01`);
    expect(r.stderr).toContain(
      `error: deploying template target.json as deployment ${name} in resource group rg-ehr-migration: the deployment ended Failed: At least one resource deployment operation failed. (ServerNameAlreadyExists: Specified server name is already used.); correlation id corr-7 (ARM error DeploymentFailed, HTTP 200, request id ${get.requestId})\n`,
    );
  });

  it('a plan without a template is a usage error, exit 2, before any request', async () => {
    const r = await spawnCli(['provision', s.plan(plan(), 'notemplate.yaml'), '--what-if'], { ...s.env, ...fake.env() });
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('the plan names no template (azure.template)');
    expect(fake.requests).toEqual([]);
  });
});

describe('cutover and rollback through the ARM switch', () => {
  const SETTINGS = `/subscriptions/${SUBSCRIPTION}/resourceGroups/${RESOURCE_GROUP}/providers/Microsoft.Web/sites/ehr-app/config/appsettings`;
  // Connection strings with passwords made up per run: they must never reach output or the state store.
  const TARGET_PASSWORD = randomBytes(9).toString('hex');
  const SOURCE_PASSWORD = randomBytes(9).toString('hex');
  const TARGET_VALUE = `postgres://ehr_app:${TARGET_PASSWORD}@ehr-pg.postgres.database.azure.com/ehr`;
  const SOURCE_VALUE = `postgres://ehr_app:${SOURCE_PASSWORD}@10.0.0.5/ehr`;

  it(
    'sets the app setting to the target at cutover and back at rollback, keeping the other settings, never showing the values',
    { timeout: 120_000 },
    async () => {
      let properties: Record<string, string> = { EHR_DATABASE_URL: SOURCE_VALUE, FEATURE_FLAGS: 'letters,scans' };
      const resource = () => ({ id: SETTINGS, name: 'appsettings', type: 'Microsoft.Web/sites/config', properties });
      // As App Service: the values are read through the list action; the PUT replaces them all.
      fake.on('POST', `${SETTINGS}/list`, () => ok(resource()));
      fake.on('PUT', SETTINGS, (req) => {
        properties = (JSON.parse(req.body) as { properties: Record<string, string> }).properties;
        return ok(resource());
      });
      const file = s.plan(
        `${HOSPITAL_PLAN}${azureSection(fake.url)}cutover:
  switch:
    arm:
      resource: ${SETTINGS}
      apiVersion: "2023-12-01"
      property: properties.EHR_DATABASE_URL
      target: "\${env:APP_TARGET_URL}"
      source: "\${env:APP_SOURCE_URL}"
  # The test servers are shared: another file's long transaction (a 300 MB insert takes 3 s, the
  # cutover tests hold one for 8 s) delays the slot made inside the pause, which waits for them.
  maxPause: 10s
`,
        'arm-switch.yaml',
      );
      const env = { ...s.env, ...fake.env(), APP_TARGET_URL: TARGET_VALUE, APP_SOURCE_URL: SOURCE_VALUE };
      healthyAzure(fake);
      // A setting holding neither value (a wrong property name, say): the resource is not to be written back.
      properties = { DATABASE_URL: SOURCE_VALUE, FEATURE_FLAGS: 'letters,scans' };
      const wrong = await spawnCli(['dry-run', file, '--format', 'json'], env);
      expect((JSON.parse(wrong.stdout) as Report).checks.find((c) => c.id === 'switch.arm')).toMatchObject({
        status: 'fail',
        message: expect.stringMatching(/holds neither the plan's source nor its target value \(not shown\): cutover would refuse/),
      });
      properties = { EHR_DATABASE_URL: SOURCE_VALUE, FEATURE_FLAGS: 'letters,scans' };
      const dry = await spawnCli(['dry-run', file, '--format', 'json'], env);
      const armCheck = (JSON.parse(dry.stdout) as Report).checks.find((c) => c.id === 'switch.arm');
      expect(armCheck).toMatchObject({ status: 'pass', message: expect.stringMatching(/holds the source's value/) });
      expect(dry.stdout).not.toContain(SOURCE_PASSWORD);
      expect((await spawnCli(['run', file, '--until', 'synced'], env)).code).toBe(0);

      const cut = await spawnCli(['cutover', file, '--json'], env);
      expect(cut.code, cut.stderr).toBe(0);
      const json = JSON.parse(cut.stdout) as { switched: boolean; pauseMs: number };
      expect(json.switched).toBe(true);
      expect(properties).toEqual({ EHR_DATABASE_URL: TARGET_VALUE, FEATURE_FLAGS: 'letters,scans' });
      const puts = fake.armRequests().filter((r) => r.method === 'PUT');
      expect(puts.map(line)).toEqual([`PUT ${SETTINGS}?api-version=2023-12-01`]);
      // The source is fenced for the application: it reconnects to the target rather than waits.
      await expect(sql('source', s.dbs.source, `UPDATE public.patients SET family_name = 'x' WHERE id = 1`)).rejects.toMatchObject({
        code: '25006',
      });

      const back = await spawnCli(['rollback', file, '--json'], env);
      expect(back.code, back.stdout + back.stderr).toBe(0);
      expect(properties.EHR_DATABASE_URL).toBe(SOURCE_VALUE);
      for (const out of [cut.stdout, cut.stderr, back.stdout, back.stderr]) {
        expect(out).not.toContain(TARGET_PASSWORD);
        expect(out).not.toContain(SOURCE_PASSWORD);
      }
      const leaked = await sql('target', s.dbs.target, `SELECT 1 FROM cloudshift.events WHERE details::text ~ $1 OR message ~ $1`, [
        `${TARGET_PASSWORD}|${SOURCE_PASSWORD}`,
      ]);
      expect(leaked).toEqual([]);
      const switches = await sql('target', s.dbs.target, `SELECT 1 FROM cloudshift.switches WHERE details::text ~ $1`, [
        `${TARGET_PASSWORD}|${SOURCE_PASSWORD}`,
      ]);
      expect(switches).toEqual([]);
      await spawnCli(['cleanup', file], env);
    },
  );
});
