/**
 * `cloudshift provision`: the plan's ARM template at resource-group scope, either as a what-if
 * (what a deployment would change; ARM changes nothing) or as an Incremental deployment that is
 * waited for. Both are long-running operations polled by the Azure SDK (Location /
 * Azure-AsyncOperation, Retry-After honoured). The deployment name is fixed per plan, so running
 * it again updates the same deployment instead of piling up new ones.
 */
import { readFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import type { WhatIfChange, WhatIfPropertyChange } from '@azure/arm-resourcesdeployments';
import { UsageError } from '../errors.js';
import type { AzurePlan } from '../plan/defaults.js';
import type { LoadedPlan } from '../plan/parse.js';
import { createArmClients, type ArmClients } from './arm.js';
import { createAzureCredential, type TokenCredential } from './credential.js';
import { AzureError, azureDetail, azureError } from './errors.js';

export interface ProvisionOptions {
  env: Record<string, string | undefined>;
  /** Default `cloudshift-<plan name>`. */
  deploymentName?: string;
  /** Default DefaultAzureCredential with the plan's authority host. */
  credential?: TokenCredential;
  /** Stops waiting (the deployment goes on in Azure). */
  abortSignal?: AbortSignal;
  onProgress?: (event: ProvisionProgress) => void;
  /** Poll interval when ARM sends no Retry-After (default: the SDK's). */
  pollIntervalInMs?: number;
}

export interface ProvisionProgress {
  deployment: string;
  /** `submitted`, then the operation's status on each poll: `running`, `succeeded`, `failed`, `canceled`. */
  status: string;
  elapsedMs: number;
}

export interface PropertyDelta {
  path: string;
  /** Create, Delete, Modify, Array, NoEffect */
  change: string;
  before?: unknown;
  after?: unknown;
  children: PropertyDelta[];
}

export interface ResourceChange {
  /** Create, Delete, Ignore, Deploy, NoChange, Modify, Unsupported */
  changeType: string;
  resourceId: string;
  unsupportedReason?: string;
  delta: PropertyDelta[];
}

export interface WhatIfResult {
  deployment: string;
  resourceGroup: string;
  /** The template file, as the plan names it. */
  template: string;
  status: string;
  changes: ResourceChange[];
  diagnostics: Array<{ level: string; code: string; message: string }>;
  /** Count per change type. */
  summary: Record<string, number>;
}

export interface DeployResult {
  deployment: string;
  resourceGroup: string;
  template: string;
  provisioningState: string;
  correlationId: string | undefined;
  durationMs: number;
  outputResources: string[];
  outputs: Record<string, unknown>;
}

interface Prepared {
  azure: AzurePlan;
  arm: ArmClients;
  name: string;
  templateFile: string;
  template: Record<string, unknown>;
  parameters: Record<string, { value: unknown }>;
}

/** Template parameters cloudshift fills from the plan when the template declares them. */
const PLAN_PARAMETERS: ReadonlyArray<readonly [string, (a: AzurePlan) => string | undefined]> = [
  ['storageAccountName', (a) => a.storageAccount?.name],
  ['postgresServerName', (a) => a.postgresServer.name],
];

async function prepare(loaded: LoadedPlan, options: ProvisionOptions): Promise<Prepared> {
  const azure = loaded.plan.azure;
  if (!azure)
    throw new UsageError(`${loaded.file}: the plan has no \`azure\` section`, {
      hint: 'add azure: with subscriptionId, resourceGroup and postgresServer',
    });
  if (!azure.template)
    throw new UsageError(`${loaded.file}: the plan names no template (azure.template)`, {
      hint: 'set azure.template to an ARM JSON template, relative to the plan',
    });
  const path = resolve(loaded.dir, azure.template);
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? 'error';
    throw new UsageError(`azure.template: cannot read ${path} (${code})`, {
      cause: err,
      hint: 'the template path is relative to the plan file',
    });
  }
  let template: unknown;
  try {
    template = JSON.parse(text);
  } catch (err) {
    throw new UsageError(`azure.template: ${path} is not valid JSON: ${(err as Error).message}`, {
      cause: err,
      hint: 'give an ARM JSON template (compile Bicep with `az bicep build` first)',
    });
  }
  if (template === null || typeof template !== 'object' || Array.isArray(template) || !('resources' in template)) {
    throw new UsageError(`azure.template: ${path} is not an ARM template (no "resources")`, {
      hint: 'give an ARM JSON template with $schema, contentVersion and resources',
    });
  }
  const declared = (template as { parameters?: Record<string, unknown> }).parameters ?? {};
  const parameters: Record<string, { value: unknown }> = {};
  for (const [name, valueOf] of PLAN_PARAMETERS) {
    const value = valueOf(azure);
    if (name in declared && value !== undefined) parameters[name] = { value };
  }
  const credential = options.credential ?? createAzureCredential({ authorityHost: azure.authorityHost, env: options.env });
  return {
    azure,
    arm: createArmClients(azure, credential),
    name: options.deploymentName ?? `cloudshift-${loaded.plan.name}`,
    templateFile: azure.template,
    template: template as Record<string, unknown>,
    parameters,
  };
}

/** What deploying the plan's template would change. Nothing is changed. */
export async function whatIfDeployment(loaded: LoadedPlan, options: ProvisionOptions): Promise<WhatIfResult> {
  const p = await prepare(loaded, options);
  const doing = `what-if of template ${p.templateFile} as deployment ${p.name} in resource group ${p.azure.resourceGroup}`;
  const started = Date.now();
  let result;
  try {
    const poller = p.arm.deployments.deployments.whatIf(
      p.azure.resourceGroup,
      p.name,
      { properties: { mode: 'Incremental', template: p.template, parameters: p.parameters } },
      pollOptions(options),
    );
    poller.onProgress((s) => options.onProgress?.({ deployment: p.name, status: s.status, elapsedMs: Date.now() - started }));
    result = await poller;
  } catch (err) {
    throw azureError(err, doing, p.arm.endpoint, p.arm.lastErrorBody());
  }
  if (result.status !== undefined && result.status !== 'Succeeded') {
    const code = result.error?.code;
    throw new AzureError(
      'rejected',
      code,
      200,
      p.arm.lastRequestId(),
      `${doing}: ${errorText(result.error)}${azureDetail('ARM', code, 200, p.arm.lastRequestId())}`,
    );
  }
  const changes = (result.changes ?? []).map(resourceChange);
  const summary: Record<string, number> = {};
  for (const c of changes) summary[c.changeType] = (summary[c.changeType] ?? 0) + 1;
  return {
    deployment: p.name,
    resourceGroup: p.azure.resourceGroup,
    template: p.templateFile,
    status: result.status ?? 'Succeeded',
    changes,
    diagnostics: (result.diagnostics ?? []).map((d) => ({ level: d.level, code: d.code, message: d.message })),
    summary,
  };
}

/** Deploys the plan's template (Incremental) and waits for it. */
export async function deployTemplate(loaded: LoadedPlan, options: ProvisionOptions): Promise<DeployResult> {
  const p = await prepare(loaded, options);
  const doing = `deploying template ${p.templateFile} as deployment ${p.name} in resource group ${p.azure.resourceGroup}`;
  const started = Date.now();
  let deployment;
  try {
    const poller = p.arm.deployments.deployments.createOrUpdate(
      p.azure.resourceGroup,
      p.name,
      { properties: { mode: 'Incremental', template: p.template, parameters: p.parameters } },
      pollOptions(options),
    );
    poller.onProgress((s) => options.onProgress?.({ deployment: p.name, status: s.status, elapsedMs: Date.now() - started }));
    await poller.submitted();
    options.onProgress?.({ deployment: p.name, status: 'submitted', elapsedMs: Date.now() - started });
    deployment = await poller;
  } catch (err) {
    if (options.abortSignal?.aborted || (err instanceof Error && err.name === 'RestError'))
      throw azureError(err, doing, p.arm.endpoint, p.arm.lastErrorBody());
    // The poller says only that the operation failed: the deployment itself says why.
    throw await deploymentFailure(p, doing, err);
  }
  const props = deployment.properties;
  return {
    deployment: p.name,
    resourceGroup: p.azure.resourceGroup,
    template: p.templateFile,
    provisioningState: props?.provisioningState ?? 'Succeeded',
    correlationId: props?.correlationId,
    durationMs: Date.now() - started,
    outputResources: (props?.outputResources ?? []).map((r) => r.id ?? '').filter((id) => id !== ''),
    outputs: Object.fromEntries(
      Object.entries((props?.outputs ?? {}) as Record<string, { value?: unknown }>).map(([k, v]) => [k, v?.value]),
    ),
  };
}

async function deploymentFailure(p: Prepared, doing: string, cause: unknown): Promise<AzureError> {
  let props;
  try {
    props = (await p.arm.deployments.deployments.get(p.azure.resourceGroup, p.name)).properties;
  } catch (err) {
    return azureError(err, `${doing} failed, and reading the deployment failed too`, p.arm.endpoint, p.arm.lastErrorBody());
  }
  const code = props?.error?.code;
  const requestId = p.arm.lastRequestId();
  const state = props?.provisioningState ?? 'Failed';
  const correlation = props?.correlationId ? `; correlation id ${props.correlationId}` : '';
  return new AzureError(
    'failed',
    code,
    200,
    requestId,
    `${doing}: the deployment ended ${state}: ${errorText(props?.error)}${correlation}${azureDetail('ARM', code, 200, requestId)}`,
    { cause },
  );
}

interface ErrorLike {
  code?: string;
  message?: string;
  details?: ErrorLike[];
}

function errorText(e: ErrorLike | undefined): string {
  if (!e) return 'no error details';
  const details = (e.details ?? []).map((d) => `${d.code ?? '?'}: ${d.message ?? ''}`.trim());
  return `${e.message ?? e.code ?? 'failed'}${details.length > 0 ? ` (${details.join('; ')})` : ''}`;
}

function pollOptions(options: ProvisionOptions): { abortSignal?: AbortSignal; updateIntervalInMs?: number } {
  return {
    ...(options.abortSignal ? { abortSignal: options.abortSignal } : {}),
    ...(options.pollIntervalInMs === undefined ? {} : { updateIntervalInMs: options.pollIntervalInMs }),
  };
}

function resourceChange(c: WhatIfChange): ResourceChange {
  return {
    changeType: c.changeType,
    resourceId: c.resourceId ?? c.symbolicName ?? '(unknown)',
    ...(c.unsupportedReason ? { unsupportedReason: c.unsupportedReason } : {}),
    delta: (c.delta ?? []).map(propertyDelta),
  };
}

function propertyDelta(d: WhatIfPropertyChange): PropertyDelta {
  return {
    path: d.path,
    change: d.propertyChangeType,
    ...(d.before === undefined ? {} : { before: d.before as unknown }),
    ...(d.after === undefined ? {} : { after: d.after as unknown }),
    children: (d.children ?? []).map(propertyDelta),
  };
}
