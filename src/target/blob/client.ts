/**
 * Builds the plan's Blob container client: from a connection string (Azurite, development), an
 * account with a SAS, or an account with Entra ID (DefaultAzureCredential). Keys and SAS tokens
 * stay inside the client; nothing here logs them.
 */
import { DefaultAzureCredential } from '@azure/identity';
import type { StoragePipelineOptions } from '@azure/storage-blob';
import type { BlobPlan } from '../../plan/defaults.js';
import { DocumentContainer } from './container.js';

export interface BlobCredentials {
  connectionString: string | undefined;
  sas: string | undefined;
}

export function blobEndpoint(plan: BlobPlan): string {
  return plan.endpoint ?? `https://${plan.account}.blob.core.windows.net`;
}

export function createContainerClient(plan: BlobPlan, creds: BlobCredentials, options: StoragePipelineOptions = {}): DocumentContainer {
  if (creds.connectionString !== undefined) return new DocumentContainer(creds.connectionString, plan.container, options);
  const url = `${blobEndpoint(plan)}/${encodeURIComponent(plan.container)}`;
  if (creds.sas !== undefined) return new DocumentContainer(`${url}?${creds.sas.replace(/^\?/, '')}`, undefined, options);
  return new DocumentContainer(url, new DefaultAzureCredential(), options);
}

/** The container's URL without any SAS, for messages. */
export function containerAddress(container: DocumentContainer): string {
  return container.url.split('?')[0]!;
}
