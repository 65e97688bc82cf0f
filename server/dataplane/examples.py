"""tf.Example inputs (Classify / Regress / MultiInference ``Input``) as a string tensor."""

from __future__ import annotations

import numpy as np

from protos.errors import invalid_argument


def serialized_examples(input_proto) -> np.ndarray:
    """A 1-D object array of serialized Examples, as TF Serving feeds the signature.

    With ``example_list_with_context`` each element is the serialized context followed by
    the serialized example: protobuf parsing merges the two, so example features win.
    Raises INVALID_ARGUMENT ``Input is empty.`` when there is no example.
    """
    kind = input_proto.WhichOneof("kind")
    if kind == "example_list":
        rows = [e.SerializeToString() for e in input_proto.example_list.examples]
    elif kind == "example_list_with_context":
        ctx = input_proto.example_list_with_context.context.SerializeToString()
        rows = [ctx + e.SerializeToString() for e in input_proto.example_list_with_context.examples]
    else:
        rows = []
    if not rows:
        raise invalid_argument("Input is empty.")
    out = np.empty(len(rows), dtype=object)
    out[:] = rows
    return out
