/**
 * The ARM switch: one property of one Azure resource says where the application connects (an App
 * Service app setting, an App Configuration key-value, a DNS CNAME record). Switching reads the
 * resource by id (an App Service's settings through their list action), sets the property to the plan's `target` (or `source`) value and writes it back
 * with a PUT, waiting for a long-running operation to finish. Unlike PgBouncer it cannot hold
 * writes back: the application picks the new value up when it reconnects, so the side left is
 * write-fenced first and writes reaching it until then fail (SQLSTATE 25006) instead of being
 * lost. The values may be secrets (connection strings): they never reach a message or the state
 * store, only the request body.
 */
import type { GenericResource } from '@azure/arm-resources';
import { createPipelineRequest, RestError } from '@azure/core-rest-pipeline';
import type { AzurePlan, SwitchPlan } from '../plan/defaults.js';
import { PreconditionError } from '../errors.js';
import { createArmClients, type ArmClients } from '../azure/arm.js';
import { createAzureCredential } from '../azure/credential.js';
import { azureError } from '../azure/errors.js';
import type { Env } from '../plan/secrets.js';
import type { Side } from '../sync/objects.js';
import type { AppSwitch } from './appSwitch.js';

type ArmSwitchPlan = Extract<SwitchPlan, { kind: 'arm' }>;

/**
 * Resources whose values are read by a POST to `…/list`, not a GET: an App Service app's (or
 * slot's) app settings and connection strings (Microsoft.Web hands secrets out through list
 * actions only). Their PUT replaces them all.
 */
const LISTED = /\/providers\/Microsoft\.Web\/sites\/[^/]+(\/slots\/[^/]+)?\/config\/(appsettings|connectionstrings)$/i;

async function readByList(arm: ArmClients, id: string, apiVersion: string): Promise<GenericResource> {
  const request = createPipelineRequest({
    url: `${arm.endpoint}/${id}/list?api-version=${encodeURIComponent(apiVersion)}`,
    method: 'POST',
  });
  const response = await arm.resourceManager.sendRequest(request);
  if (response.status !== 200)
    throw new RestError(`HTTP ${response.status}`, {
      statusCode: response.status,
      ...(response.headers.get('x-ms-error-code') ? { code: response.headers.get('x-ms-error-code')! } : {}),
      request,
      response,
    });
  return JSON.parse(response.bodyAsText ?? '{}') as GenericResource;
}

export function armSwitch(sw: ArmSwitchPlan, azure: AzurePlan | undefined, values: Record<Side, string | undefined>, env: Env): AppSwitch {
  if (!azure) throw new PreconditionError("the ARM switch needs the plan's `azure` section");
  const wanted = { target: values.target, source: values.source };
  if (wanted.target === undefined || wanted.source === undefined)
    throw new PreconditionError('cutover.switch.arm: target and source values are required');
  const arm: ArmClients = createArmClients(azure, createAzureCredential({ authorityHost: azure.authorityHost, env }));
  const id = sw.resource.replace(/^\/+/, '');
  const path = sw.property.split('.');
  const read = async (): Promise<GenericResource> => {
    try {
      return LISTED.test(id) ? await readByList(arm, id, sw.apiVersion) : await arm.resourceManager.resources.getById(id, sw.apiVersion);
    } catch (err) {
      throw azureError(err, `reading ${sw.resource}`, arm.endpoint, arm.lastErrorBody());
    }
  };
  const valueOf = (r: GenericResource): unknown =>
    path.reduce<unknown>((o, k) => (o && typeof o === 'object' ? (o as Record<string, unknown>)[k] : undefined), r);
  return {
    kind: 'arm',
    async current() {
      const v = valueOf(await read());
      if (v === wanted.target) return 'target';
      if (v === wanted.source) return 'source';
      return 'unknown';
    },
    pause: () => Promise.resolve({ paused: true, ms: 0 }),
    stillPaused: () => Promise.resolve(true),
    async point(side) {
      const r = await read();
      // The PUT replaces the whole resource (every app setting): only one read whole, holding
      // one of the plan's two values where the plan says, is written back.
      const now = valueOf(r);
      if (now !== wanted.source && now !== wanted.target)
        throw new PreconditionError(
          `${sw.property} of ${sw.resource} holds neither the plan's source nor its target value (not shown): cloudshift will not write the resource back`,
          { hint: `check cutover.switch.arm.property, and that the setting holds the source's value before cutover` },
        );
      let o: Record<string, unknown> = r as Record<string, unknown>;
      for (const k of path.slice(0, -1)) {
        if (o[k] === undefined || o[k] === null) o[k] = {};
        o = o[k] as Record<string, unknown>;
      }
      o[path[path.length - 1]!] = wanted[side];
      try {
        await arm.resourceManager.resources.beginCreateOrUpdateByIdAndWait(id, sw.apiVersion, r, { updateIntervalInMs: 500 });
      } catch (err) {
        throw azureError(err, `setting ${sw.property} of ${sw.resource}`, arm.endpoint, arm.lastErrorBody());
      }
    },
    resume: () => Promise.resolve(),
    release: () => Promise.resolve(false),
    close: () => Promise.resolve(),
  };
}
