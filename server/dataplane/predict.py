"""Predict's request preparation, shared by the request path and warmup.

Pure (numpy + protos): validates a PredictRequest against a SignatureDef map and decodes
its tensors, with TF Serving's checks, order and messages.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from protos import tensor_codec
from protos.errors import Code, ServingError, invalid_argument

DEFAULT_SIGNATURE = "serving_default"
# The most bytes one decoded request input may take by default (--max_tensor_bytes).
MAX_TENSOR_BYTES = 512 * 2**20
MAX_STRING_RANK = 32


def _join(names) -> str:
    return ",".join(sorted(names))


def signature_not_found(name: str) -> ServingError:
    """TF Serving's error for a signature the servable does not have (FAILED_PRECONDITION)."""
    return ServingError(Code.FAILED_PRECONDITION, f'Serving signature key "{name}" not found.')


def prepare_predict(signature_defs: Mapping, request, max_bytes: int = MAX_TENSOR_BYTES, claim=None
                    ) -> tuple[str, dict[str, np.ndarray], list[str]]:
    """(signature name, decoded inputs, output aliases) for a PredictRequest; an input that
    would decode to more than ``max_bytes`` is RESOURCE_EXHAUSTED before allocation, and so is
    one that ``claim`` (``server.dataplane.limits.Claim``) refuses: the request's elements over
    ``--max_request_elements``, or its bytes over what is left of the in-flight budget.

    Raises FAILED_PRECONDITION for an unknown signature, INVALID_ARGUMENT for bad inputs.
    """
    sig_name = request.model_spec.signature_name or DEFAULT_SIGNATURE
    signature = signature_defs.get(sig_name)
    if signature is None:
        raise signature_not_found(sig_name)
    return (sig_name, decode_inputs(signature, request.inputs, max_bytes, claim),
            output_aliases(signature, request.output_filter))


def decode_inputs(signature, request_inputs, max_bytes: int = MAX_TENSOR_BYTES, claim=None
                  ) -> dict[str, np.ndarray]:
    """Validate request inputs against a SignatureDef and decode them, with TF Serving's
    checks in its order: input count (fewer only when the signature has ``defaults``), then
    each signature alias (from the request, else its default), then unknown request names,
    then dtypes against the TensorInfo (not shapes: see ``check_inputs``). Each input's size as
    filled goes into ``claim`` (when given) before it is allocated."""
    sig_inputs = signature.inputs
    defaults = signature.defaults
    n_req, n_sig = len(request_inputs), len(sig_inputs)
    if n_req > n_sig or (n_req < n_sig and not defaults):
        sent, wanted = set(request_inputs), set(sig_inputs)
        raise invalid_argument(
            f"input size does not match signature: {n_req}!={n_sig} "
            f"len({{{_join(sent)}}}) != len({{{_join(wanted)}}}). Sent extra: {{{_join(sent - wanted)}}}. "
            f"Missing but required: {{{_join(wanted - sent)}}}.")
    decoded: dict[str, np.ndarray] = {}
    dtypes: dict[str, int] = {}
    for alias in sorted(sig_inputs):
        proto = request_inputs.get(alias) if alias in request_inputs else None
        if proto is None:
            if alias not in defaults:
                raise invalid_argument(
                    f"Signature input alias: {alias}(feed name: {sig_inputs[alias].name}) not found in request "
                    f"and no default value provided. Inputs expected to be in the request "
                    f"{{{_join(request_inputs)}}}, or default input alias set: {_join(defaults)}")
            proto = defaults[alias]
        try:
            if claim is not None:
                elements, nbytes = tensor_codec.filled_size(proto)
                # Over --max_tensor_bytes: to_ndarray refuses it below, with that flag's message.
                if elements * tensor_codec.BY_ENUM[proto.dtype].np_dtype.itemsize <= max_bytes:
                    claim.input(alias, elements, nbytes)
            decoded[alias] = tensor_codec.to_ndarray(proto, max_bytes=max_bytes)
        except tensor_codec.TensorTooLarge as e:
            raise ServingError(Code.RESOURCE_EXHAUSTED,
                               f"Input {alias} is too large: {e} (--max_tensor_bytes)") from None
        except tensor_codec.TensorRankTooLarge as e:
            raise invalid_argument(f"Input {alias} {e}") from None
        except tensor_codec.TensorCodecError:
            raise invalid_argument(f"tensor parsing error: {alias}") from None
        dtypes[alias] = proto.dtype
    used = [a for a in request_inputs if a in sig_inputs]
    if request_inputs and len(used) != n_req:
        raise invalid_argument(f"Inputs contains invalid name. Used request inputs: {_join(used)}, "
                               f"request input: {_join(request_inputs)}")
    check_inputs(signature, decoded, dtypes)
    return decoded


def check_inputs(signature, decoded: Mapping[str, np.ndarray], dtypes: Mapping[str, int]) -> None:
    """The dtype checks of a signature's inputs (``dtypes``: each input's DataType as sent),
    the part shared by gRPC's TensorProtos and REST's JSON, with the text of TensorFlow's
    session (``Expects arg[0] to be float but string is provided``).

    Shapes are not checked: TF Serving feeds tensors straight into the session, whose C++
    DirectSession does not compare a fed tensor with the placeholder's declared shape, so the
    graph's own ops decide (an input ``[3]`` for a ``[-1, 1]`` placeholder may well answer).
    Only string inputs of rank > 32 are refused, which TensorFlow's Python conversion cannot
    take without crashing the process.
    """
    sig_inputs = signature.inputs
    for index, alias in enumerate(decoded):
        info = sig_inputs[alias]
        if decoded[alias].dtype == object and decoded[alias].ndim > MAX_STRING_RANK:
            raise invalid_argument(f"Input {alias} has {decoded[alias].ndim} dimensions; string tensors may have "
                                   f"at most {MAX_STRING_RANK}")
        if info.dtype and dtypes[alias] != info.dtype:
            raise invalid_argument(f"Expects arg[{index}] to be {tensor_codec.dtype_name(info.dtype)} "
                                   f"but {tensor_codec.dtype_name(dtypes[alias])} is provided")


def output_aliases(signature, output_filter) -> list[str]:
    """The output aliases to return, in filter order (all outputs when the filter is empty)."""
    if not output_filter:
        return list(signature.outputs)
    seen: list[str] = []
    for alias in output_filter:
        if alias not in signature.outputs:
            raise invalid_argument(f"output tensor alias not found in signature: {alias} "
                                   f"Outputs expected to be in the set {{{_join(signature.outputs)}}}.")
        if alias in seen:
            raise invalid_argument(f"duplicate output tensor alias: {alias}")
        seen.append(alias)
    return seen
