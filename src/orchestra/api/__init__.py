"""The HTTP face of Orchestra: REST API, live event streams, health and metrics.

Its routers are assembled with the web pages by :func:`orchestra.app.create_app`
and served by :mod:`orchestra.server`; authentication helpers the web pages
share live in :mod:`orchestra.api.auth`.
"""
