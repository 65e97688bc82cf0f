"""TF Serving config messages that the tensorflow-serving-api wheel does not ship.

``BatchingParameters``, ``MonitoringConfig`` and ``SSLConfig`` are declared from their field
numbers, each file in its own descriptor pool: text and wire formats are TF Serving's, and a
real copy registered later in the default pool (by TensorFlow or a user's import) cannot
clash with them.
"""

from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_FD = descriptor_pb2.FieldDescriptorProto
_SCALARS = {"string": _FD.TYPE_STRING, "bool": _FD.TYPE_BOOL, "int64": _FD.TYPE_INT64}


def declare_message(file_name: str, package: str, messages: dict[str, list[tuple]],
                    dependencies: tuple = ()) -> dict[str, type]:
    """Declare ``messages`` ({name: [(field, number, type[, "repeated"])]}) in a new pool and
    return their classes by name. ``type`` is a scalar name (string, bool, int64) or a message's
    full name with a leading dot; ``dependencies`` are generated modules whose files it uses."""
    pool = descriptor_pool.DescriptorPool()
    for dep in dependencies:
        pool.AddSerializedFile(dep.DESCRIPTOR.serialized_pb)
    f = descriptor_pb2.FileDescriptorProto(name=file_name, package=package, syntax="proto3",
                                           dependency=[d.DESCRIPTOR.name for d in dependencies])
    for name, fields in messages.items():
        m = f.message_type.add(name=name)
        for field, number, kind, *repeated in fields:
            label = _FD.LABEL_REPEATED if repeated else _FD.LABEL_OPTIONAL
            if kind.startswith("."):
                m.field.add(name=field, number=number, label=label, type=_FD.TYPE_MESSAGE, type_name=kind)
            else:
                m.field.add(name=field, number=number, label=label, type=_SCALARS[kind])
    pool.Add(f)
    return {name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{package}.{name}"))
            for name in messages}
