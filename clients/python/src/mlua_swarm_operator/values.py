"""JSON values <-> google.protobuf.Value."""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format, struct_pb2


def to_value(obj: Any) -> struct_pb2.Value:
    """A JSON-able Python object (dict, list, str, number, bool, None) as a protobuf Value."""
    return json_format.ParseDict(obj, struct_pb2.Value())


def from_value(value: struct_pb2.Value) -> Any:
    """A protobuf Value as a plain Python object."""
    return json_format.MessageToDict(value)
