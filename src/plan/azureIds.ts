/**
 * Azure resource names and ids in a plan's `azure:` section: what the schema accepts, and the
 * full ARM resource id that defaults.ts builds from a bare name. Pure functions, no I/O.
 */

export const GUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** Resource group names: 1 to 90 letters, digits, `_ - . ( )`, not ending with a period. */
export const RESOURCE_GROUP = /^[\w\-.()]{0,89}[\w\-()]$/;

export interface AzureResourceType {
  /** e.g. `Microsoft.Storage/storageAccounts` */
  type: string;
  /** What the operator calls it, for messages. */
  what: string;
  name: RegExp;
  nameRule: string;
}

export const STORAGE_ACCOUNT: AzureResourceType = {
  type: 'Microsoft.Storage/storageAccounts',
  what: 'storage account',
  name: /^[a-z0-9]{3,24}$/,
  nameRule: '3 to 24 lower-case letters and digits',
};

export const FLEXIBLE_SERVER: AzureResourceType = {
  type: 'Microsoft.DBforPostgreSQL/flexibleServers',
  what: 'PostgreSQL flexible server',
  name: /^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$/,
  nameRule: '3 to 63 lower-case letters, digits and hyphens',
};

export interface ParsedResourceId {
  subscriptionId: string;
  resourceGroup: string;
  name: string;
}

function idPattern(t: AzureResourceType): RegExp {
  const [namespace, type] = t.type.split('/');
  return new RegExp(`^/subscriptions/([^/]+)/resourceGroups/([^/]+)/providers/${namespace!.replace('.', '\\.')}/${type}/([^/]+)$`, 'i');
}

/** Parses a full resource id of the given type; null when it is not one. */
export function parseResourceId(t: AzureResourceType, id: string): ParsedResourceId | null {
  const m = idPattern(t).exec(id);
  if (!m || !GUID.test(m[1]!) || !RESOURCE_GROUP.test(m[2]!) || !t.name.test(m[3]!)) return null;
  return { subscriptionId: m[1]!, resourceGroup: m[2]!, name: m[3]! };
}

/** A bare name or a full resource id of the type. */
export function isResourceRef(t: AzureResourceType, value: string): boolean {
  return t.name.test(value) || parseResourceId(t, value) !== null;
}

export function resourceRefMessage(t: AzureResourceType): string {
  return `must be a ${t.what} name (${t.nameRule}) or its resource id "/subscriptions/<subscription>/resourceGroups/<group>/providers/${t.type}/<name>"`;
}

export function resourceId(subscriptionId: string, resourceGroup: string, t: AzureResourceType, name: string): string {
  return `/subscriptions/${subscriptionId}/resourceGroups/${resourceGroup}/providers/${t.type}/${name}`;
}

/** The full id of a plan reference: kept when it is an id, built in the plan's group when a name. */
export function resolveResourceRef(
  t: AzureResourceType,
  value: string,
  subscriptionId: string,
  resourceGroup: string,
): ParsedResourceId & { id: string } {
  const parsed = parseResourceId(t, value);
  if (parsed) return { ...parsed, id: value };
  return { subscriptionId, resourceGroup, name: value, id: resourceId(subscriptionId, resourceGroup, t, value) };
}
