"""The rating engine's HTTP service: app factory, routes, error mapping, metrics, server."""
