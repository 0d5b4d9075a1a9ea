/**
 * Builds the plan's Blob container client: from a connection string (Azurite, development), an
 * account with a SAS, or an account with Entra ID (DefaultAzureCredential). Keys and SAS tokens
 * stay inside the client; nothing here logs them.
 */
import { DefaultAzureCredential } from '@azure/identity';
import type { StoragePipelineOptions } from '@azure/storage-blob';
import type { BlobPlan } from '../../plan/defaults.js';
import { DocumentContainer } from './container.js';
import { DEFAULT_TRY_TIMEOUT_MS } from './tryTimeout.js';

export interface BlobCredentials {
  connectionString: string | undefined;
  sas: string | undefined;
}

export function blobEndpoint(plan: BlobPlan): string {
  return plan.endpoint ?? `https://${plan.account}.blob.core.windows.net`;
}

export interface ContainerOptions extends StoragePipelineOptions {
  /** How long one try of a request may go unanswered (default DEFAULT_TRY_TIMEOUT_MS). */
  tryTimeoutMs?: number;
}

export function createContainerClient(plan: BlobPlan, creds: BlobCredentials, options: ContainerOptions = {}): DocumentContainer {
  const { tryTimeoutMs = DEFAULT_TRY_TIMEOUT_MS, ...pipeline } = options;
  const container = (() => {
    if (creds.connectionString !== undefined) return new DocumentContainer(creds.connectionString, plan.container, pipeline);
    const url = `${blobEndpoint(plan)}/${encodeURIComponent(plan.container)}`;
    if (creds.sas !== undefined) return new DocumentContainer(`${url}?${creds.sas.replace(/^\?/, '')}`, undefined, pipeline);
    return new DocumentContainer(url, new DefaultAzureCredential(), pipeline);
  })();
  // Every client derived from it (a blob's) shares its pipeline.
  container.limitTries(tryTimeoutMs);
  return container;
}

/** The container's URL without any SAS, for messages. */
export function containerAddress(container: DocumentContainer): string {
  return container.url.split('?')[0]!;
}
