"""ServingCore's extension calls on a server without rollouts: UNIMPLEMENTED with one line,
whichever transport asks (the transports do not even route them then)."""

from __future__ import annotations

import asyncio
import inspect

import pytest

from protos import rollout_pb2
from protos.errors import Code, ServingError
from server.dataplane.core import ServingCore


@pytest.mark.parametrize("call", [
    lambda core: core.get_rollout("m"),
    lambda core: core.set_rollout(rollout_pb2.ModelRollout(model="m", stable=1)),
    lambda core: core.feedback("id", ["1"]),
])
def test_rollout_calls_without_rollouts_are_unimplemented(call):
    core = ServingCore(manager=None, executor=None, served=None, rollouts=None)
    with pytest.raises(ServingError) as e:
        result = call(core)
        if inspect.isawaitable(result):
            asyncio.run(result)
    assert (e.value.code, e.value.message) == (Code.UNIMPLEMENTED, "Rollouts are not enabled on this server")
