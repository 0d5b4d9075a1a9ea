/**
 * A throw-away certificate authority for the fake Azure endpoints: a self-signed certificate
 * for 127.0.0.1, made with openssl at test time. Node trusts it only through
 * NODE_EXTRA_CA_CERTS, which it reads at process start: so the clients under test run in a
 * child process (see spawnCli in fakeAzure.ts).
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { scratchDir } from '../../../src/embedded/util.js';

export interface TestCertificate {
  /** PEM file to put in NODE_EXTRA_CA_CERTS. */
  certFile: string;
  cert: Buffer;
  key: Buffer;
}

export function selfSignedCertificate(): TestCertificate {
  const dir = scratchDir('cs-fake-azure');
  const certFile = join(dir, 'cert.pem');
  const keyFile = join(dir, 'key.pem');
  try {
    execFileSync(
      'openssl',
      [
        'req',
        '-x509',
        '-newkey',
        'rsa:2048',
        '-nodes',
        '-sha256',
        '-days',
        '1',
        '-subj',
        '/CN=127.0.0.1',
        '-addext',
        'subjectAltName=IP:127.0.0.1',
        '-keyout',
        keyFile,
        '-out',
        certFile,
      ],
      { stdio: 'pipe' },
    );
  } catch (err) {
    throw new Error(`the Azure tests need openssl to make a test certificate (apt-get install openssl): ${(err as Error).message}`);
  }
  return { certFile, cert: readFileSync(certFile), key: readFileSync(keyFile) };
}
