import type { Logger } from "../policy/log.ts";
import type { Delivery } from "./websub.ts";

/**
 * What this subscriber does with content a hub delivered and whose signature checked out.
 * Replace it with your own processing; it runs after the hub has had its 202, so it may be slow.
 */
export function handleContent(delivery: Delivery, logger: Logger): void {
  logger.info("content_received", {
    id: delivery.subscription.id,
    topic: delivery.subscription.topic,
    contentType: delivery.contentType,
    bytes: delivery.body.byteLength,
  });
}
