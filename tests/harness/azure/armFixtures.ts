/**
 * ARM answers for the fake: a resource group, a storage account and a PostgreSQL flexible server
 * with its server parameters, shaped like the real service's GET responses, and the plan's
 * `azure:` section pointing at the fake.
 */
import type { FakeAzure, FakeResponse } from './fakeAzure.js';

export const SUBSCRIPTION = '0b1f6471-1bf0-4dda-aec3-cb9272f09590';
export const RESOURCE_GROUP = 'rg-ehr-migration';
export const STORAGE = 'ehrdocs';
export const SERVER = 'ehr-pg';

export const RG_PATH = `/subscriptions/${SUBSCRIPTION}/resourcegroups/${RESOURCE_GROUP}`;
export const STORAGE_ID = `/subscriptions/${SUBSCRIPTION}/resourceGroups/${RESOURCE_GROUP}/providers/Microsoft.Storage/storageAccounts/${STORAGE}`;
export const SERVER_ID = `/subscriptions/${SUBSCRIPTION}/resourceGroups/${RESOURCE_GROUP}/providers/Microsoft.DBforPostgreSQL/flexibleServers/${SERVER}`;
export const DEPLOYMENTS = `/subscriptions/${SUBSCRIPTION}/resourcegroups/${RESOURCE_GROUP}/providers/Microsoft.Resources/deployments`;

/** The plan's azure: section, for the fake at `url`. */
export function azureSection(url: string, extra = ''): string {
  return `azure:
  subscriptionId: ${SUBSCRIPTION}
  resourceGroup: ${RESOURCE_GROUP}
  storageAccount: ${STORAGE}
  postgresServer: ${SERVER}
  resourceManagerEndpoint: ${url}
  authorityHost: ${url}
${extra}`;
}

export const ok = (body: unknown, headers: Record<string, string> = {}): FakeResponse => ({ status: 200, body, headers });

export function armError(status: number, code: string, message: string, headers: Record<string, string> = {}): FakeResponse {
  return { status, body: { error: { code, message } }, headers };
}

export function resourceGroup(): unknown {
  return {
    id: `/subscriptions/${SUBSCRIPTION}/resourceGroups/${RESOURCE_GROUP}`,
    name: RESOURCE_GROUP,
    type: 'Microsoft.Resources/resourceGroups',
    location: 'uksouth',
    properties: { provisioningState: 'Succeeded' },
  };
}

export function storageAccount(properties: Record<string, unknown> = {}): unknown {
  return {
    id: STORAGE_ID,
    name: STORAGE,
    type: 'Microsoft.Storage/storageAccounts',
    location: 'uksouth',
    kind: 'StorageV2',
    sku: { name: 'Standard_ZRS', tier: 'Standard' },
    properties: {
      provisioningState: 'Succeeded',
      minimumTlsVersion: 'TLS1_2',
      supportsHttpsTrafficOnly: true,
      allowBlobPublicAccess: false,
      primaryEndpoints: { blob: `https://${STORAGE}.blob.core.windows.net/` },
      ...properties,
    },
  };
}

export interface ServerShape {
  version?: string;
  state?: string;
  fqdn?: string;
  storageSizeGB?: number;
  autoGrow?: 'Enabled' | 'Disabled';
  activeDirectoryAuth?: 'Enabled' | 'Disabled';
}

export function flexibleServer(s: ServerShape = {}): unknown {
  return {
    id: SERVER_ID,
    name: SERVER,
    type: 'Microsoft.DBforPostgreSQL/flexibleServers',
    location: 'uksouth',
    sku: { name: 'Standard_D2ds_v5', tier: 'GeneralPurpose' },
    properties: {
      version: s.version ?? '17',
      state: s.state ?? 'Ready',
      fullyQualifiedDomainName: s.fqdn ?? `${SERVER}.postgres.database.azure.com`,
      storage: { storageSizeGB: s.storageSizeGB ?? 128, autoGrow: s.autoGrow ?? 'Disabled', tier: 'P10' },
      authConfig: { activeDirectoryAuth: s.activeDirectoryAuth ?? 'Enabled', passwordAuth: 'Disabled' },
      highAvailability: { mode: 'Disabled' },
    },
  };
}

export function configuration(name: string, value: string, pendingRestart = false): unknown {
  return {
    id: `${SERVER_ID}/configurations/${name}`,
    name,
    type: 'Microsoft.DBforPostgreSQL/flexibleServers/configurations',
    properties: { value, source: 'user-override', dataType: 'Enumeration', isConfigPendingRestart: pendingRestart },
  };
}

export interface HealthyOptions {
  storage?: Record<string, unknown>;
  server?: ServerShape;
  parameters?: Record<string, string>;
}

/** Declares every GET the dry run sends, answered as a well-configured environment would. */
export function healthyAzure(fake: FakeAzure, o: HealthyOptions = {}): void {
  fake.on('GET', RG_PATH, ok(resourceGroup()));
  fake.on('GET', STORAGE_ID, ok(storageAccount(o.storage)));
  fake.on('GET', SERVER_ID, ok(flexibleServer(o.server)));
  const parameters = { wal_level: 'logical', require_secure_transport: 'on', 'azure.extensions': 'citext,pgcrypto', ...o.parameters };
  for (const [name, value] of Object.entries(parameters)) {
    fake.on('GET', `${SERVER_ID}/configurations/${name}`, ok(configuration(name, value)));
  }
}
