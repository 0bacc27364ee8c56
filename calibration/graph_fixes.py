"""Graph edits around ONNX Runtime's Q/DQ quantizer for our dynamo-exported encoders.

What the INT8 recipe needs from the graph (see ``shared/reference/int8-cpu-probe.md``):

- which MatMul/Gemm/Conv nodes carry a constant weight (quantized) and which multiply two
  activations (attention scores and context; left float by default);
- no ``Shape`` node reading a DequantizeLinear output: a quantized tensor with a second, shape-only
  consumer keeps ONNX Runtime from turning the GEMM into an integer kernel on x86 (probe fix A).
  In our graphs the only ``Shape`` reads the graph input, which the patch-embedding Conv quantizes;
- a lint of the result (:func:`qdq_problems`): INT8 zero points all 0, per-tensor activation
  scales, no INT32 (bias) DequantizeLinear, matching scales on each Q -> DQ pair;
- whether ONNX Runtime's ``MatMulAddFusion`` would undo a 2-D weight GEMM (:func:`refusable_matmul_add`).

Imports numpy and onnx only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

WEIGHT_OPS: tuple[str, ...] = ("MatMul", "Gemm", "Conv")


def constant_names(graph: onnx.GraphProto) -> set[str]:
    """Tensors whose value is fixed at build time: initializers and Constant outputs."""
    names = {t.name for t in graph.initializer}
    names.update(n.output[0] for n in graph.node if n.op_type == "Constant")
    return names


def weight_nodes(graph: onnx.GraphProto) -> tuple[list[str], list[str]]:
    """Split the MatMul/Gemm/Conv nodes by their second input.

    Returns:
        (names of nodes whose weight input is constant, names of activation x activation nodes).
        Unnamed nodes are skipped (the quantizer selects by name).
    """
    constants = constant_names(graph)
    weighted: list[str] = []
    activation: list[str] = []
    for node in graph.node:
        if node.op_type not in WEIGHT_OPS or not node.name:
            continue
        (weighted if node.input[1] in constants else activation).append(node.name)
    return weighted, activation


def rewire_shape_reads(graph: onnx.GraphProto) -> int:
    """Point every ``Shape``/``Size`` that reads ``DequantizeLinear(QuantizeLinear(x))`` at ``x``.

    The shape of a tensor is the same before and after a Q/DQ pair, so the result is unchanged;
    the Q/DQ pair is left with its compute consumers only. Weights (DQ of a constant) are untouched.

    Returns:
        the number of nodes rewired.
    """
    producer = {o: n for n in graph.node for o in n.output}
    rewired = 0
    for node in graph.node:
        if node.op_type not in {"Shape", "Size"}:
            continue
        source = _float_before_qdq(node.input[0], producer)
        if source is not None:
            node.input[0] = source
            rewired += 1
    return rewired


def _float_before_qdq(name: str, producer: dict[str, onnx.NodeProto]) -> str | None:
    dq = producer.get(name)
    if dq is None or dq.op_type != "DequantizeLinear":
        return None
    q = producer.get(dq.input[0])
    if q is None or q.op_type != "QuantizeLinear":
        return None
    return q.input[0]


def drop_dead_value_info(graph: onnx.GraphProto) -> None:
    """Remove value_info entries of tensors that no node produces any more."""
    alive = {o for n in graph.node for o in n.output}
    kept = [v for v in graph.value_info if v.name in alive]
    del graph.value_info[:]
    graph.value_info.extend(kept)


def qdq_problems(graph: onnx.GraphProto, base_dir: Path) -> list[str]:
    """One line per Q/DQ node that is not clean symmetric INT8 (see ``calibration.quantize.check_qdq``).

    Args:
        base_dir: directory of the model file, for initializers stored as external data.
    """
    inits = {t.name: t for t in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    problems: list[str] = []
    for node in graph.node:
        if node.op_type not in {"QuantizeLinear", "DequantizeLinear"}:
            continue
        problems.extend(_check_zero_point(node, inits, base_dir))
        problems.extend(_check_scale(node, inits, base_dir))
        if node.op_type == "DequantizeLinear":
            problems.extend(_check_dq_input(node, inits, producer, base_dir))
    return problems


def _check_zero_point(node: onnx.NodeProto, inits: dict[str, TensorProto], base: Path) -> list[str]:
    name = node.name or node.output[0]
    if len(node.input) < 3 or not node.input[2]:
        return [f"{node.op_type} {name} has no zero point (defaults to uint8)"]
    zp = inits.get(node.input[2])
    if zp is None:
        return [f"{node.op_type} {name} zero point {node.input[2]} is not a constant"]
    if zp.data_type != TensorProto.INT8:
        return [f"{node.op_type} {name} zero point is {TensorProto.DataType.Name(zp.data_type)}, not INT8"]
    if np.any(numpy_helper.to_array(zp, base_dir=str(base)) != 0):
        return [f"{node.op_type} {name} has a non-zero zero point (asymmetric)"]
    return []


def _check_scale(node: onnx.NodeProto, inits: dict[str, TensorProto], base: Path) -> list[str]:
    name = node.name or node.output[0]
    scale = inits.get(node.input[1])
    if scale is None:
        return [f"{node.op_type} {name} scale {node.input[1]} is not a constant"]
    values = numpy_helper.to_array(scale, base_dir=str(base))
    if not np.all(np.isfinite(values)) or np.any(values <= 0):
        return [f"{node.op_type} {name} has a non-positive or non-finite scale"]
    if node.op_type == "QuantizeLinear" and values.size != 1:
        return [f"QuantizeLinear {name} quantizes an activation per channel (TensorRT wants per tensor)"]
    return []


def _check_dq_input(
    node: onnx.NodeProto, inits: dict[str, TensorProto], producer: dict[str, onnx.NodeProto], base: Path
) -> list[str]:
    name = node.name or node.output[0]
    weight = inits.get(node.input[0])
    if weight is not None:
        if weight.data_type != TensorProto.INT8:
            kind = TensorProto.DataType.Name(weight.data_type)
            return [f"DequantizeLinear {name} reads a {kind} constant (only INT8 is TensorRT-clean)"]
        values = numpy_helper.to_array(weight, base_dir=str(base))
        return [f"DequantizeLinear {name} weight uses -128 (not symmetric)"] if values.min() < -127 else []
    q = producer.get(node.input[0])
    if q is None or q.op_type != "QuantizeLinear":
        return [f"DequantizeLinear {name} does not follow a QuantizeLinear"]
    if list(q.input[1:3]) != list(node.input[1:3]):
        same = _same_constant(inits, q.input[1], node.input[1], base) and _same_constant(
            inits, q.input[2], node.input[2], base
        )
        if not same:
            return [f"DequantizeLinear {name} uses another scale or zero point than its QuantizeLinear"]
    return []


def _same_constant(inits: dict[str, TensorProto], a: str, b: str, base: Path) -> bool:
    if a == b:
        return True
    if a not in inits or b not in inits:
        return False
    return bool(
        np.array_equal(
            numpy_helper.to_array(inits[a], base_dir=str(base)), numpy_helper.to_array(inits[b], base_dir=str(base))
        )
    )


def refusable_matmul_add(graph: onnx.GraphProto) -> bool:
    """True when a 2-D MatMul with a dequantized weight feeds an Add (ONNX Runtime's MatMulAddFusion
    would turn it into a float Gemm and drop the integer kernel)."""
    producer = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    ranks = _ranks(graph)
    for node in graph.node:
        if node.op_type != "MatMul" or _rank(node.input[0], ranks, producer) != 2:
            continue
        fed = producer.get(node.input[1])
        users = consumers.get(node.output[0], [])
        if fed is not None and fed.op_type == "DequantizeLinear" and any(u.op_type == "Add" for u in users):
            return True
    return False


def _rank(name: str, ranks: dict[str, int], producer: dict[str, onnx.NodeProto]) -> int | None:
    """Rank of ``name``, looking through Q/DQ pairs (their outputs often lack value_info)."""
    while name not in ranks and name in producer and producer[name].op_type in {"QuantizeLinear", "DequantizeLinear"}:
        name = producer[name].input[0]
    return ranks.get(name)


def _ranks(graph: onnx.GraphProto) -> dict[str, int]:
    ranks = {}
    for value in [*graph.input, *graph.output, *graph.value_info]:
        if value.type.tensor_type.HasField("shape"):
            ranks[value.name] = len(value.type.tensor_type.shape.dim)
    return ranks
