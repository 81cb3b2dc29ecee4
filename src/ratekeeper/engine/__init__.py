"""The rating engine: scorers and (later) deployments, routing and the quote ledger."""
