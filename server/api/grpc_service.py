"""The gRPC adapter: TF Serving's PredictionService and ModelService over ``ServingCore``.

Runs on grpc.aio in the event loop that owns the manager. Each method only translates:
it awaits the core and maps ``ServingError`` to a gRPC status (message cut at 1024
characters + ``...TRUNCATED`` as TF Serving does). Any other exception is a Verso bug:
it is logged with its traceback and the caller gets INTERNAL with a one-line message.
"""

from __future__ import annotations

import logging

import grpc
from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

from server.api.handlers import ServingCore
from server.core.errors import Code, ServingError

log = logging.getLogger("verso.grpc")

_STATUS = {sc.value[0]: sc for sc in grpc.StatusCode}
_MAX_MESSAGE = 1024
INT32_MAX = 2**31 - 1


def grpc_message(message: str) -> str:
    if len(message) > _MAX_MESSAGE:
        return message[:_MAX_MESSAGE] + "...TRUNCATED"
    return message


async def _abort(context: grpc.aio.ServicerContext, err: ServingError):
    await context.abort(_STATUS[int(err.code)], grpc_message(err.message))


async def _guard(context, method: str, call):
    try:
        result = call()
        if hasattr(result, "__await__"):
            result = await result
        return result
    except ServingError as e:
        await _abort(context, e)
    except Exception as e:  # a bug in Verso: never a traceback to the client
        log.exception("Unexpected error in %s", method)
        await _abort(context, ServingError(Code.INTERNAL, f"{type(e).__name__}: {e}"))


def _unimplemented(what: str) -> ServingError:
    return ServingError(Code.UNIMPLEMENTED, f"{what} is not implemented by Verso yet")


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, core: ServingCore):
        self._core = core

    async def Predict(self, request, context):
        return await _guard(context, "Predict", lambda: self._core.predict(request))

    async def GetModelMetadata(self, request, context):
        return await _guard(context, "GetModelMetadata", lambda: self._core.get_model_metadata(request))

    async def Classify(self, request, context):
        await _abort(context, _unimplemented("Classify"))

    async def Regress(self, request, context):
        await _abort(context, _unimplemented("Regress"))

    async def MultiInference(self, request, context):
        await _abort(context, _unimplemented("MultiInference"))


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, core: ServingCore):
        self._core = core

    async def GetModelStatus(self, request, context):
        return await _guard(context, "GetModelStatus", lambda: self._core.get_model_status(request))

    async def HandleReloadConfigRequest(self, request, context):
        await _abort(context, _unimplemented("HandleReloadConfigRequest"))


def create_server(core: ServingCore, address: str) -> grpc.aio.Server:
    """A grpc.aio server bound to ``address`` with both services (not started).

    Message size limits are INT32_MAX both ways, as TF Serving sets them. Raises
    RuntimeError when the address cannot be bound.
    """
    options = [
        ("grpc.max_receive_message_length", INT32_MAX),
        ("grpc.max_send_message_length", INT32_MAX),
        ("grpc.so_reuseport", 0),
    ]
    server = grpc.aio.server(options=options)
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionService(core), server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(core), server)
    server.add_insecure_port(address)
    return server
