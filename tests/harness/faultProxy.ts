/**
 * A loopback HTTP proxy in front of Azurite that answers 503 Server Busy to the requests a test
 * chooses, never answers them, or damages their bodies, and forwards the rest unchanged: the blob
 * service "answering 503 for a while", hanging, or bytes changed on the way.
 */
import { createServer, request, type IncomingMessage, type Server } from 'node:http';

export interface FaultProxy {
  /** Connection string pointing at the proxy instead of Azurite. */
  connectionString: string;
  /** Requests answered 503 so far. */
  failed: number;
  /** Decide per request: true → 503. */
  failWhen: (req: IncomingMessage) => boolean;
  /** Decide per request: true → no answer (until the client gives up or the proxy closes). */
  holdWhen: (req: IncomingMessage) => boolean;
  /** Requests held so far. */
  held: number;
  /** Decide per request: true → forwarded with the first byte of its body changed (bytes damaged on the way). */
  corruptWhen: (req: IncomingMessage) => boolean;
  /** The most requests that were in flight at once (from their arrival to their answer's end). */
  maxInFlight: number;
  close(): Promise<void>;
}

export async function startFaultProxy(azuriteConnectionString: string): Promise<FaultProxy> {
  const upstream = new URL(/BlobEndpoint=([^;]+)/.exec(azuriteConnectionString)![1]!);
  const proxy: FaultProxy = {
    connectionString: '',
    failed: 0,
    failWhen: () => false,
    holdWhen: () => false,
    held: 0,
    corruptWhen: () => false,
    maxInFlight: 0,
    close: async () => undefined,
  };
  let inFlight = 0;
  const server: Server = createServer((req, res) => {
    inFlight += 1;
    proxy.maxInFlight = Math.max(proxy.maxInFlight, inFlight);
    res.on('close', () => (inFlight -= 1));
    if (proxy.holdWhen(req)) {
      proxy.held += 1;
      req.resume();
      return;
    }
    if (proxy.failWhen(req)) {
      proxy.failed += 1;
      req.resume();
      res.writeHead(503, {
        'content-type': 'application/xml',
        'x-ms-error-code': 'ServerBusy',
        'x-ms-request-id': `fault-${proxy.failed}`,
      });
      res.end('<?xml version="1.0" encoding="utf-8"?><Error><Code>ServerBusy</Code><Message>The server is busy.</Message></Error>');
      return;
    }
    const forward = request(
      { host: upstream.hostname, port: upstream.port, method: req.method, path: req.url, headers: req.headers },
      (up) => {
        res.writeHead(up.statusCode ?? 502, up.headers);
        up.pipe(res);
      },
    );
    forward.on('error', () => res.destroy());
    if (!proxy.corruptWhen(req)) {
      req.pipe(forward);
      return;
    }
    let first = true;
    req.on('data', (chunk: Buffer) => {
      if (first && chunk.length > 0) {
        chunk[0] = chunk[0]! ^ 0xff;
        first = false;
      }
      forward.write(chunk);
    });
    req.on('end', () => forward.end());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  proxy.connectionString = azuriteConnectionString.replace(/BlobEndpoint=http:\/\/[^/;]+/, `BlobEndpoint=http://127.0.0.1:${port}`);
  proxy.close = () =>
    new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    });
  return proxy;
}
