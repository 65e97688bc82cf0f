"""The floor of a Python batcher: the least a grpc.aio server can do to batch Predict.

What any batching Python server on grpc.aio must do, and nothing more: parse the
PredictRequest (protobuf's C parser), decode its one input with the codec Verso uses, queue
it, run one session call per batch on one thread (Verso's own ``SavedModelServable.run``, so
the model costs the same as in Verso), split the rows, and build each PredictResponse. No
checks beyond the codec's, no metrics, no deadlines, no leases, no routing, no errors
mapped. Verso's CPU per request above this server's is what Verso's behaviour costs; this
server's above echo's is what batching a model on grpc.aio costs at all (issue 19).

Usage: python benchmarks/floor_server.py SAVED_MODEL_DIR PORT
"""

import asyncio
import os
import sys
from concurrent.futures import ThreadPoolExecutor

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

import numpy as np  # noqa: E402
from tensorflow_serving.apis import predict_pb2  # noqa: E402

from echo_server import serve_predict  # noqa: E402
from protos import tensor_codec  # noqa: E402
from server.servables.saved_model import load_saved_model  # noqa: E402

MAX_BATCH = 64


class Floor:
    """Requests queue on the loop; while the one batch thread is free, everything queued
    goes to it as one session call. One loop wake-up per batch."""

    def __init__(self, servable):
        self.servable = servable
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="batch")
        self.queue: list = []
        self.running = False
        self.loop = asyncio.get_running_loop()

    async def predict(self, request, context):
        x = tensor_codec.to_ndarray(request.inputs["images"])
        future = self.loop.create_future()
        self.queue.append((x, future))
        if not self.running:
            self._start()
        scores = await future
        response = predict_pb2.PredictResponse()
        response.model_spec.name = "mlp"
        response.model_spec.version.value = 1
        response.model_spec.signature_name = "serving_default"
        tensor_codec.fill_proto(response.outputs["scores"], scores)
        return response

    def _start(self):
        batch, self.queue = self.queue[:MAX_BATCH], self.queue[MAX_BATCH:]
        self.running = True
        self.executor.submit(self._run, batch)

    def _run(self, batch):
        rows = np.concatenate([x for x, _ in batch])
        scores = self.servable.run("serving_default", {"images": rows}, ["scores"])["scores"]
        self.loop.call_soon_threadsafe(self._done, batch, scores)

    def _done(self, batch, scores):
        start = 0
        for x, future in batch:
            future.set_result(scores[start:start + len(x)])
            start += len(x)
        self.running = False
        if self.queue:
            self._start()


async def main(path: str, port: int) -> None:
    floor = Floor(load_saved_model(path, ["serve"]))
    await serve_predict(floor.predict, port, predict_pb2.PredictRequest.FromString,
                        predict_pb2.PredictResponse.SerializeToString)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
