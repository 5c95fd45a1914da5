/**
 * A user's handleContent, as the e2e tests replace the template's with it (WEBSUB_HANDLER): it
 * forwards each delivery to an API of theirs (DOWNSTREAM_URL, the tests' _downstream.ts), keyed on
 * the delivery's id so that the API can drop a repeat, and fails when the API does not take it.
 */
import process from "node:process";
import type { Logger } from "../../src/policy/log.ts";
import type { Delivery } from "../../src/websub/websub.ts";

export async function handleContent(delivery: Delivery, logger: Logger): Promise<void> {
  const res = await fetch(process.env.DOWNSTREAM_URL!, {
    method: "POST",
    body: delivery.body,
    headers: {
      "content-type": delivery.contentType ?? "application/octet-stream",
      "idempotency-key": delivery.id,
      "x-pid": String(process.pid),
    },
  });
  await res.body?.cancel();
  if (!res.ok) throw new Error(`The API answered ${res.status}`);
  logger.info("content_forwarded", { delivery: delivery.id, attempt: delivery.attempt });
}
