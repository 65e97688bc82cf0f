"""Transport-agnostic request handlers: TF Serving's request semantics, once.

Every gRPC (and later REST) entry point is a thin adapter over ``ServingCore``. Handlers
run on the event loop that owns the ``Manager``; the model itself runs in the request
executor. Errors are raised as ``ServingError`` carrying TF Serving's code and message.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import Executor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Optional, Sequence

from tensorflow_serving.apis import (classification_pb2, get_model_metadata_pb2, get_model_status_pb2,
                                     inference_pb2, model_management_pb2, model_pb2, predict_pb2, regression_pb2)

from server.batching.params import BatchingOptions
from server.batching.scheduler import BatchQueue, BatchScheduler
from protos import tensor_codec
from server.dataplane import admin, inference
from server.dataplane.limits import OFFLOAD_BYTES, Claim, RequestLimits, array_bytes, outputs_bytes
from protos.errors import Code, ServingError, invalid_argument
from server.lifecycle.manager import Manager
from server.lifecycle.model_config import ServedModels, parse_model_config, validate_model_config
from server.dataplane.examples import serialized_examples
from server.dataplane.predict import DEFAULT_SIGNATURE, MAX_TENSOR_BYTES, check_inputs, prepare_predict
from server.lifecycle.servable import is_hooked
from server.rollout.cost import CostMeter, rows_of
from server.rollout.evidence import input_elements
from server.rollout.faults import MODEL, REFUSED, REQUEST, origin_of

log = logging.getLogger("verso.handlers")

SIGNATURE_DEF_FIELD = "signature_def"
MAX_OUTPUT_SETS = 16  # batch queues per version with an output set of their own (see _batch_queue)


@dataclass(slots=True)
class CallInfo:
    """One call, from the transport that received it to the core and back: what the transport
    knows (``api``, its ``entrypoint``, when it started, the caller's rollout routing key) and
    what the core learns (the ``model`` the request names, the ``version`` that answered, the
    rollout request id for feedback). ``ServingCore.record`` turns it into the request metrics,
    the same way for both transports. Owned by the one task serving the call.

    ``tf_api`` is TF Serving's API label of the request-latency metric when it is not ``api``
    (REST: the lower-case verb, empty for GETs); ``counted``: the call feeds TF Serving's
    request count and latency (gRPC: Predict, Classify and Regress only)."""

    api: str = ""
    entrypoint: str = ""
    routing_key: Optional[str] = None
    slice: Optional[str] = None       # the rollout slice key (``verso-slice`` / ``Verso-Slice``)
    request_id: Optional[str] = None
    model: str = ""
    version: Optional[int] = None
    tf_api: Optional[str] = None
    counted: bool = True
    t0: float = field(default_factory=time.perf_counter)
    # Control-plane calls (server/dataplane/admin.py): the caller (transport, peer, certificate
    # subject), its bearer token, whether it is on this machine, whether mutual TLS verified it.
    who: str = ""
    token: Optional[str] = None
    local: bool = False
    verified_client: bool = False
    # The call's share of the in-flight budget (server/dataplane/limits.py), when the transport
    # holds it past the core (until its answer is serialized); else the core takes its own.
    claim: Optional[Claim] = None


class ServingCore:
    """Predict / GetModelMetadata / GetModelStatus / ReloadConfig over one ``Manager`` and the
    applied model config (``served``: its version labels, and reloads). With ``rollouts`` (a
    ``server.rollout.manager.RolloutManager``), requests naming no version are routed by it and
    every call of a model under rollout is recorded as evidence."""

    def __init__(self, manager: Manager, executor: Executor, served: ServedModels, *,
                 tensor_content_outputs: bool = False, config_root: Optional[str] = None,
                 max_tensor_bytes: int = MAX_TENSOR_BYTES,
                 batching: Optional[tuple[BatchScheduler, BatchingOptions]] = None, metrics=None,
                 rollouts=None, admin_token: Optional[str] = None, limits: Optional[RequestLimits] = None):
        self.manager = manager
        self.rollouts = rollouts
        self.metrics = metrics  # server.transports.metrics.Metrics, or None
        self.executor = executor
        self.batching = batching
        self.served = served
        self.tensor_content_outputs = tensor_content_outputs
        self.max_tensor_bytes = max_tensor_bytes  # --max_tensor_bytes: per decoded Predict input
        # --max_request_elements and --max_inflight_bytes (derived from the memory when not given)
        self.limits = limits if limits is not None else RequestLimits.from_flags()
        self.config_root = config_root
        self.admin_token = admin_token  # --admin_token_file's token; None: loopback and mTLS callers only
        # CPU per version (server/rollout/cost.py): the rollout manager's meter, so that status
        # and the cost gate see what the serving path measured.
        self.costs = rollouts.costs if rollouts is not None else CostMeter()

    # ---- model spec --------------------------------------------------------------------

    def resolve(self, spec: model_pb2.ModelSpec) -> tuple[str, Optional[int]]:
        """(name, version or None for latest) for a ModelSpec, as TF Serving resolves it."""
        if not spec.name:
            raise invalid_argument("ModelSpec has no name specified.")
        choice = spec.WhichOneof("version_choice")
        if choice == "version":
            return spec.name, spec.version.value
        if choice == "version_label":
            version = self.served.labels.get(spec.name, {}).get(spec.version_label)
            if version is None:
                raise invalid_argument(f"Unrecognized servable version label: {spec.version_label}")
            return spec.name, version
        return spec.name, None

    def routed(self, spec: model_pb2.ModelSpec, call: Optional[CallInfo] = None) -> tuple[str, Optional[int]]:
        """``resolve``, then the rollout's choice for a model under rollout (an explicit version
        is never rerouted; a label only when the rollout lists it)."""
        name, version = self.resolve(spec)
        if self.rollouts is not None and name in self.rollouts.configs:
            choice = self.rollouts.route(name, spec.WhichOneof("version_choice"), spec.version_label,
                                         call.routing_key if call is not None else None)
            if choice is not None:
                version = choice
        return name, version

    def _observe(self, handle, t0: float, code: str, call: Optional[CallInfo], outputs=None, shadow=None,
                 origin: Optional[str] = None, size: Optional[int] = None) -> None:
        """Evidence for a model under rollout: the call, its request id, maybe a shadow call.
        ``origin`` and ``size``: whose fault a failure is, the call's input elements (see
        ``RolloutManager.observe``)."""
        if self.rollouts is None or handle.name not in self.rollouts.configs:
            return
        request_id = self.rollouts.observe(handle.name, handle.version, time.perf_counter() - t0, code, outputs,
                                           call.slice if call is not None else None, origin=origin, size=size,
                                           load=handle.load_id)
        if call is not None:
            call.request_id = request_id
        if shadow is not None and outputs is not None:
            self.rollouts.maybe_shadow(handle.name, handle.version, *shadow, outputs)

    def _origin(self, error: Exception, phase: str, handle, check) -> str:
        """Whose fault a failed call of ``handle`` is (server/rollout/faults.py): ``origin_of``,
        except that a request the canary refused before running (``REQUEST``) that its stable
        version accepts (``check(stable's handle)`` passes) is the canary's (``REFUSED``)."""
        origin = origin_of(error, phase)
        stable = (self.rollouts.stable_of(handle.name, handle.version)
                  if origin == REQUEST and self.rollouts is not None else None)
        if stable is None:
            return origin
        try:
            with self.manager.lease(handle.name, stable) as other:
                check(other)
        except Exception:
            return origin  # stable refuses it too (or is not serving): the request's fault
        return REFUSED

    def record(self, call: CallInfo, error: Optional[ServingError]) -> None:
        """The request metrics of one finished call, for every transport (TF Serving's request
        count and latency, Verso's per-version series): the time since ``call.t0``, the model
        and version the core put into ``call``, the error's code. Latency counts successes only."""
        if self.metrics is not None:
            self.metrics.request(call.model, call.version, call.api, call.entrypoint,
                                 "OK" if error is None else error.code.name, time.perf_counter() - call.t0,
                                 tf_api=call.tf_api, count_tf=call.counted)

    # ---- Predict -----------------------------------------------------------------------

    @contextmanager
    def claimed(self, call: Optional[CallInfo]):
        """The call's claim on the in-flight budget: the transport's (``call.claim``), else one
        that this block takes and gives back."""
        if call is not None and call.claim is not None:
            yield call.claim
        else:
            with self.limits.claim() as claim:
                yield claim

    async def predict(self, request: predict_pb2.PredictRequest,
                      call: Optional[CallInfo] = None) -> predict_pb2.PredictResponse:
        _named(call, request.model_spec)
        if not request.HasField("model_spec"):
            raise invalid_argument("Missing ModelSpec")
        with self.claimed(call) as claim:
            handle, sig_name, aliases, outputs = await self._predict_on(
                request.model_spec, call,
                lambda h: prepare_predict(h.servable.signature_defs, request, self.max_tensor_bytes, claim),
                claim, offload=_filled_bytes(request) > OFFLOAD_BYTES)
            response = predict_pb2.PredictResponse()
            response.model_spec.name = handle.name
            response.model_spec.version.value = handle.version
            response.model_spec.signature_name = sig_name
            if outputs_bytes({a: outputs[a] for a in aliases}) > OFFLOAD_BYTES:
                await asyncio.get_running_loop().run_in_executor(self.executor, self._encode, response, aliases,
                                                                 outputs)
            else:
                self._encode(response, aliases, outputs)
        return response

    def _encode(self, response: predict_pb2.PredictResponse, aliases, outputs) -> None:
        for alias in aliases:
            tensor_codec.fill_proto(response.outputs[alias], outputs[alias],
                                    tensor_content=self.tensor_content_outputs)

    async def predict_decoded(self, spec: model_pb2.ModelSpec, signature_name: str, decode,
                              call: Optional[CallInfo] = None, offload: bool = False) -> tuple[str, int, str, dict]:
        """Predict for a transport that decodes its own inputs (REST's JSON).

        ``decode(signature) -> (arrays by alias, dtypes by alias)`` runs once the signature is
        known; the arrays then pass TF Serving's dtype and shape checks. Returns (model name,
        version, signature name, outputs by alias). An unknown signature is INVALID_ARGUMENT
        with TF Serving's REST text. The decoded arrays go into the call's claim
        (``call.claim``: the transport holds it until its answer is written); ``offload``: decode
        in the request executor (a large body), not on the loop.
        """
        with self.claimed(call) as claim:
            def prepare(handle):
                sig_name = signature_name or DEFAULT_SIGNATURE
                signature = handle.servable.signature_defs.get(sig_name)
                if signature is None:
                    raise invalid_argument(f'Serving signature name: "{sig_name}" not found in signature def')
                inputs, dtypes = decode(signature)
                for alias, arr in inputs.items():
                    claim.input(alias, arr.size, array_bytes(arr))
                check_inputs(signature, inputs, dtypes)
                return sig_name, inputs, list(signature.outputs)

            _named(call, spec)
            handle, sig_name, _, outputs = await self._predict_on(spec, call, prepare, claim, offload)
        return handle.name, handle.version, sig_name, outputs

    async def _predict_on(self, spec: model_pb2.ModelSpec, call: Optional[CallInfo], prepare, claim: Claim,
                          offload: bool = False):
        """The Predict path of both transports: route, lease, ``prepare(handle) -> (signature
        name, inputs, output aliases)`` (in the request executor when ``offload``: a large
        decode), run, check the outputs against ``claim`` before anything encodes them, release,
        record rollout evidence. Returns (handle, signature name, aliases, outputs); the lease is
        already released."""
        name, version = self.routed(spec, call)
        with self.manager.lease(name, version) as handle:
            t0 = time.perf_counter()
            phase, size = REQUEST, None  # a failure before the model runs is the request's (rollout/faults.py)
            try:
                if offload:
                    sig_name, inputs, aliases = await asyncio.get_running_loop().run_in_executor(
                        self.executor, prepare, handle)
                else:
                    sig_name, inputs, aliases = prepare(handle)
                size = input_elements(inputs)
                if self.rollouts is not None:
                    self.rollouts.observe_inputs(handle.name, handle.version, inputs)
                phase = MODEL
                outputs = await self.run(handle, sig_name, inputs, aliases, "Predict")
                claim.outputs(outputs[a] for a in aliases)
            except Exception as e:  # the transport answers any other exception as INTERNAL
                self._observe(handle, t0, e.code.name if isinstance(e, ServingError) else "INTERNAL", call,
                              origin=self._origin(e, phase, handle, prepare), size=size)
                raise
        self._observe(handle, t0, "OK", call, outputs, (sig_name, inputs, aliases), size=size)
        if call is not None:
            call.version = handle.version
        return handle, sig_name, aliases, outputs

    async def run(self, handle, sig_name: str, inputs: dict, aliases: Sequence[str], api: str) -> dict:
        """Run a leased version's signature: through its batch queue when batching is on (a
        signature with hooks: preprocess, the batched model call, postprocess), else straight
        in the request executor. The caller holds the lease until this returns.
        ``api`` ("Predict", "Classify", ...) labels the runtime-latency metric, which counts
        the wait in the batch queue too (as TF Serving's batching session does)."""
        t0 = time.perf_counter()
        servable = handle.servable
        loop = asyncio.get_running_loop()
        costs = self.costs
        # Timed under the version's key: its measured draw rate weighs its share of the pools' CPU
        # against the calls running beside it (server/rollout/cost.py).
        timed = costs.share.keyed((handle.name, handle.version)).timed
        hook_timed = costs.share.keyed((handle.name, handle.version, "hooks")).timed  # Python: its own rate
        if self.batching is None:
            outputs, cpu = await loop.run_in_executor(self.executor, timed, servable.run, sig_name, inputs, aliases)
            costs.add(handle.name, handle.version, cpu, rows_of(inputs))
        elif is_hooked(servable) and servable.hooked(sig_name):
            # Hooks run per request on each side of the batch, so the model call stays batched;
            # a side without a hook costs no thread hop. Their CPU is the version's too (no rows:
            # the batch counts them).
            if servable.has_preprocess():
                model_inputs, cpu = await loop.run_in_executor(self.executor, hook_timed, servable.preprocess, sig_name,
                                                               inputs)
                costs.add(handle.name, handle.version, cpu, 0)
            else:
                model_inputs = inputs
            queue = self._batch_queue(handle, sig_name, tuple(servable.model_aliases(sig_name)))
            model_outputs = await queue.submit(model_inputs)
            if servable.has_postprocess():
                outputs, cpu = await loop.run_in_executor(self.executor, hook_timed, servable.postprocess, sig_name,
                                                          model_outputs, aliases)
                costs.add(handle.name, handle.version, cpu, 0)
            else:
                outputs = servable.postprocess(sig_name, model_outputs, aliases)
        else:
            outputs = await self._batch_queue(handle, sig_name, tuple(aliases)).submit(inputs)
        if self.metrics is not None:
            self.metrics.runtime(handle.name, api, time.perf_counter() - t0)
        return outputs

    # ---- Classify / Regress / MultiInference -----------------------------------------------

    async def classify(self, request: classification_pb2.ClassificationRequest,
                       call: Optional[CallInfo] = None) -> classification_pb2.ClassificationResponse:
        response = classification_pb2.ClassificationResponse()
        await self._one_task(inference.CLASSIFY_METHOD, request, response, call)
        return response

    async def regress(self, request: regression_pb2.RegressionRequest,
                      call: Optional[CallInfo] = None) -> regression_pb2.RegressionResponse:
        response = regression_pb2.RegressionResponse()
        await self._one_task(inference.REGRESS_METHOD, request, response, call)
        return response

    async def _one_task(self, method: str, request, response, call: Optional[CallInfo]) -> None:
        _named(call, request.model_spec)
        if not request.HasField("model_spec"):
            raise invalid_argument("Missing ModelSpec")
        name, version = self.routed(request.model_spec)
        with self.manager.lease(name, version) as handle, self.claimed(call) as claim:
            t0 = time.perf_counter()
            phase = REQUEST
            try:
                p = inference.plan(method, handle.servable.signature_defs, request.model_spec.signature_name)
                examples = serialized_examples(request.input, claim)
                if self.metrics is not None:
                    self.metrics.examples(name, len(examples))
                phase = MODEL
                outputs = await self.run(handle, p.signature_name, {p.input_alias: examples}, p.output_aliases,
                                         "Classify" if method == inference.CLASSIFY_METHOD else "Regress")
                claim.outputs(outputs.values())
            except Exception as e:
                origin = self._origin(e, phase, handle, lambda h: inference.plan(
                    method, h.servable.signature_defs, request.model_spec.signature_name))
                self._observe(handle, t0, e.code.name if isinstance(e, ServingError) else "INTERNAL", None,
                              origin=origin,
                              size=len(examples) if phase == MODEL else None)
                raise
        self._observe(handle, t0, "OK", None, size=len(examples))
        if method == inference.CLASSIFY_METHOD:
            response.result.CopyFrom(inference.classification_result(len(examples), outputs))
        else:
            response.result.CopyFrom(inference.regression_result(len(examples), outputs))
        response.model_spec.name = name
        response.model_spec.version.value = handle.version
        response.model_spec.signature_name = p.signature_name
        if call is not None:
            call.version = handle.version

    async def multi_inference(self, request: inference_pb2.MultiInferenceRequest,
                              call: Optional[CallInfo] = None) -> inference_pb2.MultiInferenceResponse:
        # TF Serving resolves the version from the first task's spec (an empty spec if none).
        spec = request.tasks[0].model_spec if request.tasks else model_pb2.ModelSpec()
        _named(call, spec)
        name, version = self.resolve(spec)
        with self.manager.lease(name, version) as handle, self.claimed(call) as claim:
            plans = inference.multi_inference_plans(handle.servable.signature_defs, request.tasks)
            examples = serialized_examples(request.input, claim)
            if self.metrics is not None:
                self.metrics.examples(name, len(examples))
            results = []
            for p in plans:
                outputs = await self.run(handle, p.signature_name, {p.input_alias: examples}, p.output_aliases,
                                         "MultiInference")
                claim.outputs(outputs.values())
                results.append((p, outputs))
        response = inference_pb2.MultiInferenceResponse()
        for p, outputs in results:
            entry = response.results.add()
            entry.model_spec.name = name
            entry.model_spec.version.value = handle.version
            entry.model_spec.signature_name = p.signature_name
            if p.method == inference.CLASSIFY_METHOD:
                entry.classification_result.CopyFrom(inference.classification_result(len(examples), outputs))
            else:
                entry.regression_result.CopyFrom(inference.regression_result(len(examples), outputs))
        if call is not None and results:
            call.version = handle.version
        return response

    def _batch_queue(self, handle, sig_name: str, aliases: tuple[str, ...]) -> BatchQueue:
        """The version's queue for this signature and output set (created on first use). The
        output set is a caller's ``output_filter``: the queue is the set's whatever its order,
        and past ``MAX_OUTPUT_SETS`` sets of a version, the queue of every output (the answers
        are picked by alias), so that callers cannot multiply a version's queues."""
        aliases = tuple(sorted(aliases))
        key = (sig_name, aliases)
        queue = handle.batch_queues.get(key)
        if queue is None and len(handle.batch_queues) >= MAX_OUTPUT_SETS:
            signature = handle.servable.signature_defs.get(sig_name)
            if signature is not None and not (is_hooked(handle.servable) and handle.servable.hooked(sig_name)):
                aliases = tuple(sorted(signature.outputs))
                key = (sig_name, aliases)
                queue = handle.batch_queues.get(key)
        if queue is None:
            scheduler, options = self.batching
            # A servable with hooks batches its model call alone (``run_model``).
            servable = handle.servable
            run = servable.run_model if is_hooked(servable) else servable.run
            costs, name, version = self.costs, handle.name, handle.version
            queue = BatchQueue(scheduler, lambda merged: run(sig_name, merged, aliases), options,
                               name=f"{handle.name}/{handle.version}/{sig_name}", cpu=costs.share.keyed((name, version)),
                               on_cost=lambda cpu, rows: costs.add(name, version, cpu, rows))
            handle.batch_queues[key] = queue
        return queue

    # ---- GetModelMetadata ----------------------------------------------------------------

    def get_model_metadata(self, request: get_model_metadata_pb2.GetModelMetadataRequest,
                           call: Optional[CallInfo] = None) -> get_model_metadata_pb2.GetModelMetadataResponse:
        _named(call, request.model_spec)
        if not request.HasField("model_spec"):
            raise invalid_argument("Missing ModelSpec")
        if not request.metadata_field:
            raise invalid_argument("GetModelMetadataRequest must specify at least one metadata_field")
        for f in request.metadata_field:
            if f != SIGNATURE_DEF_FIELD:
                raise invalid_argument(f"Metadata field {f} is not supported")
        name, version = self.resolve(request.model_spec)
        with self.manager.lease(name, version) as handle:
            sig_map = get_model_metadata_pb2.SignatureDefMap()
            for key, sig in handle.servable.signature_defs.items():
                sig_map.signature_def[key].CopyFrom(sig)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = name
        response.model_spec.version.value = handle.version
        response.metadata[SIGNATURE_DEF_FIELD].Pack(sig_map)
        if call is not None:
            call.version = handle.version
        return response

    # ---- GetModelStatus -----------------------------------------------------------------

    def get_model_status(self, request: get_model_status_pb2.GetModelStatusRequest,
                         call: Optional[CallInfo] = None) -> get_model_status_pb2.GetModelStatusResponse:
        # TF Serving ignores version_label here; so do we.
        _named(call, request.model_spec)
        if not request.HasField("model_spec"):
            raise invalid_argument("Missing ModelSpec")
        spec = request.model_spec
        statuses = self.manager.status(spec.name)
        if spec.HasField("version"):
            statuses = [s for s in statuses if s.version == spec.version.value]
            if not statuses:
                raise ServingError(Code.NOT_FOUND,
                                   f"Could not find version {spec.version.value} of model {spec.name}")
        elif not statuses:
            raise ServingError(Code.NOT_FOUND, f"Could not find any versions of model {spec.name}")
        response = get_model_status_pb2.GetModelStatusResponse()
        for s in statuses:
            entry = response.model_version_status.add()
            entry.version = s.version
            entry.state = int(s.state)
            entry.status.SetInParent()  # TF Serving always sets it (OK when there is no error)
            if s.error is not None:
                entry.status.error_code = int(s.error.code)
                entry.status.error_message = s.error.message
        return response

    # ---- Verso's extensions: the model list and rollouts ----------------------------------------

    def list_models(self) -> list[tuple[str, get_model_status_pb2.GetModelStatusResponse]]:
        """Every model the manager knows, by name, with its GetModelStatus answer (``GET
        /v1/models``); a model with no version known yet is left out."""
        out = []
        for name in sorted(self.manager.model_names()):
            request = get_model_status_pb2.GetModelStatusRequest(model_spec=model_pb2.ModelSpec(name=name))
            try:
                out.append((name, self.get_model_status(request)))
            except ServingError:
                continue
        return out

    def _admin(self, call: Optional[CallInfo], what: str) -> None:
        """Control-plane calls from a transport must pass ``admin.check`` (in-process callers,
        ``call`` None, are the server itself)."""
        if call is not None:
            admin.check(what, expected_token=self.admin_token, token=call.token, local=call.local,
                        verified_client=call.verified_client)

    def _rollouts(self):
        if self.rollouts is None:
            raise ServingError(Code.UNIMPLEMENTED, "Rollouts are not enabled on this server")
        return self.rollouts

    def get_rollout(self, model: str):
        """GetRollout: a model's ``verso.rollout.RolloutStatus`` (NOT_FOUND without a rollout)."""
        return self._rollouts().status(model)

    async def set_rollout(self, rollout, call: Optional[CallInfo] = None):
        """SetRollout: configure a ``verso.rollout.ModelRollout`` once its versions are on disk
        and load; returns its status. The caller (``call.who``) goes into the decision log."""
        rollouts = self._rollouts()
        self._admin(call, "SetRollout")
        return await rollouts.set_checked(rollout, who=call.who if call is not None else "")

    async def feedback(self, request_id: str, labels, call: Optional[CallInfo] = None, targets=()):
        """Feedback: ground truth (labels and/or numeric targets) for an earlier answer; a
        ``verso.rollout.FeedbackResponse``."""
        rollouts = self._rollouts()
        self._admin(call, "Feedback")
        return await rollouts.feedback(request_id, labels, targets)

    # ---- HandleReloadConfigRequest and the polled config file ----------------------------------

    async def reload_config(self, request: model_management_pb2.ReloadConfigRequest,
                            call: Optional[CallInfo] = None) -> model_management_pb2.ReloadConfigResponse:
        """The request is the full desired state (TF Serving's semantics; see ``ServedModels.apply``)."""
        self._admin(call, "HandleReloadConfigRequest")
        if request.config.WhichOneof("config") != "model_config_list":
            raise invalid_argument("ServerModelConfig type not supported by HandleReloadConfigRequest. "
                                   "Only ModelConfigList is currently supported")
        entries = validate_model_config(request.config, self.config_root)
        await self.served.apply(entries)
        response = model_management_pb2.ReloadConfigResponse()
        response.status.error_code = 0
        return response

    async def apply_config_text(self, text: str, path: str) -> None:
        """A model config file's changed text (``--model_config_file_poll_wait_seconds``):
        parsed, validated and applied as a reload (raises ServingError, nothing changes)."""
        await self.served.apply(validate_model_config(parse_model_config(text, path), self.config_root))


def _filled_bytes(request: predict_pb2.PredictRequest) -> int:
    """The bytes a Predict's inputs take decoded, from their shapes (malformed ones count 0:
    decoding refuses them); decides whether the decode runs off the loop."""
    total = 0
    for proto in request.inputs.values():
        try:
            total += tensor_codec.filled_size(proto)[1]
        except tensor_codec.TensorCodecError:
            pass
    return total


def _named(call: Optional[CallInfo], spec: model_pb2.ModelSpec) -> None:
    """The model a call names, for its metrics: taken before any check, so a refused call is
    counted for the model it named."""
    if call is not None:
        call.model = spec.name
