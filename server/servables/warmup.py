"""Model warmup: replay ``assets.extra/tf_serving_warmup_requests`` before a version serves.

Runs in the load executor while the version is LOADING, straight on the new servable, as
TF Serving does: each PredictionLog record (predict, classify, regress, multi_inference) is
run ``iterations`` times; the model name and version in the logged request are ignored,
its signature is used. Any failure fails the load with TF Serving's message.
"""

from __future__ import annotations

import logging
import os
import time

import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2

from protos.errors import Code, ServingError, invalid_argument
from server.dataplane.examples import serialized_examples
from server.dataplane.predict import DEFAULT_SIGNATURE, prepare_predict

log = logging.getLogger("verso.warmup")

WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
MAX_RECORDS = 1000


def _run_examples(servable, signature_name: str, input_proto, missing_message: str) -> None:
    signature = servable.signature_defs.get(signature_name or DEFAULT_SIGNATURE)
    if signature is None:
        raise invalid_argument(f"{missing_message}{signature_name or DEFAULT_SIGNATURE}")
    if len(signature.inputs) != 1:
        raise invalid_argument("Expected one input Tensor.")
    (alias,) = signature.inputs
    servable.run(signature_name or DEFAULT_SIGNATURE, {alias: serialized_examples(input_proto)},
                 list(signature.outputs))


def replay(servable, record: prediction_log_pb2.PredictionLog) -> None:
    kind = record.WhichOneof("log_type")
    if kind == "predict_log":
        sig_name, inputs, aliases = prepare_predict(servable.signature_defs, record.predict_log.request)
        servable.run(sig_name, inputs, aliases)
    elif kind == "classify_log":
        req = record.classify_log.request
        _run_examples(servable, req.model_spec.signature_name, req.input, "No signature was found with the name: ")
    elif kind == "regress_log":
        req = record.regress_log.request
        _run_examples(servable, req.model_spec.signature_name, req.input, "No signature was found with the name: ")
    elif kind == "multi_inference_log":
        req = record.multi_inference_log.request
        for task in req.tasks:
            _run_examples(servable, task.model_spec.signature_name, req.input,
                          "Requested signature not found in model graph: ")
    else:
        raise ServingError(Code.UNIMPLEMENTED, f"Unsupported log_type for warmup: {kind}")


def run_warmup(servable, export_dir: str, iterations: int = 1) -> int:
    """Replay the warmup file of ``export_dir`` if it has one; returns the records read."""
    path = os.path.join(export_dir, WARMUP_FILE)
    if not os.path.exists(path):
        return 0
    start = time.monotonic()
    count = 0
    try:
        for item in tf.data.TFRecordDataset(path):
            raw = item.numpy()
            record = prediction_log_pb2.PredictionLog()
            try:
                record.ParseFromString(raw)
            except Exception:
                raise invalid_argument(f"Failed to parse warmup record: {raw.decode('utf-8', 'replace')} "
                                       f"from {path}") from None
            for _ in range(max(1, iterations)):
                replay(servable, record)
            count += 1
            if count > MAX_RECORDS:
                raise invalid_argument(f"Number of warmup records exceeds the maximum ({MAX_RECORDS}) at {path}")
    except tf.errors.DataLossError as e:
        raise ServingError(Code.DATA_LOSS,
                           f"{e.message}. Please verify your warmup data is in TFRecord format.") from None
    except tf.errors.OpError as e:
        raise ServingError(Code(e.error_code), e.message) from None
    log.info("Finished reading warmup data for model at %s. Number of warmup records read: %d. "
             "Elapsed time (microseconds): %d.", path, count, (time.monotonic() - start) * 1e6)
    return count
