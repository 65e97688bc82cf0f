"""tf.Example inputs (Classify / Regress / MultiInference ``Input``) as a string tensor."""

from __future__ import annotations

import numpy as np

from protos.errors import invalid_argument


def serialized_examples(input_proto, claim=None) -> np.ndarray:
    """A 1-D object array of serialized Examples, as TF Serving feeds the signature.

    With ``example_list_with_context`` each element is the serialized context followed by
    the serialized example: protobuf parsing merges the two, so example features win.
    Raises INVALID_ARGUMENT ``Input is empty.`` when there is no example. ``claim``
    (``server.dataplane.limits.Claim``): the array's bytes are taken from the in-flight budget
    before it is made (one context is copied into every row: a small request can ask for a lot).
    """
    kind = input_proto.WhichOneof("kind")
    if kind == "example_list":
        examples = input_proto.example_list.examples
        if claim is not None:
            claim.take(sum(e.ByteSize() for e in examples) + 41 * len(examples), "The request")
        rows = [e.SerializeToString() for e in examples]
    elif kind == "example_list_with_context":
        examples = input_proto.example_list_with_context.examples
        context = input_proto.example_list_with_context.context
        if claim is not None:
            claim.take(sum(e.ByteSize() for e in examples) + (context.ByteSize() + 41) * len(examples),
                       "The request")
        ctx = context.SerializeToString()
        rows = [ctx + e.SerializeToString() for e in examples]
    else:
        rows = []
    if not rows:
        raise invalid_argument("Input is empty.")
    out = np.empty(len(rows), dtype=object)
    out[:] = rows
    return out
