"""The tool catalogue: an upstream's listing synced into `Tool` rows (sync.py), each classified by risk (risk.py,
pure), refreshed from the upstream (refresh.py) and reviewed by a person (review.py).

Imports the models, the shared services, `gateway.upstream` (to list) and `gateway.policy`; never the protocol or
the edge.
"""
