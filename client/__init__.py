"""Verso's Python client: TF Serving's API with numpy in, numpy out.

    from client import Client
    with Client("localhost:8500") as c:
        c.predict("half_plus_two", [1.0, 2.0])        # -> array([2.5, 3.], dtype=float32)

* ``Client`` / ``AsyncClient``: gRPC (blocking / asyncio), retries on UNAVAILABLE, several
  replicas balanced by gRPC's round_robin (``"host1:8500,host2:8500"``);
* ``RestClient`` / ``AsyncRestClient``: the same methods over TF Serving's REST API;
* ``VersoError``: the one exception type (``.code`` a ``grpc.StatusCode``, ``.message``);
* ``verso predict|status|metadata|reload|bench``: the command line (``client.cli``).

The clients speak only TF Serving's public API, so they work against TensorFlow Serving too.
Tensors go through ``protos.tensor_codec``, the one numpy codec the server uses as well.
"""

__all__ = ["Client", "AsyncClient", "RestClient", "AsyncRestClient", "VersoError",
           "ModelMetadata", "Signature", "TensorSpec", "VersionStatus", "Prediction"]

_WHERE = {"Client": "grpc_client", "AsyncClient": "grpc_client", "RestClient": "rest_client",
          "AsyncRestClient": "rest_client", "VersoError": "errors", "ModelMetadata": "types",
          "Signature": "types", "TensorSpec": "types", "VersionStatus": "types", "Prediction": "_api"}


def __getattr__(name: str):
    # Lazy (PEP 562): ``client.cli`` must be importable before TF's protos are (see client._light).
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(f"client.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'client' has no attribute {name!r}")
