/**
 * Azure Resource Manager clients for the plan's subscription: @azure/arm-resources for resource
 * groups and generic resource reads, @azure/arm-resourcesdeployments for template deployments
 * (split out of arm-resources in its version 7). Both send to the plan's
 * `resourceManagerEndpoint` and ask for tokens with that endpoint's `/.default` scope, so a
 * sovereign cloud (or a test server) needs nothing else. Retries (429 with Retry-After, 5xx,
 * network errors) are the Azure SDK pipeline's own.
 */
import { ResourceManagementClient } from '@azure/arm-resources';
import { DeploymentsClient } from '@azure/arm-resourcesdeployments';
import type { AzurePlan } from '../plan/defaults.js';
import type { TokenCredential } from './credential.js';

/** Every ARM api-version cloudshift sends, in one place. */
export const API_VERSIONS = {
  /** Microsoft.Resources: resource groups and deployments. */
  resources: '2025-04-01',
  storage: '2023-05-01',
  postgres: '2024-08-01',
} as const;

export interface ArmClients {
  resourceManager: ResourceManagementClient;
  deployments: DeploymentsClient;
  /** Where the requests go, for messages. */
  endpoint: string;
  /** `x-ms-request-id` of the last ARM answer, for errors the clients report without it (failed long-running operations). */
  lastRequestId(): string | undefined;
  /** The body of the last ARM answer, if it was an error: the newer clients keep only its first message. */
  lastErrorBody(): string | undefined;
}

type PipelinePolicy = Parameters<ResourceManagementClient['pipeline']['addPolicy']>[0];

function requestIdTracker(): { policy: PipelinePolicy; last(): string | undefined; lastErrorBody(): string | undefined } {
  let last: string | undefined;
  let errorBody: string | undefined;
  return {
    last: () => last,
    lastErrorBody: () => errorBody,
    policy: {
      name: 'cloudshiftRequestIds',
      sendRequest: async (request, next) => {
        const response = await next(request);
        last = response.headers.get('x-ms-request-id') ?? last;
        errorBody = response.status >= 400 ? (response.bodyAsText ?? undefined) : undefined;
        return response;
      },
    },
  };
}

export interface ArmClientOptions {
  /** Retries of the SDK pipeline (default 3), e.g. fewer for a quick dry run. */
  maxRetries?: number;
}

export function createArmClients(azure: AzurePlan, credential: TokenCredential, options: ArmClientOptions = {}): ArmClients {
  const endpoint = azure.resourceManagerEndpoint;
  const scopes = [`${endpoint}/.default`];
  const retryOptions = options.maxRetries === undefined ? {} : { retryOptions: { maxRetries: options.maxRetries } };
  const tracker = requestIdTracker();
  const clients: ArmClients = {
    endpoint,
    lastRequestId: tracker.last,
    lastErrorBody: tracker.lastErrorBody,
    resourceManager: new ResourceManagementClient(credential, azure.subscriptionId, {
      endpoint,
      credentialScopes: scopes,
      // No `apiVersion` here: the client would force it onto every request, including the
      // generic reads that name their provider's own api-version. Its default is API_VERSIONS.resources.
      ...retryOptions,
    }),
    deployments: new DeploymentsClient(credential, azure.subscriptionId, {
      endpoint,
      credentials: { scopes },
      apiVersion: API_VERSIONS.resources,
      ...retryOptions,
    }),
  };
  clients.resourceManager.pipeline.addPolicy(tracker.policy);
  clients.deployments.pipeline.addPolicy(tracker.policy);
  return clients;
}
