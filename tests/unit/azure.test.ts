import { AggregateAuthenticationError, AuthenticationError, CredentialUnavailableError } from '@azure/identity';
import { describe, expect, it } from 'vitest';
import { credentialOptions, isKnownAuthorityHost } from '../../src/azure/credential.js';
import { AzureError, azureError } from '../../src/azure/errors.js';
import { pgAuthOf, pgConnectionString, refreshTime, withPassword } from '../../src/azure/pgToken.js';
import { renderWhatIf, summaryText } from '../../src/cli/render/whatIf.js';
import { ExitCode, UsageError } from '../../src/errors.js';
import { applyDefaults } from '../../src/plan/defaults.js';
import { loadPlan, validatePlanText } from '../../src/plan/parse.js';

const SUB = '0b1f6471-1bf0-4dda-aec3-cb9272f09590';
const base = `version: 1
name: ehr
source: { postgres: "\${env:SOURCE_DATABASE_URL}" }
target: { postgres: "\${env:TARGET_DATABASE_URL}" }
tables:
  - name: public.patients
`;
const withAzure = (azure: string) => `${base}azure:\n${azure}`;

function problems(text: string) {
  return validatePlanText(text).problems.map((p) => `${p.line}:${p.column} ${p.path}: ${p.message}`);
}

describe('plan: the azure section', () => {
  it('the example plan validates and names full resource ids', async () => {
    const loaded = await loadPlan('plans/azure.yaml');
    expect(loaded.plan.azure).toEqual({
      subscriptionId: '00000000-0000-0000-0000-000000000000',
      resourceGroup: 'rg-ehr-migration',
      storageAccount: {
        id: '/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg-ehr-migration/providers/Microsoft.Storage/storageAccounts/ehrdocs',
        subscriptionId: '00000000-0000-0000-0000-000000000000',
        resourceGroup: 'rg-ehr-migration',
        name: 'ehrdocs',
      },
      postgresServer: {
        id: '/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg-ehr-migration/providers/Microsoft.DBforPostgreSQL/flexibleServers/ehr-pg',
        subscriptionId: '00000000-0000-0000-0000-000000000000',
        resourceGroup: 'rg-ehr-migration',
        name: 'ehr-pg',
      },
      template: 'azure/target.json',
      resourceManagerEndpoint: 'https://management.azure.com',
      authorityHost: undefined,
    });
  });

  it('keeps a full resource id (another group) and trims endpoint slashes', () => {
    const serverId = `/subscriptions/${SUB}/resourceGroups/rg-db/providers/Microsoft.DBforPostgreSQL/flexibleServers/pg-one`;
    const r = validatePlanText(
      withAzure(`  subscriptionId: ${SUB}
  resourceGroup: rg-app
  postgresServer: ${serverId}
  resourceManagerEndpoint: https://management.usgovcloudapi.net/
  authorityHost: https://login.microsoftonline.us/
`),
    );
    expect(r.problems).toEqual([]);
    if (!r.valid) return;
    const azure = applyDefaults(r.input).azure!;
    expect(azure.postgresServer).toEqual({ id: serverId, subscriptionId: SUB, resourceGroup: 'rg-db', name: 'pg-one' });
    expect(azure.storageAccount).toBeUndefined();
    expect(azure.resourceManagerEndpoint).toBe('https://management.usgovcloudapi.net');
    expect(azure.authorityHost).toBe('https://login.microsoftonline.us');
  });

  it('reports every bad value with its position', () => {
    expect(
      problems(
        withAzure(`  subscriptionId: not-a-guid
  resourceGroup: rg.
  storageAccount: Ehr_Docs
  postgresServer: /subscriptions/${SUB}/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/ehrdocs
  template: target.bicep
  resourceManagerEndpoint: http://localhost:8080
`),
      ),
    ).toEqual([
      '8:19 azure.subscriptionId: must be a subscription id (a GUID such as 00000000-0000-0000-0000-000000000000), got the string "not-a-guid"',
      '9:18 azure.resourceGroup: must be a resource group name: 1 to 90 letters, digits, _ - . ( ), not ending with a period, got the string "rg."',
      '10:19 azure.storageAccount: must be a storage account name (3 to 24 lower-case letters and digits) or its resource id "/subscriptions/<subscription>/resourceGroups/<group>/providers/Microsoft.Storage/storageAccounts/<name>", got the string "Ehr_Docs"',
      '11:19 azure.postgresServer: must be a PostgreSQL flexible server name (3 to 63 lower-case letters, digits and hyphens) or its resource id "/subscriptions/<subscription>/resourceGroups/<group>/providers/Microsoft.DBforPostgreSQL/flexibleServers/<name>", got the string "/subscriptions/0b1f6471-1bf0-4dda-aec3-c…"',
      '12:13 azure.template: must be the path of an ARM JSON template ending in .json (compile Bicep with `az bicep build` first), got the string "target.bicep"',
      '13:28 azure.resourceManagerEndpoint: must be an https:// URL, got the string "http://localhost:8080"',
    ]);
  });

  it('a plan with documents names their storage account', () => {
    const text = `version: 1
name: ehr
source: { postgres: "\${env:SOURCE_DATABASE_URL}" }
target:
  postgres: "\${env:TARGET_DATABASE_URL}"
  blob: { account: ehrdocs, container: documents }
documents:
  - { table: public.documents, content: content, blob: "{id}", keep: { column: blob_path } }
azure: { subscriptionId: ${SUB}, resourceGroup: rg, postgresServer: ehr-pg }
`;
    expect(problems(text)).toEqual([
      '9:8 azure: the plan has documents: name their storage account in `azure.storageAccount` so the dry run can check it',
    ]);
  });
});

describe('Entra ID connection strings', () => {
  it('cloudshift_auth is removed wherever it stands, the rest untouched', () => {
    const cases: Array<[string, string]> = [
      ['postgres://u@h/db?cloudshift_auth=entra', 'postgres://u@h/db'],
      ['postgres://u@h/db?cloudshift_auth=entra&sslmode=verify-full', 'postgres://u@h/db?sslmode=verify-full'],
      ['postgres://u@h/db?sslmode=verify-full&cloudshift_auth=entra', 'postgres://u@h/db?sslmode=verify-full'],
      [
        'postgres://u@h/db?sslmode=verify-full&cloudshift_auth=entra&sslrootcert=/ca.pem',
        'postgres://u@h/db?sslmode=verify-full&sslrootcert=/ca.pem',
      ],
    ];
    for (const [input, stripped] of cases) expect(pgAuthOf(input)).toEqual({ kind: 'entra', connectionString: stripped });
    expect(pgAuthOf('postgres://u:p@h/db?sslmode=require')).toEqual({
      kind: 'password',
      connectionString: 'postgres://u:p@h/db?sslmode=require',
    });
    expect(() => pgAuthOf('postgres://u@h/db?cloudshift_auth=aad')).toThrow(UsageError);
    expect(() => pgAuthOf('postgres://u@h/db?cloudshift_auth=aad')).toThrow('cloudshift_auth must be "entra" or "password", got "aad"');
  });

  it('the token becomes the URL-encoded password; a password or a missing user is refused', () => {
    expect(withPassword('postgres://mi%40contoso@h:5432/db?sslmode=verify-full', 'a/b+c=')).toBe(
      'postgres://mi%40contoso:a%2Fb%2Bc%3D@h:5432/db?sslmode=verify-full',
    );
    expect(() => withPassword('postgres://u:secret@h/db', 't')).toThrow('must not hold a password');
    expect(() => withPassword('postgres://h/db', 't')).toThrow('must be a URL naming the Entra ID user');
    expect(() => withPassword('host=h user=u', 't')).toThrow('must be a URL naming the Entra ID user');
  });

  it('asks the credential for the Azure Database for PostgreSQL scope, and maps its refusal', async () => {
    const scopes: string[] = [];
    const got = await pgConnectionString('postgres://u@h/db?cloudshift_auth=entra&sslmode=verify-full', {
      credential: {
        getToken: async (scope) => {
          scopes.push(String(scope));
          return { token: 'tok', expiresOnTimestamp: Date.now() + 3_600_000 };
        },
      },
    });
    expect(scopes).toEqual(['https://ossrdbms-aad.database.windows.net/.default']);
    expect(got.connectionString).toBe('postgres://u:tok@h/db?sslmode=verify-full');
    const failing = {
      getToken: () => Promise.reject(new CredentialUnavailableError('ManagedIdentityCredential: no managed identity endpoint found')),
    };
    const err = await pgConnectionString('postgres://u@h/db?cloudshift_auth=entra', { credential: failing }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(AzureError);
    expect((err as AzureError).message).toBe(
      'getting a Microsoft Entra ID token for Azure Database for PostgreSQL: no Azure credential is available: ManagedIdentityCredential: no managed identity endpoint found',
    );
    expect((err as AzureError).exitCode).toBe(ExitCode.precondition);
  });

  it('refreshes five minutes before expiry, or halfway through a short life, never in the past', () => {
    const now = 1_000_000;
    expect(refreshTime({ token: 't', expiresOnTimestamp: now + 3_600_000 }, now)).toBe(now + 3_300_000);
    expect(refreshTime({ token: 't', expiresOnTimestamp: now + 10_000 }, now)).toBe(now + 5_000);
    expect(refreshTime({ token: 't', expiresOnTimestamp: now - 10_000 }, now)).toBe(now + 1_000);
    expect(refreshTime({ token: 't', expiresOnTimestamp: now + 3_600_000, refreshAfterTimestamp: now + 1_800_000 }, now)).toBe(
      now + 1_800_000,
    );
  });
});

describe('credentials', () => {
  it('turns instance discovery off only for authority hosts Microsoft does not know', () => {
    expect(credentialOptions({})).toEqual({});
    expect(credentialOptions({ env: { AZURE_AUTHORITY_HOST: 'https://127.0.0.1:8443' } })).toEqual({
      authorityHost: 'https://127.0.0.1:8443',
      disableInstanceDiscovery: true,
    });
    expect(credentialOptions({ authorityHost: 'https://login.microsoftonline.us', env: { AZURE_AUTHORITY_HOST: 'https://x' } })).toEqual({
      authorityHost: 'https://login.microsoftonline.us',
      disableInstanceDiscovery: false,
    });
    expect(isKnownAuthorityHost('https://login.chinacloudapi.cn/')).toBe(true);
    expect(isKnownAuthorityHost('not a url')).toBe(false);
  });
});

function restError(message: string, fields: { code?: string; statusCode?: number; requestId?: string; body?: string }) {
  return Object.assign(new Error(message), {
    name: 'RestError',
    code: fields.code,
    statusCode: fields.statusCode,
    response:
      fields.statusCode === undefined
        ? undefined
        : { headers: { get: (n: string) => (n === 'x-ms-request-id' ? fields.requestId : undefined) }, bodyAsText: fields.body ?? null },
  });
}

describe('Azure errors name the code, the HTTP status and the request id', () => {
  it('ARM answers, by status', () => {
    const cases: Array<[number, string, number, boolean]> = [
      [404, 'not-found', ExitCode.precondition, true],
      [409, 'conflict', ExitCode.conflict, true],
      [400, 'rejected', ExitCode.invalid, true],
      [403, 'forbidden', ExitCode.precondition, false],
      [429, 'unreachable', ExitCode.precondition, false],
      [503, 'unreachable', ExitCode.precondition, false],
    ];
    for (const [status, failure, exit, answered] of cases) {
      const e = azureError(
        restError('Something happened.', { code: 'SomeCode', statusCode: status, requestId: 'rid-1' }),
        'reading x',
        'https://arm',
      );
      expect(e).toMatchObject({ failure, exitCode: exit, azureCode: 'SomeCode', status, requestId: 'rid-1', answered });
      expect(e.message).toBe(`reading x: Something happened. (ARM error SomeCode, HTTP ${status}, request id rid-1)`);
    }
  });

  it('takes the code and message from the body when the client did not parse them', () => {
    const e = azureError(
      restError('Operation returned an invalid status code', {
        statusCode: 404,
        requestId: 'rid-2',
        body: '{"error":{"code":"ResourceNotFound","message":"Not there."}}',
      }),
      'reading y',
      'https://arm',
    );
    expect(e.message).toBe('reading y: Not there. (ARM error ResourceNotFound, HTTP 404, request id rid-2)');
  });

  it("brings ARM's inner errors up when its message points to them", () => {
    const body = {
      error: {
        code: 'InvalidTemplateDeployment',
        message: "The template deployment 'd' is not valid according to the validation procedure. See inner errors for details.",
        details: [
          {
            code: 'PreflightValidationCheckFailed',
            message: 'Preflight validation failed.',
            details: [{ code: 'StorageAccountAlreadyTaken', message: 'The storage account named ehrdocs is already taken.' }],
          },
        ],
      },
    };
    const e = azureError(restError('x', { statusCode: 400, requestId: 'rid-3', body: JSON.stringify(body) }), 'deploying', 'https://arm');
    expect(e.message).toBe(
      "deploying: The template deployment 'd' is not valid according to the validation procedure. See inner errors for details. (PreflightValidationCheckFailed: Preflight validation failed.; StorageAccountAlreadyTaken: The storage account named ehrdocs is already taken.) (ARM error InvalidTemplateDeployment, HTTP 400, request id rid-3)",
    );
  });

  it('no answer at all: unreachable, with the endpoint', () => {
    const e = azureError(restError('connect ECONNREFUSED 127.0.0.1:1', { code: 'ECONNREFUSED' }), 'reading z', 'https://127.0.0.1:1');
    expect(e.message).toBe(
      'reading z: cannot reach https://127.0.0.1:1: connect ECONNREFUSED 127.0.0.1:1 (ARM error ECONNREFUSED, no HTTP status, request id none)',
    );
    expect(e.answered).toBe(false);
  });

  it('Entra ID refusals as DefaultAzureCredential reports them', () => {
    const wrapped = new AuthenticationError(400, {
      error:
        'EnvironmentCredential authentication failed. To troubleshoot, visit https://aka.ms/azsdk/js/identity/environmentcredential/troubleshoot.',
      error_description:
        'invalid_client: Error(s): 7000215 - Timestamp: 2026-01-01 - Description: AADSTS7000215: Invalid client secret provided. - Correlation ID: c-1 - Trace ID: t-1',
    });
    const e = azureError(wrapped, 'reading rg', 'https://arm');
    expect(e.message).toBe(
      'reading rg: Microsoft Entra ID refused the credentials: AADSTS7000215: Invalid client secret provided. (Entra ID error invalid_client, no HTTP status, trace id t-1)',
    );
    expect(e).toMatchObject({ failure: 'credential', exitCode: ExitCode.precondition });
    const direct = new AuthenticationError(401, {
      error: 'unauthorized_client',
      error_description: 'AADSTS700016: Application not found.',
      trace_id: 't-2',
    });
    expect(azureError(direct, 'x', 'y').message).toBe(
      'x: Microsoft Entra ID refused the credentials: AADSTS700016: Application not found. (Entra ID error unauthorized_client, HTTP 401, trace id t-2)',
    );
    const none = new AggregateAuthenticationError(
      [
        new CredentialUnavailableError('EnvironmentCredential is unavailable.'),
        new CredentialUnavailableError("AzureCliCredential: Please run 'az login' to set up an account."),
      ],
      'all failed',
    );
    // Each says why it could not: the one that matters (an expired `az login`) among them.
    expect(azureError(none, 'x', 'y').message).toBe(
      "x: no Azure credential is available: EnvironmentCredential is unavailable.; AzureCliCredential: Please run 'az login' to set up an account.",
    );
  });
});

describe('provision --what-if rendering', () => {
  it('shows nested property changes and a summary', () => {
    const text = renderWhatIf(
      {
        deployment: 'cloudshift-ehr',
        resourceGroup: 'rg',
        template: 'azure/target.json',
        status: 'Succeeded',
        changes: [
          {
            changeType: 'Modify',
            resourceId: '/x/storageAccounts/a',
            delta: [
              {
                path: 'properties.networkAcls.ipRules',
                change: 'Array',
                children: [
                  { path: '0', change: 'Delete', before: { value: '10.0.0.1' }, children: [] },
                  { path: '1', change: 'Create', after: { value: '10.0.0.2' }, children: [] },
                ],
              },
            ],
          },
          { changeType: 'Delete', resourceId: '/x/containers/old', delta: [] },
          { changeType: 'Unsupported', resourceId: '/x/y', unsupportedReason: 'cannot evaluate reference()', delta: [] },
        ],
        diagnostics: [{ level: 'Warning', code: 'NestedDeploymentShortCircuited', message: 'a nested deployment was skipped' }],
        summary: { Modify: 1, Delete: 1, Unsupported: 1 },
      },
      'text',
    );
    expect(text).toBe(
      [
        'what-if: deployment cloudshift-ehr of azure/target.json in resource group rg',
        '~ Modify      /x/storageAccounts/a',
        '    ~ properties.networkAcls.ipRules: (list)',
        '        - 0: {"value":"10.0.0.1"}',
        '        + 1: {"value":"10.0.0.2"}',
        '- Delete      /x/containers/old',
        '? Unsupported /x/y: cannot evaluate reference()',
        'warning: NestedDeploymentShortCircuited: a nested deployment was skipped',
        'changes: 0 to create, 1 to modify, 1 to delete, 1 unsupported',
        '',
      ].join('\n'),
    );
    expect(summaryText({})).toBe('0 to create, 0 to modify, 0 to delete');
  });
});
