"""The synchronous database half of a call: admission (authenticate, look up, evaluate, reserve, audit), held
calls released or refused, settlement of the audit row; rate limits, approvals, the sealed continuation state,
prepared statements and the database threads it all runs on.

Runs on `dbthreads`, never on the event loop. Imports the models, the shared services and `gateway.policy`, never
the protocol or the edge. `from gateway import calls` gives the admission's API (`calls.admit`, `calls.settle`, …).
"""

from gateway.calls.admission import (  # noqa: F401 - the package's public API
    Admission,
    StaleServer,
    admit,
    facts_for,
    policy_for,
    refuse_held,
    release,
    settle,
    settle_many,
)
