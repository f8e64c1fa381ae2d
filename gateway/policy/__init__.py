"""The policy layer: pure Python, standard library only, no Django and no I/O (a test walks the imports).

`evaluate(facts, policy, counters, now) -> Decision` and `visibility(...)` (engine.py) decide one call; the policy
JSON is loaded, validated and exported by document.py; diff.py summarises what changed between two documents and
editing.py makes the dashboard's edits to a document. Callers import from `gateway.policy`: this package's public
names are the engine's and the document's.
"""

from gateway.policy.engine import *  # noqa: F403 - the engine and the document are this package's public API
