"""Verso: a TensorFlow-Serving-compatible model server.

Package map (see README "Architecture"):
  server.settings    TF Serving's flags and text-proto config files -> ``Settings``
  server.app         composition root: wiring, start/stop order, signals
  server.core        transport-agnostic core: errors, tensor codec, version policy,
                     file-system source, manager (snapshot + leases)
  server.servables   the only place that imports TensorFlow: SavedModel loading and running
  server.api         request handlers (transport-agnostic) and the thin gRPC adapter
"""

__version__ = "0.1.0"
