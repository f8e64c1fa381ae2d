"""The asynchronous MCP protocol on the agent side: strict JSON-RPC, the two eras, what each method does
(relay.py), agent sessions and their SSE streams and replay, held calls, and the multi round-trip bridges.

Takes one parsed message from the edge and returns one reply. Runs on the event loop; every database step goes
through `gateway.calls.dbthreads`. Imports `gateway.calls`, `gateway.catalogue`, `gateway.upstream`, the shared
services and `gateway.policy`; never the edge.
"""
