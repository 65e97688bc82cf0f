"""The data plane: ``ServingCore`` (``core``), the one way in for every RPC and REST route;
Predict's checks and decoding (``predict``), Classify/Regress/MultiInference rules
(``inference``), tf.Example inputs (``examples``). Runs on the server's event loop; the model
runs in executors.

May import: ``protos``, ``server.lifecycle``, ``server.batching``. Never a transport.
"""
