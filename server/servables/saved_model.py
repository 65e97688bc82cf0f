"""SavedModel loading and running, the way TF Serving runs them: a graph in a session.

Every SavedModel, TF 1 or TF 2, is imported into its own ``tf.Graph`` and run by a
``tf.compat.v1.Session`` (TF Serving's ``SavedModelBundle``). A signature call is a
``Session::MakeCallable`` handle per (signature, inputs, outputs), run with the request's
arrays: as in TF Serving's C++ ``DirectSession``, no Python feed-shape check runs, so an input
whose shape differs from the declared TensorInfo shape reaches the graph and the graph's own
ops decide (with TensorFlow's op error text when one fails). TF's v2 loader
(``tf.saved_model.load``) would instead give the signature functions the declared static
shapes and refuse such calls; it also imports legacy graphs under the current producer
version, which turns a TF 1.0 placeholder's ``shape {}`` into a scalar (TF Serving: unknown).

Thread contract: ``load_saved_model`` and ``SavedModelServable.run`` block and are called
from the manager's load executor and the request executor, never on the event loop. A
``SavedModelServable`` is immutable after load except for its callable cache (guarded by a
lock), so concurrent ``run`` calls are safe (the session releases the GIL while it runs).
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Mapping, Sequence

import numpy as np
import tensorflow as tf
from google.protobuf import text_format
from tensorflow.core.protobuf import config_pb2, meta_graph_pb2, saved_model_pb2

from protos.errors import Code, ServingError, invalid_argument
from server.dataplane.predict import signature_not_found

log = logging.getLogger("verso.servables")

# A request may choose any subset of outputs (output_filter); each distinct set is a callable
# (a pruned executor in the session, as DirectSession caches them too). Bounded so a client
# cycling through subsets cannot grow memory without limit: past it, calls still run,
# through a callable made for that call alone.
MAX_CALLABLES_PER_VERSION = 64

_session = {"config": b"", "intra": 0, "inter": 0, "gpu_fraction": 0.0}


def configure_runtime(intra_op_threads: int = 0, inter_op_threads: int = 0, *, config: bytes = b"",
                      gpu_memory_fraction: float = 0.0) -> None:
    """How every session created afterwards is configured: ``config`` (a serialized
    ``tensorflow.ConfigProto``, e.g. ``--tensorflow_session_config_file``), then the thread
    counts and GPU memory fraction where they are non-zero (0 = the config's, else TF's
    choice). The thread counts also apply to eager ops (Keras versions). Call before loads."""
    _session.update(config=config, intra=intra_op_threads, inter=inter_op_threads, gpu_fraction=gpu_memory_fraction)
    try:
        if intra_op_threads:
            tf.config.threading.set_intra_op_parallelism_threads(intra_op_threads)
        if inter_op_threads:
            tf.config.threading.set_inter_op_parallelism_threads(inter_op_threads)
    except RuntimeError:  # eager context already initialised: sessions still get the values
        pass


def session_config() -> config_pb2.ConfigProto:
    """The ConfigProto of a new version's session (TF Serving's SessionBundleConfig.session_config)."""
    config = config_pb2.ConfigProto.FromString(_session["config"])
    if _session["intra"]:
        config.intra_op_parallelism_threads = _session["intra"]
    if _session["inter"]:
        config.inter_op_parallelism_threads = _session["inter"]
    if _session["gpu_fraction"]:
        config.gpu_options.per_process_gpu_memory_fraction = _session["gpu_fraction"]
    elif not config.gpu_options.per_process_gpu_memory_fraction:
        # Several versions share a GPU: take memory as needed rather than all of it at the first load.
        config.gpu_options.allow_growth = True
    # A graph exported on a machine with a GPU may pin ops to it; run them where they can run.
    config.allow_soft_placement = True
    return config


def read_meta_graph(path: str, tags: Sequence[str]) -> meta_graph_pb2.MetaGraphDef:
    """The MetaGraphDef of ``path`` whose tag set equals ``tags`` (TF's own lookup rule)."""
    pb = os.path.join(path, "saved_model.pb")
    pbtxt = os.path.join(path, "saved_model.pbtxt")
    saved = saved_model_pb2.SavedModel()
    if os.path.isfile(pb):
        with open(pb, "rb") as f:
            saved.ParseFromString(f.read())
    elif os.path.isfile(pbtxt):
        with open(pbtxt, "r", encoding="utf-8") as f:
            text_format.Parse(f.read(), saved)
    else:
        raise ServingError(
            Code.NOT_FOUND,
            f"Could not find SavedModel .pb or .pbtxt at supplied export directory path: {path}")
    wanted = set(tags)
    for mg in saved.meta_graphs:
        if set(mg.meta_info_def.tags) == wanted:
            return mg
    available = [",".join(mg.meta_info_def.tags) for mg in saved.meta_graphs]
    raise ServingError(
        Code.NOT_FOUND,
        f"Could not find meta graph def matching supplied tags: {{ {' '.join(sorted(wanted))} }}. "
        f"To inspect available tag-sets in the SavedModel, please use the SavedModel CLI: "
        f"`saved_model_cli`. Available tag-sets: {available}")


class SavedModelServable:
    """One loaded version of a SavedModel: its SignatureDefs (as stored in the bundle, what
    GetModelMetadata reports) and the session that runs them. Owns the session; ``unload``
    closes it."""

    def __init__(self, path: str, meta_graph: meta_graph_pb2.MetaGraphDef, session, *, keep_meta_graph: bool = False):
        self.path = path
        # The GraphDef lives on in the session; keeping the proto too only costs memory
        # (TF Serving's --remove_unused_fields_from_bundle_metagraph, on by default).
        self.meta_graph = meta_graph if keep_meta_graph else None
        self.signature_defs: Mapping[str, meta_graph_pb2.SignatureDef] = dict(meta_graph.signature_def)
        self._session = session
        self._callables: dict[tuple, object] = {}
        self._lock = threading.Lock()
        # TF's conversion of a string tensor of rank > 32 to numpy crashes the process (found by
        # tests/e2e/test_hypothesis_fuzz.py): such outputs, and string outputs whose rank the
        # graph cannot promise, are fetched flat with their shape and reshaped in numpy.
        self._flat: dict[str, tuple[str, str]] = {}
        graph = session.graph
        with graph.as_default():
            for sig in self.signature_defs.values():
                for info in sig.outputs.values():
                    if (info.dtype != tf.string.as_datatype_enum or info.WhichOneof("encoding") != "name"
                            or info.name in self._flat):
                        continue
                    try:
                        t = graph.get_tensor_by_name(info.name)
                    except (KeyError, ValueError):
                        continue  # the callable reports it
                    if t.shape.rank is None or t.shape.rank > 32:
                        with tf.name_scope("verso_flat"):
                            self._flat[info.name] = (tf.reshape(t, [-1]).name, tf.shape(t, out_type=tf.int64).name)
        # Prune and optimise each signature's graph now (all inputs, all outputs: what most calls
        # ask for), so the first request does not pay for it (~25 ms for a small model).
        for name, sig in self.signature_defs.items():
            if name.startswith("__saved_model") or not sig.inputs:  # TF 2's init op: not for serving
                continue
            try:
                self._callable(name, tuple(sorted(sig.inputs)), tuple(sig.outputs))
            except ServingError as e:  # a signature that cannot run fails its requests, not the load
                log.warning("Signature %s of %s cannot be prepared: %s", name, path, e.message)

    def _callable(self, signature_name: str, feeds: tuple[str, ...], fetches: tuple[str, ...]):
        key = (signature_name, feeds, fetches)
        fn = self._callables.get(key)
        if fn is not None:
            return fn
        signature = self.signature_defs[signature_name]
        options = config_pb2.CallableOptions()
        for alias in feeds:
            options.feed.append(_tensor_name(signature.inputs[alias], "input", alias))
        flat = []  # (position in the fetch list, output position) of outputs fetched flat
        for alias in fetches:
            name = _tensor_name(signature.outputs[alias], "output", alias)
            if name in self._flat:
                flat.append(len(options.fetch))
                options.fetch.extend(self._flat[name])
            else:
                options.fetch.append(name)
        with self._lock:
            fn = self._callables.get(key)
            if fn is None:
                session = self._session
                if session is None:
                    raise ServingError(Code.UNAVAILABLE, "The servable was unloaded")
                try:
                    fn = session._make_callable_from_options(options)  # noqa: SLF001 (C++ MakeCallable)
                except tf.errors.OpError as e:
                    raise ServingError(Code(e.error_code), e.message) from None
                if flat:
                    fn = _reshaping(fn, flat)
                if len(self._callables) < MAX_CALLABLES_PER_VERSION:
                    self._callables[key] = fn
        return fn

    def run(self, signature_name: str, inputs: Mapping[str, np.ndarray],
            output_aliases: Sequence[str]) -> dict[str, np.ndarray]:
        """Run one signature: ``inputs`` by alias (dtypes already checked against the
        SignatureDef; shapes are the graph's business), the outputs named by
        ``output_aliases``. Raises ``ServingError`` with TF's status code and the op's own
        message (``In[0] is not a matrix ...``) for errors raised while the graph runs."""
        if signature_name not in self.signature_defs:
            raise signature_not_found(signature_name)
        feeds = tuple(inputs)
        fetches = tuple(output_aliases)
        fn = self._callable(signature_name, feeds, fetches)
        try:
            results = fn(*(inputs[a] for a in feeds))
        except tf.errors.OpError as e:
            raise ServingError(Code(e.error_code), e.message) from None
        except (TypeError, ValueError) as e:  # the feed could not become a tensor
            raise invalid_argument(str(e).strip().splitlines()[0]) from None
        except RuntimeError:
            if self._session is None:  # closed under a caller holding no lease (a shadow call)
                raise ServingError(Code.UNAVAILABLE, "The servable was unloaded") from None
            raise
        return dict(zip(fetches, results))

    def unload(self) -> None:
        """Close the session, which frees the graph's variables and resources. No forced
        ``gc.collect()``: it measured ~170 ms of GIL pause per swap (every request stalls)
        and memory stays flat without it (benchmarks/README.md, memory)."""
        with self._lock:
            session, self._session = self._session, None
            self._callables = {}
        if session is not None:
            session.close()


def _reshaping(fn, flat: list[int]):
    """``fn`` whose fetches at the positions in ``flat`` are (flat values, shape) pairs,
    returning each pair as one array of that shape."""
    starts = set(flat)

    def call(*args):
        raw = fn(*args)
        out, i = [], 0
        while i < len(raw):
            if i in starts:
                out.append(raw[i].reshape(raw[i + 1]))
                i += 2
            else:
                out.append(raw[i])
                i += 1
        return out

    return call


def _tensor_name(info: meta_graph_pb2.TensorInfo, kind: str, alias: str) -> str:
    if info.WhichOneof("encoding") != "name":
        raise invalid_argument(f"Signature {kind} {alias} is a {info.WhichOneof('encoding')} tensor; "
                               f"Verso feeds and fetches dense tensors only")
    return info.name


def load_saved_model(path: str, tags: Sequence[str], *, keep_meta_graph: bool = False) -> SavedModelServable:
    """Load a SavedModel version directory into a new graph and session (warmup is the
    loader's: server/servables/loader.py). Raises ``ServingError`` on any failure; nothing
    of a failed load stays alive."""
    meta_graph = read_meta_graph(path, tags)
    from tensorflow.python.saved_model.loader_impl import SavedModelLoader

    graph = tf.Graph()
    session = tf.compat.v1.Session(graph=graph, config=session_config())
    try:
        with graph.as_default():
            SavedModelLoader(path).load(session, list(tags))
    except tf.errors.OpError as e:
        session.close()
        raise ServingError(Code(e.error_code), e.message) from None
    except Exception as e:  # TF raises assorted types for corrupt bundles
        session.close()
        raise ServingError(Code.INVALID_ARGUMENT,
                           f"Failed to load SavedModel at {path}: {type(e).__name__}: {e}") from None
    return SavedModelServable(path, meta_graph, session, keep_meta_graph=keep_meta_graph)
