"""truenas_sim: a simulated TrueNAS host served as an MCP server, for testing the Portcullis gateway.

Run ``python -m truenas_sim`` (stdio) or ``python -m truenas_sim --http --port 8765`` (Streamable HTTP on
http://127.0.0.1:8765/mcp). ``--umbrella`` lists the single ``truenas`` tool, as the real server does.
"""

__version__ = "0.1.0"
