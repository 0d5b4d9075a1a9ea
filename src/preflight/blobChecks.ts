/** Read-only check of the Blob container: reachable, and either present or creatable. */
import { RestError } from '@azure/storage-blob';
import type { Plan } from '../plan/defaults.js';
import type { Secrets } from '../plan/secrets.js';
import { redact } from '../redact.js';
import { containerAddress, createContainerClient } from '../target/blob/client.js';
import { UNCREATABLE_HINT } from '../target/blob/container.js';
import type { CheckList } from './types.js';

export async function checkBlob(plan: Plan, secrets: Secrets, checks: CheckList, timeoutMs: number): Promise<boolean> {
  const blob = plan.target.blob;
  if (!blob) return true;
  const subject = `blob container ${blob.container}`;
  const container = createContainerClient(
    blob,
    { connectionString: secrets.blobConnectionString, sas: secrets.blobSas },
    { retryOptions: { maxTries: 2, tryTimeoutInMs: timeoutMs, retryDelayInMs: 200 } },
  );
  /** A credential refused the container's properties (a SAS for the container alone) may list it, and may not create it. */
  const state = async (): Promise<'present' | 'absent' | RestError> => {
    const abortSignal = AbortSignal.timeout(timeoutMs * 2);
    try {
      await container.getProperties({ abortSignal });
      return 'present';
    } catch (err) {
      if (err instanceof RestError && err.statusCode === 403) return (await container.existsByListing(abortSignal)) ? 'present' : err;
      if (err instanceof RestError && err.statusCode === 404) return 'absent';
      throw err;
    }
  };
  try {
    const found = await state();
    if (found === 'present') checks.pass('blob.container', subject, `container ${blob.container} exists at ${containerAddress(container)}`);
    else if (found === 'absent')
      checks.pass(
        'blob.container',
        subject,
        `container ${blob.container} does not exist yet; the account answered, and cloudshift run will create it`,
      );
    else checks.fail('blob.container', subject, `${container.uncreatable(found)}: ${UNCREATABLE_HINT}`);
    return true;
  } catch (err) {
    const detail =
      err instanceof RestError
        ? `HTTP ${err.statusCode ?? '?'} ${err.code ?? ''}${requestId(err)}`
        : redact((err as Error).message ?? String(err));
    const reachable = err instanceof RestError && err.statusCode !== undefined;
    checks.fail('blob.container', subject, `cannot reach container ${blob.container} at ${containerAddress(container)}: ${detail}`);
    return reachable;
  }
}

function requestId(err: RestError): string {
  const id = err.response?.headers.get('x-ms-request-id');
  return id ? ` (request id ${id})` : '';
}
