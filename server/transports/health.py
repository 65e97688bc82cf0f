"""The standard ``grpc.health.v1.Health`` service, following readiness.

TF Serving opens its port only once every configured model has a version loaded, so a health
check that answers at all answers SERVING. Verso opens the port earlier (a model that cannot
load answers NOT_FOUND while the others serve), so its health says what TF Serving's port
says: SERVING for ``""`` and the service names while every configured model has an AVAILABLE
version, NOT_SERVING otherwise and from the start of a shutdown on. ``verso.liveness`` answers
SERVING as long as the process's event loop runs, for liveness probes that must not restart a
server whose model is merely missing.

Owned by the event loop; ``step()`` is the whole decision, ``run()`` steps every second.
"""

from __future__ import annotations

import asyncio
from typing import Callable

from grpc_health.v1 import health_pb2

READINESS_SERVICES = ("", "ModelService", "PredictionService",
                      "tensorflow.serving.ModelService", "tensorflow.serving.PredictionService")
LIVENESS_SERVICE = "verso.liveness"


class HealthReporter:
    def __init__(self, servicer, ready: Callable[[], bool]):
        """``servicer``: a ``grpc_health`` aio HealthServicer; ``ready()``: readiness now."""
        self._servicer = servicer
        self._ready = ready
        self._serving = None

    async def start(self) -> None:
        await self._servicer.set(LIVENESS_SERVICE, health_pb2.HealthCheckResponse.SERVING)
        await self.step()

    async def step(self) -> bool:
        """Publish the current readiness if it changed; returns it."""
        ready = bool(self._ready())
        if ready != self._serving:
            self._serving = ready
            status = health_pb2.HealthCheckResponse.SERVING if ready else health_pb2.HealthCheckResponse.NOT_SERVING
            for name in READINESS_SERVICES:
                await self._servicer.set(name, status)
        return ready

    async def run(self, every_s: float = 1.0) -> None:
        while True:
            await asyncio.sleep(every_s)
            await self.step()
