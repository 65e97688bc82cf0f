"""One loader per ``model_platform`` behind one interface, and the hooks on top.

``load_servable`` is what the manager's load executor calls for every version, whatever its
format: the format's loader (``tensorflow``: SavedModel, or its ``model.tflite`` with
``--prefer_tflite_model``; ``keras``: a ``.keras`` file; ``onnx``: a ``.onnx`` file through
onnxruntime), then the version's hooks (``assets.extra/verso_hooks.py``), then warmup. Every
servable has ``path``, ``signature_defs`` (what GetModelMetadata reports and requests are
checked against), ``run(signature, inputs, output_aliases)`` and ``unload()``; the version
lifecycle, batching, metrics and rollouts only use those.

TF Serving links TensorFlow Text's ops into its binary; Verso imports ``tensorflow_text``
(``pip install 'verso[text]'``) when a SavedModel first needs one of its ops, and a SavedModel
needing an op that is not registered fails its load with one line naming the op and, for TF
Text's ops, the package to install.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from typing import Sequence

from protos.errors import ServingError, invalid_argument
from server.lifecycle.model_config import KERAS_PLATFORM as KERAS
from server.lifecycle.model_config import ONNX_PLATFORM as ONNX
from server.lifecycle.model_config import TENSORFLOW_PLATFORM as TENSORFLOW

log = logging.getLogger("verso.servables")

# The ops tensorflow-text 2.21.1 registers (on TensorFlow 2.21.0), so that a missing one can be
# named with its package when tensorflow-text is not installed. Made by listing the op registry
# (TF_GetAllOpList, i.e. tensorflow.python.client.pywrap_tf_session) in a fresh process before
# and after ``import tensorflow_text``, then also loading every ``*.so`` under the package with
# tf.load_op_library (it added none); tests/integration/test_tf_text.py re-runs that diff
# against the installed tensorflow-text and fails when this table is out of date.
TF_TEXT_OPS = frozenset({
    "CaseFoldUTF8", "ConstrainedSequence", "FastBertNormalize", "FastWordpieceTokenizeWithOffsets",
    "FindSourceOffsets", "MaxSpanningTree", "NormalizeUTF8", "NormalizeUTF8WithOffsetsMap", "PhraseTokenize",
    "RegexSplitWithOffsets", "RougeL", "SentenceFragments", "SentenceFragmentsV2", "SentencepieceDetokenizeOp",
    "SentencepieceIdToStringOp", "SentencepieceOp", "SentencepieceStringToIdOp", "SentencepieceTokenizeOp",
    "SentencepieceTokenizeWithOffsetsOp", "SentencepieceVocabSizeOp", "SplitMergeTokenizeWithOffsets",
    "TFText>BoiseTagsToOffsets", "TFText>ByteSplitByOffsets", "TFText>ByteSplitWithOffsets",
    "TFText>FastSentencepieceDetokenize", "TFText>FastSentencepieceTokenize", "TFText>FastWordpieceDetokenize",
    "TFText>NgramsStringJoin", "TFText>OffsetsToBoiseTags", "TFText>PhraseDetokenize",
    "TFText>RoundRobinGenerateMasks", "TFText>RoundRobinTrim", "TFText>Utf8Binarize",
    "TFText>WhitespaceTokenizeWithOffsetsV2", "TokenizerFromLogits", "UnicodeScriptTokenizeWithOffsets",
    "WhitespaceTokenizeWithOffsets", "WordpieceTokenizeWithOffsets",
})
TF_TEXT_INSTALL = "pip install 'verso[text]'"

_text_lock = threading.Lock()
_text_state: str = ""  # "" not tried yet; "loaded", "absent" or "broken" after the first try


def import_tf_text() -> str:
    """Import ``tensorflow_text`` once per process, registering its ops as TF Serving's binary
    has them; returns "loaded", "absent" (not installed: silent) or "broken" (installed but
    the import failed: logged once). Thread-safe; loads run in several load threads."""
    global _text_state
    with _text_lock:
        if not _text_state:
            try:
                import tensorflow_text  # noqa: F401
                _text_state = "loaded"
            except ModuleNotFoundError as e:
                if e.name != "tensorflow_text":  # installed, but something it needs is not
                    log.error("tensorflow-text is installed but does not import: %s; SavedModels using "
                              "its ops will not load", _one_line(e))
                    _text_state = "broken"
                else:
                    _text_state = "absent"
            except Exception as e:  # e.g. NotFoundError from an op library built for another TF
                log.error("tensorflow-text is installed but does not import: %s; SavedModels using its ops "
                          "will not load", _one_line(e))
                _text_state = "broken"
        return _text_state


def _one_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0] if text else ''}".rstrip(": ")


_NOT_REGISTERED = re.compile(r"Op type not registered '([^']+)' in binary running on (.+?)\.(?: Make sure|\s|$)")


def explain_missing_op(message: str, text_state: str = "") -> str:
    """TensorFlow's multi-line ``Op type not registered 'X' in binary running on HOST. Make sure
    the Op and Kernel are registered ...`` (with its tf.contrib advice, which does not apply)
    as one line that says where the op comes from: for TF Text's ops, ``tensorflow-text`` and
    how to install it; for any other op, that this TensorFlow build lacks it. ``text_state``
    is ``import_tf_text()``'s answer. Any other message is returned unchanged."""
    m = _NOT_REGISTERED.search(message)
    if m is None:
        return message
    op, host = m.group(1), m.group(2)
    head = f"Op type not registered '{op}' in binary running on {host}."
    if op in TF_TEXT_OPS:
        if text_state == "loaded":
            import tensorflow_text
            version = getattr(tensorflow_text, "__version__", "?")
            return (f"{head} This op is provided by tensorflow-text, but the installed tensorflow-text {version} "
                    f"does not register it; install the version matching TensorFlow with {TF_TEXT_INSTALL}")
        if text_state == "broken":
            return (f"{head} This op is provided by tensorflow-text, which is installed but failed to import "
                    f"(see the server log); reinstall it with {TF_TEXT_INSTALL}")
        return f"{head} This op is provided by tensorflow-text; install it with {TF_TEXT_INSTALL}"
    import tensorflow as tf
    return f"{head} This op is not in this TensorFlow build (TensorFlow {tf.__version__})"


def _load_saved_model(path: str, tags: Sequence[str], keep_meta_graph: bool):
    """The SavedModel loader, with TF Text's ops registered on first need: importing
    tensorflow_text costs ~117 MiB of resident memory, so a server whose models do not use its
    ops never pays it. A load that fails on one of its ops imports it and tries once more."""
    from server.servables.saved_model import load_saved_model
    for attempt in (1, 2):
        try:
            return load_saved_model(path, tags, keep_meta_graph=keep_meta_graph)
        except ServingError as e:
            m = _NOT_REGISTERED.search(e.message)
            first_need = m is not None and m.group(1) in TF_TEXT_OPS and not _text_state
            text_state = import_tf_text() if first_need or m is not None else _text_state
            if attempt == 1 and first_need and text_state == "loaded":
                continue
            message = explain_missing_op(e.message, text_state)
            if message == e.message:
                raise
            raise ServingError(e.code, message) from None


def load_servable(path: str, platform: str = TENSORFLOW, *, tags: Sequence[str] = ("serve",), warmup: bool = True,
                  warmup_iterations: int = 1, prefer_tflite: bool = False, tflite_pools: int = 1,
                  tflite_interpreters_per_pool: int = 1, keep_meta_graph: bool = False):
    """Load one version directory; raises ``ServingError`` on any failure (the load fails).

    ``keep_meta_graph`` (``--remove_unused_fields_from_bundle_metagraph=false``): a SavedModel
    servable keeps its whole MetaGraphDef as ``meta_graph``, not only its SignatureDefs.

    ``prefer_tflite`` (``--prefer_tflite_model``): a ``tensorflow`` version directory holding
    ``model.tflite`` is served by TFLite interpreters (``tflite_pools`` pools of
    ``tflite_interpreters_per_pool`` each) instead of its SavedModel, as in TF Serving's
    saved_model_bundle_factory.cc; without the file the SavedModel loads as usual.
    """
    if platform == TENSORFLOW:
        from server.servables.tflite_model import TFLITE_FILE
        if prefer_tflite and os.path.isfile(os.path.join(path, TFLITE_FILE)):
            from server.servables.tflite_model import load_tflite
            servable = load_tflite(path, tflite_pools, tflite_interpreters_per_pool)
        else:
            servable = _load_saved_model(path, tags, keep_meta_graph)
    elif platform == KERAS:
        from server.servables.keras_model import load_keras
        servable = load_keras(path)
    elif platform == ONNX:
        from server.servables.onnx_model import load_onnx
        servable = load_onnx(path)
    else:
        raise invalid_argument(f"Unsupported model platform {platform}")
    from server.servables.hooks import HookedServable, load_hooks
    try:
        hooks = load_hooks(path)
        if warmup:
            # Warmup records address the model's own signatures (as in TF Serving), not the hooks'.
            from server.servables.warmup import run_warmup
            run_warmup(servable, path, warmup_iterations)
        if hooks is not None:
            servable = HookedServable(servable, hooks)
    except BaseException:
        servable.unload()
        raise
    return servable
