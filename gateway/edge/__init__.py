"""The HTTP edge of the MCP endpoint: ASGI apps for Streamable HTTP (endpoint.py) and legacy HTTP+SSE
(legacy_sse.py), the HTTP checks (Host, Origin, sizes, content types, the bearer token) and the process's start-up
work. Hands parsed messages to `gateway.protocol`; the top layer: nothing in `gateway` imports it.
"""
