/**
 * Azure failures as cloudshift errors. Invariant: every message built from an Azure answer names
 * the service's error code, the HTTP status and the request id (`x-ms-request-id`, or Entra ID's
 * trace id), so an operator can quote it to Azure support (azcopy does the same). Nothing here
 * prints a token or a secret: messages pass through redact().
 */
import { AggregateAuthenticationError, AuthenticationError, CredentialUnavailableError } from '@azure/identity';
import { CloudshiftError, ExitCode, messageOf } from '../errors.js';
import { redact } from '../redact.js';

/** What went wrong, for exit codes and for the dry run's "unreachable". */
export type AzureFailure =
  /** No token: credentials missing or refused. */
  | 'credential'
  /** The service could not be reached, or kept failing (5xx, 429) after the retries. */
  | 'unreachable'
  /** 401 / 403: signed in, but not allowed. */
  | 'forbidden'
  /** 404 */
  | 'not-found'
  /** 409: another operation holds the resource (e.g. a deployment of the same name is running). */
  | 'conflict'
  /** Another 4xx: the request was refused (e.g. an invalid template). */
  | 'rejected'
  /** A long-running operation ended in Failed or Canceled. */
  | 'failed';

const EXIT: Record<AzureFailure, ExitCode> = {
  credential: ExitCode.precondition,
  unreachable: ExitCode.precondition,
  forbidden: ExitCode.precondition,
  'not-found': ExitCode.precondition,
  conflict: ExitCode.conflict,
  rejected: ExitCode.invalid,
  failed: ExitCode.failed,
};

const HINT: Record<AzureFailure, string> = {
  credential:
    'sign in for DefaultAzureCredential: set AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_CLIENT_SECRET, use a managed or workload identity, or run `az login`',
  unreachable: 'check the network path to Azure (and azure.resourceManagerEndpoint in the plan), then try again',
  forbidden: 'give the signed-in identity the Reader role on the resource group (Contributor to deploy)',
  'not-found': 'check the subscription, resource group and resource names in the plan',
  conflict: 'another operation holds the resource: wait for it to finish, then try again',
  rejected: 'fix what Azure refused (see the message), then try again',
  failed: 'see the operation in the Azure portal (resource group → Deployments) for the failing resource',
};

export class AzureError extends CloudshiftError {
  constructor(
    readonly failure: AzureFailure,
    /** The service's error code, e.g. `ResourceGroupNotFound`, `invalid_client`. */
    readonly azureCode: string | undefined,
    readonly status: number | undefined,
    readonly requestId: string | undefined,
    message: string,
    options: { cause?: unknown; hint?: string } = {},
  ) {
    super('CS_AZURE', EXIT[failure], message, { cause: options.cause, hint: options.hint ?? HINT[failure] });
  }

  /** The service answered (so it is reachable), even if with an error. */
  get answered(): boolean {
    return this.failure !== 'credential' && this.failure !== 'unreachable' && this.failure !== 'forbidden';
  }
}

/** The parts of @azure/core-rest-pipeline's RestError we read (duck-typed: several copies may be loaded). */
interface RestErrorLike {
  name: string;
  message: string;
  code?: string;
  statusCode?: number;
  response?: { headers: { get(name: string): string | undefined }; bodyAsText?: string | null };
}

function isRestError(err: unknown): err is RestErrorLike {
  return err instanceof Error && err.name === 'RestError';
}

/** ` (ARM error X, HTTP 404, request id Y)`: the triple every message carries (Entra ID names a trace id). */
export function azureDetail(
  service: string,
  code: string | undefined,
  status: number | undefined,
  requestId: string | undefined,
  idLabel = 'request id',
): string {
  return ` (${service} error ${code ?? 'unknown'}, ${status === undefined ? 'no HTTP status' : `HTTP ${status}`}, ${idLabel} ${requestId ?? 'none'})`;
}

function failureOfStatus(status: number): AzureFailure {
  if (status === 401 || status === 403) return 'forbidden';
  if (status === 404) return 'not-found';
  if (status === 409) return 'conflict';
  if (status === 429 || status >= 500) return 'unreachable';
  return 'rejected';
}

function firstLine(s: string): string {
  return s.split('\n')[0]!.trim();
}

/** The service's message and code from an ARM error body, when the client did not parse them. */
function armBody(err: RestErrorLike, errorBody: string | undefined): { code?: string; message?: string } {
  try {
    const body = JSON.parse(err.response?.bodyAsText ?? errorBody ?? '') as { error?: { code?: string; message?: string } };
    return body.error ?? {};
  } catch {
    return {};
  }
}

interface ErrorBody {
  code?: string;
  message?: string;
  details?: ErrorBody[];
  error?: ErrorBody;
}

/** ARM's nested `details` (any depth), as "code: first line" each, at most five. */
function innerErrors(err: RestErrorLike, errorBody: string | undefined): string[] {
  const out: string[] = [];
  const walk = (e: ErrorBody | undefined, depth: number) => {
    for (const d of e?.details ?? []) {
      if (d.message || d.code) out.push(`${d.code ?? '?'}: ${firstLine(d.message ?? '')}`.trim());
      if (depth < 5) walk(d, depth + 1);
    }
  };
  let parsed: ErrorBody | undefined;
  try {
    parsed = JSON.parse(err.response?.bodyAsText ?? errorBody ?? '') as ErrorBody;
  } catch {
    parsed = (err as { details?: ErrorBody }).details;
  }
  walk(parsed?.error ?? parsed, 0);
  return [...new Set(out)].slice(0, 5);
}

/**
 * Turns anything an Azure client threw into an AzureError. `doing` says what was attempted, e.g.
 * "reading resource group rg-ehr"; `endpoint` names the service for unreachable errors.
 */
export function azureError(err: unknown, doing: string, endpoint: string, errorBody?: string): AzureError {
  if (err instanceof AzureError) return err;
  const identity = identityError(err, doing);
  if (identity) return identity;
  if (isRestError(err)) {
    const requestId = err.response?.headers.get('x-ms-request-id') ?? undefined;
    if (err.statusCode === undefined) {
      return new AzureError(
        'unreachable',
        err.code,
        undefined,
        undefined,
        `${doing}: cannot reach ${endpoint}: ${redact(firstLine(err.message))}${azureDetail('ARM', err.code, undefined, undefined)}`,
        { cause: err },
      );
    }
    const body = armBody(err, errorBody);
    const code = err.code && err.code !== 'REQUEST_SEND_ERROR' ? err.code : body.code;
    const message = firstLine(body.message ?? err.message) || `HTTP ${err.statusCode}`;
    // "See inner errors for details": ARM's reason (a template's validation, a name taken) is there.
    const inner = innerErrors(err, errorBody);
    return new AzureError(
      failureOfStatus(err.statusCode),
      code,
      err.statusCode,
      requestId,
      `${doing}: ${redact(message)}${inner.length ? ` (${redact(inner.join('; '))})` : ''}${azureDetail('ARM', code, err.statusCode, requestId)}`,
      { cause: err },
    );
  }
  return new AzureError('unreachable', undefined, undefined, undefined, `${doing}: ${redact(firstLine(messageOf(err)))}`, {
    cause: err,
  });
}

function identityError(err: unknown, doing: string): AzureError | null {
  if (err instanceof AggregateAuthenticationError) {
    // DefaultAzureCredential tried every credential; the first real refusal says most.
    const inner = (err.errors as unknown[]).find((e) => e instanceof AuthenticationError);
    if (inner instanceof AuthenticationError) return identityError(inner, doing);
    // None refused: each was unavailable, and each says why (`az login` expired, no managed identity…).
    const reasons = (err.errors as unknown[]).map((e) => firstLine(messageOf(e))).filter((m) => m.length > 0);
    return new AzureError(
      'credential',
      'CredentialUnavailable',
      undefined,
      undefined,
      `${doing}: no Azure credential is available: ${redact(reasons.length ? reasons.join('; ') : firstLine(messageOf(err)))}`,
      { cause: err },
    );
  }
  if (err instanceof AuthenticationError) {
    // EnvironmentCredential (first in DefaultAzureCredential) re-wraps the token endpoint's
    // refusal as a 400 whose description is MSAL's text ("invalid_client: Error(s): 7000215 -
    // … - Description: AADSTS… - Trace ID: …"): read the endpoint's own code and trace id back
    // from it. MSAL does not keep the HTTP status, so none is claimed.
    const r = err.errorResponse;
    const text = r.errorDescription ?? '';
    const wrapped = r.error.startsWith('EnvironmentCredential authentication failed');
    const code = (wrapped ? /^(\w+)(?::| Status code)/.exec(text)?.[1] : undefined) ?? (wrapped ? undefined : r.error);
    const status = wrapped ? undefined : err.statusCode;
    const traceId = r.traceId ?? /Trace ID: ([\w.-]+)/.exec(text)?.[1];
    const description = /AADSTS\d+.*?(?= - Correlation ID:|\r|\n|$)/.exec(text)?.[0] ?? (firstLine(text) || r.error);
    return new AzureError(
      'credential',
      code,
      status,
      traceId,
      `${doing}: Microsoft Entra ID refused the credentials: ${redact(description.trim())}${azureDetail('Entra ID', code, status, traceId, 'trace id')}`,
      { cause: err },
    );
  }
  if (err instanceof CredentialUnavailableError) {
    return new AzureError(
      'credential',
      'CredentialUnavailable',
      undefined,
      undefined,
      `${doing}: no Azure credential is available: ${redact(firstLine(err.message))}`,
      { cause: err },
    );
  }
  return null;
}
