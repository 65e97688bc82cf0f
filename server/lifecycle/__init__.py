"""The version lifecycle: which versions exist (``source``), which should be loaded
(``policy``, pure), loading, serving and unloading them (``manager``: the immutable snapshot and
counted leases), the applied model config and its reloads (``model_config``), and what a loaded
version must offer (``servable``). Owned by the server's event loop.

May import: ``protos``, the standard library, watchdog, TF Serving's config protos. Never the
data plane, transports, servables, batching or rollouts (they are given to it, not imported).
"""
