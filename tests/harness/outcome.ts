/** What a promise was rejected with, or null if it was fulfilled: for tests that expect a failure and inspect it. */
export function rejectionOf(promise: Promise<unknown>): Promise<unknown> {
  return promise.then(
    () => null,
    (err: unknown) => err,
  );
}
