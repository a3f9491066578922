"""The HTTP face of Orchestra: REST API, live event streams, health and metrics.

Entry points: :func:`orchestra.api.app.create_app` (the ASGI app around a
runtime), :func:`orchestra.api.server.run_server` and
:func:`orchestra.api.server.run_worker`; authentication helpers the web pages
share live in :mod:`orchestra.api.auth`.
"""
