/** Blob service failures as operators need them: storage error code, HTTP status, request id. */
import type { RestError } from '@azure/storage-blob';
import { CloudshiftError, ExitCode } from '../../errors.js';
import { redact } from '../../redact.js';

export function blobError(err: RestError): CloudshiftError {
  const code =
    err.response?.headers.get('x-ms-error-code') ?? (err.details as { errorCode?: string } | undefined)?.errorCode ?? err.code ?? 'error';
  const requestId = err.response?.headers.get('x-ms-request-id');
  return new CloudshiftError(
    'CS_BLOB',
    ExitCode.precondition,
    `the Blob service failed: HTTP ${err.statusCode ?? '?'} ${code}${requestId ? ` (request id ${requestId})` : ''}: ${redact(err.message.split('\n')[0] ?? '')}`,
    { cause: err, hint: 'documents already uploaded are kept; when the service answers again, run the same command to resume' },
  );
}
