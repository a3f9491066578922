"""The domain: statuses and transitions, the checkpoint contract, events, errors. No I/O."""
