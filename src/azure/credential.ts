/**
 * Azure credentials: DefaultAzureCredential (environment variables, workload identity, managed
 * identity, Azure CLI …) for ARM, Blob and the target database's Entra ID tokens. Secrets stay
 * inside @azure/identity; nothing here reads or logs them.
 *
 * A private or local authority host (a sovereign cloud's own, an ADFS, a test server) is used
 * with instance discovery off: MSAL would otherwise ask login.microsoftonline.com to vouch for
 * it, which such a host cannot pass and a machine without internet cannot reach.
 */
import { DefaultAzureCredential, type DefaultAzureCredentialOptions, type TokenCredential } from '@azure/identity';

export type { AccessToken, TokenCredential } from '@azure/identity';

/** Authority hosts Microsoft's instance discovery knows. */
const KNOWN_AUTHORITY_HOSTS = new Set([
  'login.microsoftonline.com',
  'login.microsoftonline.us',
  'login.chinacloudapi.cn',
  'login.microsoftonline.de',
  'login.windows.net',
  'login.microsoft.com',
  'sts.windows.net',
]);

export function isKnownAuthorityHost(authorityHost: string): boolean {
  try {
    return KNOWN_AUTHORITY_HOSTS.has(new URL(authorityHost).hostname.toLowerCase());
  } catch {
    return false;
  }
}

export interface AzureCredentialOptions {
  /** The plan's `azure.authorityHost`; else AZURE_AUTHORITY_HOST from `env`; else the public cloud. */
  authorityHost?: string | undefined;
  /** Where AZURE_AUTHORITY_HOST is read (DefaultAzureCredential itself reads the process environment). */
  env?: Record<string, string | undefined>;
}

export function credentialOptions(options: AzureCredentialOptions = {}): DefaultAzureCredentialOptions {
  const authorityHost = options.authorityHost ?? options.env?.['AZURE_AUTHORITY_HOST'];
  if (!authorityHost) return {};
  return { authorityHost, disableInstanceDiscovery: !isKnownAuthorityHost(authorityHost) };
}

export function createAzureCredential(options: AzureCredentialOptions = {}): TokenCredential {
  return new DefaultAzureCredential(credentialOptions(options));
}
