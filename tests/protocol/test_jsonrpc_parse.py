"""gateway/protocol/jsonrpc.py `parse`: what an agent's body must be. The walk for lone surrogates and depth is
skipped when the text cannot hold either; these cases hold on both sides of that shortcut."""

from __future__ import annotations

import json

import pytest

from gateway.protocol import jsonrpc
from gateway.protocol.jsonrpc import INVALID_REQUEST, MAX_DEPTH, PARSE_ERROR, RpcError


def call(arguments: str) -> bytes:
    return ('{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":' + arguments
            + "}}").encode()


def nested(levels: int, open_: str = "[", close: str = "]") -> str:
    return open_ * levels + close * levels


# The message itself is 2 levels deep (the message, params) before the arguments object (3).
ACCEPTED = [
    ("plain", call('{"text":"hello"}')),
    ("a surrogate pair, escaped", call('{"text":"\\ud83d\\ude00"}')),
    ("brackets inside strings, shallow", call(json.dumps({"text": "[" * 200 + "{" * 200}))),
    ("exactly the deepest allowed", call('{"v":' + nested(MAX_DEPTH - 3) + "}")),
    ("many brackets, none deep", call('{"v":[' + ",".join(["[]"] * 100) + "]}")),
]
REFUSED = [
    ("a lone high surrogate", call('{"text":"\\ud800"}'), PARSE_ERROR),
    ("a lone low surrogate, upper case", call('{"text":"x\\uDFFFy"}'), PARSE_ERROR),
    ("a lone surrogate in a key", call('{"\\udbff":1}'), PARSE_ERROR),
    ("one level too deep, arrays", call('{"v":' + nested(MAX_DEPTH - 2) + "}"), INVALID_REQUEST),
    ("one level too deep, objects", call('{"v":' + nested(MAX_DEPTH - 2, '{"a":', "}").replace('{"a":}', "{}")
                                         + "}"), INVALID_REQUEST),
]


@pytest.mark.parametrize(("body",), [(body,) for _, body in ACCEPTED], ids=[name for name, _ in ACCEPTED])
def test_accepted(body):
    assert jsonrpc.parse(body).method == "tools/call"


@pytest.mark.parametrize(("body", "code"), [(b, c) for _, b, c in REFUSED], ids=[name for name, _, _ in REFUSED])
def test_refused(body, code):
    with pytest.raises(RpcError) as refused:
        jsonrpc.parse(body)
    assert refused.value.code == code
