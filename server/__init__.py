"""Verso: a TensorFlow-Serving-compatible model server, in named layers (docs/architecture.md):

  server.settings     flags and config files -> a frozen ``ServerConfig`` (one pass)
  server.app          composition root: ``App(config)`` build / start / stop
  server.lifecycle    the version lifecycle: source, pure policy, manager (snapshot, leases),
                      the applied model config, the ``Servable`` contract
  server.dataplane    ``ServingCore``: every RPC's semantics, over the lifecycle's snapshot
  server.transports   gRPC, REST, health, Prometheus, profiler: translation only
  server.servables    model formats, hooks, warmup, the loader (the TensorFlow runtime)
  server.batching     the batch scheduler;  server.rollout: canary routing, evidence, verdicts

The wire layer both server and client use lives in ``protos``. Import rules (checked by
tests/unit/test_layers.py): lifecycle imports no other server layer but nothing above it;
the data plane never imports a transport; no layer imports ``server.app`` or ``client``.
"""

__version__ = "0.1.0"
