"""The node's HTTP API (aiohttp, JSON, OpenAPI at ``/openapi.json``, Prometheus at ``/metrics``),
its cookie-file authentication, and the small client the command line uses to talk to a
running node."""
