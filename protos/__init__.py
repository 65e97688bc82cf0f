"""The wire layer, shared by the server and the client and importing neither: what goes over
the wire and what both sides must read alike.

- ``tensor_codec``: numpy <-> ``TensorProto`` (numpy only, no TensorFlow runtime);
- ``errors``: ``ServingError``, TF/gRPC status codes and their HTTP statuses;
- ``rest_json``: TF Serving's REST JSON formats (orjson);
- ``private_protos``: TF Serving's config messages the tensorflow-serving-api wheel lacks,
  declared field by field in private descriptor pools;
- Verso's own extension API (``verso.*`` protos): ``rollout.proto`` -> ``protos.rollout_pb2`` /
  ``protos.rollout_pb2_grpc``, the rollout service and the ``--rollout_config_file`` format.
  Regenerate with ``python protos/generate.py``.

May import: numpy, protobuf, TF Serving's and TensorFlow's generated protos. Never ``server`` or
``client`` (tests/unit/test_layers.py).
"""
