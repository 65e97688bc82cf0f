"""The ceiling: a grpc.aio PredictionService that returns a canned reply without any model.

Usage: python benchmarks/echo_server.py PORT
"""

import asyncio
import sys

import grpc
import numpy as np
from tensorflow_serving.apis import predict_pb2

CANNED = predict_pb2.PredictResponse()
CANNED.model_spec.name = "mlp"
CANNED.outputs["scores"].dtype = 1
CANNED.outputs["scores"].tensor_shape.dim.add(size=1)
CANNED.outputs["scores"].tensor_shape.dim.add(size=10)
CANNED.outputs["scores"].float_val.extend(np.full(10, 0.1, np.float32).tolist())
CANNED_BYTES = CANNED.SerializeToString()


async def predict(request: bytes, context) -> bytes:
    return CANNED_BYTES


async def serve_predict(predict, port: int, deserializer=None, serializer=None) -> None:
    """A grpc.aio PredictionService with only ``predict`` on 127.0.0.1:``port``; prints
    "ready" once listening and serves until killed (also the floor server's)."""
    handler = grpc.method_handlers_generic_handler("tensorflow.serving.PredictionService", {
        "Predict": grpc.unary_unary_rpc_method_handler(predict, request_deserializer=deserializer,
                                                       response_serializer=serializer)})
    server = grpc.aio.server(handlers=[handler])
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print("ready", flush=True)
    await server.wait_for_termination()


if __name__ == "__main__":
    asyncio.run(serve_predict(predict, int(sys.argv[1])))
