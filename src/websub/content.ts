import type { Logger } from "../policy/log.ts";
import type { Delivery } from "./websub.ts";

/**
 * What this subscriber does with content a hub delivered and whose signature checked out.
 * Replace it with your own processing; it may be async, and slow: it runs after the hub had its
 * 202, from the inbox where the delivery was stored first. A delivery leaves the inbox once this
 * returns (or its promise resolves); a throw is retried with backoff, then kept as a dead letter.
 * At least once: a crash while it runs runs it again, so key what it does on `delivery.id`
 * (docs/websub.md#processing).
 */
export function handleContent(delivery: Delivery, logger: Logger): void {
  logger.info("content_received", {
    id: delivery.subscription.id,
    delivery: delivery.id,
    topic: delivery.subscription.topic,
    contentType: delivery.contentType,
    bytes: delivery.body.byteLength,
  });
}
