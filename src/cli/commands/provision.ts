/** `cloudshift provision`: what-if (read-only) or deployment of the plan's ARM template. */
import { deployTemplate, whatIfDeployment, type ProvisionProgress } from '../../azure/deploy.js';
import { ExitCode } from '../../errors.js';
import { loadPlan } from '../../plan/parse.js';
import { formatSeconds } from '../../preflight/format.js';
import type { CliIO } from '../io.js';
import { renderDeploy, renderWhatIf } from '../render/whatIf.js';

export interface ProvisionFlags {
  whatIf: boolean;
  format: 'text' | 'json';
  deployment?: string;
}

export async function provisionCommand(io: CliIO, file: string, flags: ProvisionFlags): Promise<number> {
  const loaded = await loadPlan(file);
  // Progress goes to stderr, so stdout holds only the result (JSON for CI).
  const onProgress = (e: ProvisionProgress) =>
    io.stderr.write(`${flags.whatIf ? 'what-if' : 'deployment'} ${e.deployment}: ${e.status} (${formatSeconds(e.elapsedMs / 1000)})\n`);
  const options = {
    env: io.env,
    onProgress,
    ...(flags.deployment ? { deploymentName: flags.deployment } : {}),
    ...(io.signal ? { abortSignal: io.signal } : {}),
  };
  try {
    if (flags.whatIf) io.stdout.write(renderWhatIf(await whatIfDeployment(loaded, options), flags.format));
    else io.stdout.write(renderDeploy(await deployTemplate(loaded, options), flags.format));
  } catch (err) {
    if (!io.signal?.aborted) throw err;
    const name = flags.deployment ?? `cloudshift-${loaded.plan.name}`;
    io.stderr.write(
      `stopped waiting for deployment ${name}; ${flags.whatIf ? 'nothing was changed' : `it goes on in Azure: az deployment group show --resource-group ${loaded.plan.azure?.resourceGroup ?? '?'} --name ${name}`}\n`,
    );
    return ExitCode.interrupted;
  }
  return ExitCode.ok;
}
