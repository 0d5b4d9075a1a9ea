/**
 * The dry run's Azure checks, through Azure Resource Manager and strictly read-only (GETs only):
 * the resource group, the storage account's transport and access settings, and the PostgreSQL
 * flexible server's version, server parameters and storage. Every message built from an ARM
 * error carries its code, HTTP status and request id (azure/errors.ts).
 */
import type { TokenCredential } from '../azure/credential.js';
import { createAzureCredential } from '../azure/credential.js';
import { createArmClients } from '../azure/arm.js';
import { AzureError } from '../azure/errors.js';
import { pgAuthOf } from '../azure/pgToken.js';
import {
  getFlexibleServer,
  getResourceGroup,
  getServerParameter,
  getStorageAccount,
  type FlexibleServerFacts,
  type ReadOptions,
  type ServerParameterFacts,
} from '../azure/resources.js';
import type { AzurePlan, Plan } from '../plan/defaults.js';
import type { Env } from '../plan/secrets.js';
import { endpointOf } from '../pg/connect.js';
import { formatBytes } from './format.js';
import type { SourceFacts } from './sourceChecks.js';
import type { CheckList, Estimate } from './types.js';

export interface AzureCheckOptions {
  env: Env;
  /** The resolved target connection string: only its host, sslmode and auth are read. */
  targetConnectionString: string | undefined;
  /** Bound for each ARM read, retries included. */
  timeoutMs: number;
  /** Default: DefaultAzureCredential with the plan's authority host. */
  credential?: TokenCredential;
}

const GB = 1024 ** 3;
/** Below this share of the server's storage, table data leaves room for indexes, WAL and growth. */
const HEADROOM_SHARE = 0.5;

/** Runs every Azure check; returns false when ARM could not be reached or refused us. */
export async function checkAzure(
  plan: Plan,
  azure: AzurePlan,
  facts: SourceFacts | null,
  estimate: Estimate,
  checks: CheckList,
  options: AzureCheckOptions,
): Promise<boolean> {
  const credential = options.credential ?? createAzureCredential({ authorityHost: azure.authorityHost, env: options.env });
  const arm = createArmClients(azure, credential);
  const read = (): ReadOptions => ({ abortSignal: AbortSignal.timeout(options.timeoutMs) });
  let reachable = true;
  const failed = (id: string, subject: string, err: unknown): void => {
    if (!(err instanceof AzureError)) throw err;
    if (!err.answered) reachable = false;
    checks.fail(id, subject, err.message);
  };

  const rgSubject = `resource group ${azure.resourceGroup}`;
  try {
    const rg = await getResourceGroup(arm, azure.resourceGroup, read());
    checks.pass('azure.connect', 'azure', `Azure Resource Manager at ${arm.endpoint} answered for subscription ${azure.subscriptionId}`);
    checks.pass('azure.resource_group', rgSubject, `resource group ${rg.name} exists in ${rg.location}`);
  } catch (err) {
    if (!(err instanceof AzureError)) throw err;
    if (!err.answered) {
      // No token, no network or no permission: every other read would fail the same way.
      checks.fail('azure.connect', 'azure', err.message);
      return false;
    }
    checks.pass('azure.connect', 'azure', `Azure Resource Manager at ${arm.endpoint} answered for subscription ${azure.subscriptionId}`);
    checks.fail('azure.resource_group', rgSubject, err.message);
  }

  if (azure.storageAccount) {
    const subject = `storage account ${azure.storageAccount.name}`;
    try {
      const account = await getStorageAccount(arm, azure.storageAccount, read());
      checks.pass('azure.storage_account', subject, `storage account ${azure.storageAccount.name} exists in ${account.location ?? '?'}`);
      checkStorageSettings(azure, account, subject, checks);
    } catch (err) {
      failed('azure.storage_account', subject, err);
    }
  }

  const server = azure.postgresServer;
  const subject = `flexible server ${server.name}`;
  let serverFacts: FlexibleServerFacts;
  try {
    serverFacts = await getFlexibleServer(arm, server, read());
  } catch (err) {
    failed('azure.postgres_server', subject, err);
    return reachable;
  }
  checkServer(plan, azure, serverFacts, facts, estimate, subject, options.targetConnectionString, checks);
  for (const [name, check] of PARAMETER_CHECKS) {
    try {
      check(await getServerParameter(arm, server, name, read()), { plan, azure, source: facts, subject, checks });
    } catch (err) {
      failed(PARAMETER_CHECK_IDS[name], subject, err);
    }
  }
  return reachable;
}

function checkStorageSettings(
  azure: AzurePlan,
  account: Awaited<ReturnType<typeof getStorageAccount>>,
  subject: string,
  checks: CheckList,
): void {
  const update = `az storage account update --resource-group ${azure.storageAccount!.resourceGroup} --name ${azure.storageAccount!.name}`;
  const tls = account.minimumTlsVersion;
  if (tls === 'TLS1_2' || tls === 'TLS1_3')
    checks.pass('azure.storage_tls', subject, `minimum TLS version is ${tls.replace('TLS1_', 'TLS 1.')}`);
  else
    checks.fail(
      'azure.storage_tls',
      subject,
      `minimum TLS version is ${tls ?? 'not set (the service then accepts TLS 1.0)'}; documents need TLS 1.2 or later: ${update} --min-tls-version TLS1_2`,
    );
  if (account.httpsOnly) checks.pass('azure.storage_https', subject, 'secure transfer is required (HTTPS only)');
  else
    checks.fail(
      'azure.storage_https',
      subject,
      `secure transfer is not required: the account accepts plain HTTP: ${update} --https-only true`,
    );
  if (account.allowBlobPublicAccess)
    checks.warn(
      'azure.storage_public_access',
      subject,
      `anonymous public access to blobs is allowed on the account: a container could expose documents; turn it off: ${update} --allow-blob-public-access false`,
    );
  else checks.pass('azure.storage_public_access', subject, 'anonymous public access to blobs is off');
}

function checkServer(
  plan: Plan,
  azure: AzurePlan,
  server: FlexibleServerFacts,
  source: SourceFacts | null,
  estimate: Estimate,
  subject: string,
  targetConnectionString: string | undefined,
  checks: CheckList,
): void {
  const where = `${server.location ?? '?'}, ${server.fullyQualifiedDomainName ?? 'no host name'}`;
  if (server.state === undefined || server.state === 'Ready')
    checks.pass('azure.postgres_server', subject, `flexible server ${azure.postgresServer.name} exists (${where})`);
  else
    checks.warn(
      'azure.postgres_server',
      subject,
      `flexible server ${azure.postgresServer.name} is ${server.state} (${where}): it must be Ready before cloudshift run`,
    );

  const major = Number(server.version);
  if (!Number.isFinite(major) || server.version === undefined) {
    checks.warn('azure.postgres_version', subject, `ARM did not report the server's PostgreSQL version`);
  } else if (!source) {
    checks.pass('azure.postgres_version', subject, `PostgreSQL ${major} (the source could not be read to compare)`);
  } else {
    const sourceMajor = Math.floor(source.versionNum / 10000);
    if (major < sourceMajor)
      checks.warn(
        'azure.postgres_version',
        subject,
        `the server runs PostgreSQL ${major}, older than the source's ${sourceMajor}: features the source uses may be missing; choose version ${sourceMajor} or later`,
      );
    else checks.pass('azure.postgres_version', subject, `PostgreSQL ${major} on the server, ${sourceMajor} on the source`);
  }

  if (targetConnectionString !== undefined) checkTargetConnection(server, targetConnectionString, subject, checks);
  checkStorageSize(plan, server, estimate, subject, checks);
}

function checkTargetConnection(server: FlexibleServerFacts, connectionString: string, subject: string, checks: CheckList): void {
  let host: string;
  let sslmode: string | null = null;
  let entra: boolean;
  try {
    const auth = pgAuthOf(connectionString);
    entra = auth.kind === 'entra';
    host = endpointOf(auth.connectionString).host;
    sslmode = new URL(auth.connectionString).searchParams.get('sslmode');
  } catch {
    return; // target.connect reports a connection string it cannot use
  }
  const fqdn = server.fullyQualifiedDomainName;
  if (fqdn && host.toLowerCase() === fqdn.toLowerCase()) checks.pass('azure.postgres_host', subject, `target.postgres connects to ${fqdn}`);
  else
    checks.warn(
      'azure.postgres_host',
      subject,
      `target.postgres connects to ${host}, not to this server's host ${fqdn ?? '(unknown)'}: the Azure checks are about ${fqdn ?? 'the server'}, the data goes to ${host}`,
    );
  if (sslmode === 'verify-full')
    checks.pass('azure.postgres_sslmode', subject, 'target.postgres verifies the server (sslmode=verify-full)');
  else
    checks.warn(
      'azure.postgres_sslmode',
      subject,
      `target.postgres has sslmode=${sslmode ?? '(not set)'}: for Azure use sslmode=verify-full, with sslrootcert naming the Azure root certificates, so the server is verified`,
    );
  if (entra) {
    if (server.entraAuth)
      checks.pass(
        'azure.postgres_entra',
        subject,
        'Microsoft Entra authentication is enabled (target.postgres uses cloudshift_auth=entra)',
      );
    else
      checks.fail(
        'azure.postgres_entra',
        subject,
        'target.postgres signs in with Microsoft Entra ID (cloudshift_auth=entra) but the server has Microsoft Entra authentication disabled: enable it (Authentication in the portal) and add the signed-in identity as a Microsoft Entra administrator or role',
      );
  }
}

function checkStorageSize(plan: Plan, server: FlexibleServerFacts, estimate: Estimate, subject: string, checks: CheckList): void {
  if (server.storageSizeGB === undefined) {
    checks.warn('azure.storage_size', subject, 'ARM did not report the server storage size');
    return;
  }
  const size = server.storageSizeGB * GB;
  const share = estimate.bytes / size;
  const grows = server.autoGrow ? 'storage auto-grow is on' : 'storage auto-grow is off';
  const what = `estimated table data ${formatBytes(estimate.bytes)} of ${server.storageSizeGB} GB storage (${(share * 100).toFixed(1)} %; indexes and WAL need more)`;
  const documents = plan.documents.length > 0 ? ' Documents go to Blob Storage and are not counted.' : '';
  if (share > 1 && !server.autoGrow)
    checks.fail('azure.storage_size', subject, `${what}: the data does not fit and ${grows}: raise the storage size.${documents}`);
  else if (share > HEADROOM_SHARE)
    checks.warn('azure.storage_size', subject, `${what}: little headroom (${grows}); consider more storage.${documents}`);
  else checks.pass('azure.storage_size', subject, `${what}.${documents}`);
}

interface ParameterContext {
  plan: Plan;
  azure: AzurePlan;
  source: SourceFacts | null;
  subject: string;
  checks: CheckList;
}

const PARAMETER_CHECK_IDS: Record<string, string> = {
  wal_level: 'azure.wal_level',
  require_secure_transport: 'azure.require_secure_transport',
  'azure.extensions': 'azure.extensions',
};

function parameterSet(azure: AzurePlan, name: string, value: string): string {
  const s = azure.postgresServer;
  return `az postgres flexible-server parameter set --resource-group ${s.resourceGroup} --server-name ${s.name} --name ${name} --value ${value}`;
}

const PARAMETER_CHECKS: ReadonlyArray<readonly [string, (p: ServerParameterFacts, c: ParameterContext) => void]> = [
  [
    'wal_level',
    (p, { plan, azure, subject, checks }) => {
      const s = azure.postgresServer;
      const restart = `az postgres flexible-server restart --resource-group ${s.resourceGroup} --name ${s.name}`;
      if (p.value === 'logical' && !p.pendingRestart) {
        checks.pass('azure.wal_level', subject, 'wal_level is logical: reverse replication for a rollback can start');
      } else if (p.value === 'logical') {
        checks.warn('azure.wal_level', subject, `wal_level is set to logical but takes effect only after a restart: ${restart}`);
      } else {
        const message = `wal_level is ${p.value || '(not set)'}: a rollback replicates back from the target, which needs logical. Fix: ${parameterSet(azure, 'wal_level', 'logical')}, then ${restart}`;
        if (plan.sync.mode === 'logical') checks.fail('azure.wal_level', subject, message);
        else checks.warn('azure.wal_level', subject, message);
      }
    },
  ],
  [
    'require_secure_transport',
    (p, { azure, subject, checks }) => {
      if (/^on$/i.test(p.value))
        checks.pass('azure.require_secure_transport', subject, 'require_secure_transport is on: only TLS connections');
      else
        checks.warn(
          'azure.require_secure_transport',
          subject,
          `require_secure_transport is ${p.value || '(not set)'}: the server accepts unencrypted connections; turn it on: ${parameterSet(azure, 'require_secure_transport', 'on')}`,
        );
    },
  ],
  [
    'azure.extensions',
    (p, { azure, source, subject, checks }) => {
      const allowed = p.value
        .split(',')
        .map((e) => e.trim().toLowerCase())
        .filter((e) => e !== '');
      if (!source) {
        checks.warn('azure.extensions', subject, `not compared: the source could not be read (allowed: ${allowed.join(', ') || 'none'})`);
        return;
      }
      if (source.extensions.length === 0) {
        checks.pass('azure.extensions', subject, 'the source uses no extensions');
        return;
      }
      const missing = source.extensions.filter((e) => !allowed.includes(e.toLowerCase()));
      if (missing.length === 0) {
        checks.pass(
          'azure.extensions',
          subject,
          `azure.extensions allows every extension the source uses: ${source.extensions.join(', ')}`,
        );
        return;
      }
      const value = [...allowed, ...missing.map((e) => e.toLowerCase())].join(',');
      checks.fail(
        'azure.extensions',
        subject,
        `extension${missing.length === 1 ? '' : 's'} used on the source but not allowed by azure.extensions: ${missing.join(', ')}. Fix: ${parameterSet(azure, 'azure.extensions', value)}`,
      );
    },
  ],
];
