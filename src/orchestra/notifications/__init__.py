"""Outgoing webhooks: events of the log queued in a durable outbox after their commit,
delivered (signed, retried with backoff) by a background task of every server and worker."""
