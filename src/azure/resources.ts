/**
 * Read-only views of the ARM resources the dry run checks: plain GETs with explicit
 * api-versions through the real ResourceManagementClient, reduced to the few typed facts the
 * checks need. Every failure is an AzureError carrying the ARM code, status and request id.
 */
import type { AzureResourcePlan } from '../plan/defaults.js';
import { API_VERSIONS, type ArmClients } from './arm.js';
import { azureError } from './errors.js';

export interface ReadOptions {
  abortSignal?: AbortSignal;
}

export interface ResourceGroupFacts {
  name: string;
  location: string;
  provisioningState: string | undefined;
}

export interface StorageAccountFacts {
  id: string;
  location: string | undefined;
  /** `TLS1_0` … `TLS1_3`; undefined when unset (the service then accepts TLS 1.0). */
  minimumTlsVersion: string | undefined;
  /** Secure transfer required; the service's default (since api-version 2019-04-01) is true. */
  httpsOnly: boolean;
  /** Anonymous public read access to blobs may be enabled on containers. */
  allowBlobPublicAccess: boolean;
}

export interface FlexibleServerFacts {
  id: string;
  location: string | undefined;
  /** Major version as ARM reports it, e.g. "16". */
  version: string | undefined;
  /** Ready, Stopped, Updating … */
  state: string | undefined;
  fullyQualifiedDomainName: string | undefined;
  storageSizeGB: number | undefined;
  autoGrow: boolean;
  entraAuth: boolean;
  passwordAuth: boolean;
}

export interface ServerParameterFacts {
  name: string;
  value: string;
  /** Changed, but only in effect after a server restart. */
  pendingRestart: boolean;
}

type Properties = Record<string, unknown>;

const str = (o: Properties | undefined, key: string): string | undefined => (typeof o?.[key] === 'string' ? (o[key] as string) : undefined);
const obj = (o: Properties | undefined, key: string): Properties | undefined =>
  o?.[key] !== null && typeof o?.[key] === 'object' ? (o[key] as Properties) : undefined;
/** Booleans arrive as true/false or, from some providers, "True"/"Enabled". */
function flag(v: unknown): boolean | undefined {
  if (typeof v === 'boolean') return v;
  if (typeof v === 'string') return /^(true|enabled|on)$/i.test(v);
  return undefined;
}

export async function getResourceGroup(arm: ArmClients, name: string, options: ReadOptions = {}): Promise<ResourceGroupFacts> {
  try {
    const rg = await arm.resourceManager.resourceGroups.get(name, options);
    return { name: rg.name ?? name, location: rg.location, provisioningState: rg.properties?.provisioningState };
  } catch (err) {
    throw azureError(err, `reading resource group ${name}`, arm.endpoint, arm.lastErrorBody());
  }
}

async function getById(arm: ArmClients, id: string, apiVersion: string, what: string, options: ReadOptions): Promise<Properties> {
  try {
    // The client puts the id after its own "/": without this the request path would start "//".
    const r = await arm.resourceManager.resources.getById(id.replace(/^\/+/, ''), apiVersion, options);
    return { ...(r.properties ?? {}), $location: r.location };
  } catch (err) {
    throw azureError(err, `reading ${what}`, arm.endpoint, arm.lastErrorBody());
  }
}

export async function getStorageAccount(arm: ArmClients, ref: AzureResourcePlan, options: ReadOptions = {}): Promise<StorageAccountFacts> {
  const p = await getById(arm, ref.id, API_VERSIONS.storage, `storage account ${ref.name}`, options);
  return {
    id: ref.id,
    location: str(p, '$location'),
    minimumTlsVersion: str(p, 'minimumTlsVersion'),
    httpsOnly: flag(p['supportsHttpsTrafficOnly']) ?? true,
    allowBlobPublicAccess: flag(p['allowBlobPublicAccess']) ?? false,
  };
}

export async function getFlexibleServer(arm: ArmClients, ref: AzureResourcePlan, options: ReadOptions = {}): Promise<FlexibleServerFacts> {
  const p = await getById(arm, ref.id, API_VERSIONS.postgres, `PostgreSQL flexible server ${ref.name}`, options);
  const storage = obj(p, 'storage');
  const auth = obj(p, 'authConfig');
  const size = storage?.['storageSizeGB'];
  return {
    id: ref.id,
    location: str(p, '$location'),
    version: str(p, 'version'),
    state: str(p, 'state'),
    fullyQualifiedDomainName: str(p, 'fullyQualifiedDomainName'),
    storageSizeGB: typeof size === 'number' ? size : undefined,
    autoGrow: flag(storage?.['autoGrow']) ?? false,
    entraAuth: flag(auth?.['activeDirectoryAuth']) ?? false,
    passwordAuth: flag(auth?.['passwordAuth']) ?? true,
  };
}

export async function getServerParameter(
  arm: ArmClients,
  server: AzureResourcePlan,
  name: string,
  options: ReadOptions = {},
): Promise<ServerParameterFacts> {
  const p = await getById(
    arm,
    `${server.id}/configurations/${name}`,
    API_VERSIONS.postgres,
    `server parameter ${name} of ${server.name}`,
    options,
  );
  return { name, value: str(p, 'value') ?? '', pendingRestart: flag(p['isConfigPendingRestart']) ?? false };
}
