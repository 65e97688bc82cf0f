"""Verso's own extension API (``verso.*`` protos) and its generated modules.

``rollout.proto`` -> ``protos.rollout_pb2`` / ``protos.rollout_pb2_grpc``: the rollout service
and the ``--rollout_config_file`` format. Regenerate with ``python protos/generate.py``.
"""
