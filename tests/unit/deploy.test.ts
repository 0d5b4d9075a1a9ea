/**
 * The deployment files (deploy/, Dockerfile) cannot be run here (no Docker, no cluster): check
 * what can be checked offline, that they run the real command on a mounted plan with secrets
 * from the environment, and that the image copies what exists.
 */
import { existsSync, readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';

describe('deployment files', () => {
  it('the Kubernetes Job runs N workers of `cloudshift run` on a mounted plan, secrets from a Secret', () => {
    const job = parse(readFileSync('deploy/kubernetes/job.yaml', 'utf8')) as {
      kind: string;
      spec: {
        parallelism: number;
        template: { spec: { containers: Array<{ args: string[]; envFrom: unknown[]; volumeMounts: Array<{ mountPath: string }> }> } };
      };
    };
    expect(job.kind).toBe('Job');
    expect(job.spec.parallelism).toBeGreaterThan(1);
    const c = job.spec.template.spec.containers[0]!;
    expect(c.args[0]).toBe('run');
    expect(c.args[1]!.startsWith(c.volumeMounts[0]!.mountPath)).toBe(true);
    expect(c.envFrom).toEqual([{ secretRef: { name: 'cloudshift-secrets' } }]);
  });

  it('the Container Apps job runs parallel replicas of `cloudshift run`, secrets by reference only', () => {
    const text = readFileSync('deploy/azure-container-apps/job.yaml', 'utf8');
    const job = parse(text) as {
      properties: {
        configuration: { manualTriggerConfig: { parallelism: number }; secrets: Array<{ keyVaultUrl: string }> };
        template: { containers: Array<{ args: string[]; volumeMounts: Array<{ mountPath: string }> }> };
      };
    };
    expect(job.properties.configuration.manualTriggerConfig.parallelism).toBeGreaterThan(1);
    for (const s of job.properties.configuration.secrets) expect(s.keyVaultUrl).toMatch(/^https:\/\/.+\.vault\.azure\.net\/secrets\//);
    const c = job.properties.template.containers[0]!;
    expect(c.args[0]).toBe('run');
    expect(c.args[1]!.startsWith(c.volumeMounts[0]!.mountPath)).toBe(true);
    expect(text).not.toMatch(/postgres:\/\/[^$]/);
  });

  it('the Dockerfile copies files that exist and starts the real executable', () => {
    const docker = readFileSync('Dockerfile', 'utf8');
    for (const m of docker.matchAll(/^COPY (?!--from)(.+) \S+$/gm)) {
      for (const f of m[1]!.split(/\s+/)) expect(existsSync(f), f).toBe(true);
    }
    expect(docker).toMatch(/ENTRYPOINT \["node", "\/opt\/cloudshift\/bin\/cloudshift\.js"\]/);
    expect(docker).toMatch(/npm ci --omit=dev/);
  });
});
