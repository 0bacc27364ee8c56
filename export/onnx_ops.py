"""ONNX operators the exported encoders may use: all parsed by TensorRT 10.x/11.x.

The list is the subset of TensorRT's ONNX parser support matrix that our graphs
need; a test exports every modality and fails if a graph uses anything else, so an
exporter upgrade cannot silently introduce an op the device cannot build.
"""

from __future__ import annotations

from collections.abc import Iterable

TENSORRT_OPS: frozenset[str] = frozenset(
    {
        "Add", "ArgMax", "Cast", "Concat", "Constant", "ConstantOfShape", "Conv", "Div", "Equal",
        "Erf", "Expand", "Flatten", "Gather", "Gemm", "Identity", "LayerNormalization", "MatMul",
        "Max", "Min", "Mul", "Pow", "Range", "ReduceL2", "ReduceMax", "ReduceMean", "ReduceSum",
        "Reshape", "Shape", "Slice", "Softmax", "Split", "Sqrt", "Squeeze", "Sub", "Tile",
        "Transpose", "Unsqueeze", "Where", "Clip", "Exp", "Neg", "Less", "Greater", "Not",
        "And", "Or", "Sigmoid", "Tanh", "Relu", "Abs", "Log", "ReduceProd", "QuantizeLinear", "DequantizeLinear",
    }
)  # fmt: skip


def graph_ops(model: object) -> list[str]:
    """Return the sorted operator types used in an ``onnx.ModelProto`` (subgraphs included)."""
    ops: set[str] = set()
    _collect(model.graph, ops)  # type: ignore[attr-defined]
    return sorted(ops)


def _collect(graph: object, ops: set[str]) -> None:
    for node in graph.node:  # type: ignore[attr-defined]
        ops.add(node.op_type)
        for attr in node.attribute:
            if attr.g is not None and len(attr.g.node):
                _collect(attr.g, ops)


def unsupported_ops(ops: Iterable[str]) -> list[str]:
    """Return the operators in ``ops`` that TensorRT's ONNX parser is not known to accept."""
    return sorted(set(ops) - TENSORRT_OPS)
