"""The asynchronous MCP protocol on the agent side: strict JSON-RPC (jsonrpc.py), the two eras (era.py), dispatch
(relay.py), tools/list and tools/call (tools_list.py, tools_call.py: one ForwardedCall per call, forwarded_call.py),
the governed reads (governed_reads.py), agent sessions and their SSE streams and replay, held calls, and the multi
round-trip bridges (input_bridge.py, bridged_calls.py, parked_calls.py).

Takes one parsed message from the edge and returns one reply. Runs on the event loop; every database step goes
through `gateway.calls.dbthreads`. Imports `gateway.calls`, `gateway.catalogue`, `gateway.upstream`, the shared
services and `gateway.policy`; never the edge.
"""
