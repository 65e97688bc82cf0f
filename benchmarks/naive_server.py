"""Baseline: the naive TF-Serving-API server of ../shared/docs/performance.md.

Sync grpc server, ``tf.make_ndarray`` per input, one TF signature call per request,
``tf.make_tensor_proto`` per output. Serves ``Predict`` for one SavedModel, latest only.
Usage: python benchmarks/naive_server.py MODEL_NAME SAVED_MODEL_DIR PORT
"""

import os
import sys
from concurrent import futures

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import grpc  # noqa: E402
import tensorflow as tf  # noqa: E402
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc  # noqa: E402


class Naive(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, name, path):
        self.name = name
        self.fn = tf.saved_model.load(path).signatures["serving_default"]

    def Predict(self, request, context):
        inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
        outputs = self.fn(**inputs)
        resp = predict_pb2.PredictResponse()
        resp.model_spec.name = self.name
        for k, v in outputs.items():
            resp.outputs[k].CopyFrom(tf.make_tensor_proto(v.numpy()))
        return resp


def main():
    name, path, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(Naive(name, path), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    print("ready", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
