"""Transports: they only translate between the wire and ``server.dataplane.ServingCore`` —
gRPC (``grpc_service``), REST (``rest``), the health service (``health``), Prometheus
(``metrics``), TensorFlow's profiler service (``profiler``).

May import: ``protos``, ``server.dataplane``, ``server.lifecycle``.
"""
