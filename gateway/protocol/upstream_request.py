"""One agent request sent upstream on the agent's behalf, and its rounds of questions.

The upstream hears the agent's progress token (its progress comes back under the agent's own token), and a
stateless-era agent's declared capabilities. A stateless-era agent answers an `input_required` result itself
(it is passed back to it); for a session-era agent the gateway asks the agent each question on the stream of the
request it belongs to and repeats the request with the answers (gateway/protocol/input_bridge.py).
"""

from __future__ import annotations

import functools

from gateway.protocol import input_bridge, jsonrpc
from gateway.protocol.era import Era, declared_capabilities
from gateway.protocol.exchange import Request, progress_relay
from gateway.upstream.link import UpstreamLink


async def ask_upstream(req: Request, msg: jsonrpc.Message, link: UpstreamLink, era: Era, params: dict,
                       timeout: float) -> dict:
    """The upstream's final result for a session-era agent; its result, perhaps input_required, otherwise."""
    on_progress = progress_relay(req, msg)
    result = await link.request(msg.method, params, timeout=timeout, on_progress=on_progress,
                                client_capabilities=declared_capabilities(msg.params, era))
    if era is Era.STATELESS or not input_bridge.is_input_required(result):
        return result

    async def resend(responses: dict | None, state: str | None) -> dict:
        extra = {"inputResponses": responses, "requestState": state}
        again = {**params, **{k: v for k, v in extra.items() if v is not None}}
        return await link.request(msg.method, again, timeout=timeout, on_progress=on_progress)

    ask = functools.partial(link.ask_agent, channel=req.channel) if link.ask_agent is not None else None
    return await input_bridge.complete(result, ask=ask, capabilities=link.agent_capabilities, resend=resend)
