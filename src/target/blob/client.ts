/**
 * Builds the Blob service client from the plan: a connection string (Azurite, development), an
 * account with a SAS, or an account with Entra ID (DefaultAzureCredential). Keys and SAS tokens
 * stay inside the client; nothing here logs them.
 */
import { DefaultAzureCredential } from '@azure/identity';
import { BlobServiceClient, type StoragePipelineOptions } from '@azure/storage-blob';
import type { BlobPlan } from '../../plan/defaults.js';

export interface BlobCredentials {
  connectionString: string | undefined;
  sas: string | undefined;
}

export function blobEndpoint(plan: BlobPlan): string {
  return plan.endpoint ?? `https://${plan.account}.blob.core.windows.net`;
}

export function createBlobServiceClient(plan: BlobPlan, creds: BlobCredentials, options: StoragePipelineOptions = {}): BlobServiceClient {
  if (creds.connectionString !== undefined) return BlobServiceClient.fromConnectionString(creds.connectionString, options);
  const endpoint = blobEndpoint(plan);
  if (creds.sas !== undefined) return new BlobServiceClient(`${endpoint}?${creds.sas.replace(/^\?/, '')}`, undefined, options);
  return new BlobServiceClient(endpoint, new DefaultAzureCredential(), options);
}
