"""The upstream side: reaching an MCP server over stdio, Streamable HTTP or legacy SSE with the `mcp` SDK
(connect.py, listing.py), one live connection owned by one task (link.py), and the hot path's direct POST
(fastpath.py) on the gateway's own HTTP/1.1 client (http1.py).

Imports the models and the shared services only: it knows nothing of policy, calls or agents.
"""
