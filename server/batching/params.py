"""TF Serving's ``BatchingParameters`` text proto -> ``BatchingOptions``.

The message (tensorflow_serving/servables/tensorflow/session_bundle_config.proto) is not in
the ``tensorflow-serving-api`` wheel: it is declared in a private pool (protos/private_protos.py).
Defaults and validation messages are TF Serving's.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

from protos.errors import ServingError, invalid_argument
from protos.private_protos import BatchingParameters
from server.textproto import parse_text_proto


@dataclass(frozen=True)
class BatchingOptions:
    max_batch_size: int = 1000
    batch_timeout_micros: int = 0
    max_enqueued_batches: int = 10
    num_batch_threads: int = os.cpu_count() or 1
    thread_pool_name: str = "model_server_batch_threads"
    allowed_batch_sizes: tuple[int, ...] = ()
    pad_variable_length_inputs: bool = False
    enable_large_batch_splitting: bool = False
    max_execution_batch_size: Optional[int] = None
    # Verso extension: adaptive batch size for this latency objective (None = off).
    latency_objective_ms: Optional[float] = None

    @property
    def execution_batch_size(self) -> int:
        """The most rows one model call gets."""
        if self.enable_large_batch_splitting and self.max_execution_batch_size:
            return self.max_execution_batch_size
        return self.max_batch_size


def validate(o: BatchingOptions) -> BatchingOptions:
    """TF Serving's checks of the batching parameters (INVALID_ARGUMENT)."""
    if o.max_batch_size <= 0:
        raise invalid_argument("max_batch_size must be positive")
    if o.max_enqueued_batches <= 0:
        raise invalid_argument("max_enqueued_batches must be positive")
    if o.num_batch_threads <= 0:
        raise invalid_argument("num_batch_threads must be positive")
    if o.batch_timeout_micros < 0:
        raise invalid_argument("batch_timeout_micros must be non-negative")
    if o.max_execution_batch_size is not None and o.max_execution_batch_size <= 0:
        raise invalid_argument("max_execution_batch_size must be positive")
    if o.allowed_batch_sizes:
        last = 0
        for size in o.allowed_batch_sizes:
            if size <= last:
                raise invalid_argument("allowed_batch_sizes entries must be monotonically increasing")
            last = size
        expected = o.execution_batch_size
        if o.allowed_batch_sizes[-1] != expected:
            raise invalid_argument(f"Last entry in allowed_batch_sizes must match max_batch_size; last entry "
                                   f"was {o.allowed_batch_sizes[-1]}; expected {expected}")
    if o.latency_objective_ms is not None and o.latency_objective_ms <= 0:
        raise invalid_argument("the batching latency objective must be positive")
    return o


def parse_batching_parameters(text: str, path: str = "<text>", *,
                              latency_objective_ms: Optional[float] = None) -> BatchingOptions:
    """Text BatchingParameters -> validated options (see ``options_from_message``); a text that
    does not parse raises ``server.textproto.TextProtoError`` for ``path``."""
    return options_from_message(parse_text_proto(text, BatchingParameters(), path),
                                latency_objective_ms=latency_objective_ms)


def options_from_message(p, *, latency_objective_ms: Optional[float] = None) -> BatchingOptions:
    """A ``tensorflow.serving.BatchingParameters`` message (from any pool) -> validated options.

    Unset fields take TF Serving's defaults; ``thread_pool_name`` defaults to ``batch_threads``
    (the name TF Serving gives a pool whose parameters came from a file or platform config)."""
    d = BatchingOptions()

    def value(field: str, default):
        return getattr(p, field).value if p.HasField(field) else default

    opts = BatchingOptions(
        max_batch_size=value("max_batch_size", d.max_batch_size),
        batch_timeout_micros=value("batch_timeout_micros", d.batch_timeout_micros),
        max_enqueued_batches=value("max_enqueued_batches", d.max_enqueued_batches),
        num_batch_threads=value("num_batch_threads", d.num_batch_threads),
        thread_pool_name=value("thread_pool_name", "batch_threads"),
        allowed_batch_sizes=tuple(p.allowed_batch_sizes),
        pad_variable_length_inputs=p.pad_variable_length_inputs,  # a plain bool upstream, not a wrapper
        enable_large_batch_splitting=value("enable_large_batch_splitting", False),
        max_execution_batch_size=value("max_execution_batch_size", None),
        latency_objective_ms=latency_objective_ms,
    )
    return validate(opts)


def read_batching_parameters(path: str, **kw) -> BatchingOptions:
    """``--batching_parameters_file`` -> validated options; NOT_FOUND when it cannot be read,
    ``TextProtoError`` (INVALID_ARGUMENT) when it does not parse."""
    try:
        with open(path, "r", encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ServingError(5, f"Cannot read batching parameters file '{path}': {e.strerror}") from None
    return parse_batching_parameters(text, path, **kw)
