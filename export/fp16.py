"""Mixed-precision FP16 ONNX from an FP32 encoder graph, with FP32 islands where FP16 loses accuracy.

Precision lives in the graph (design §5): LayerNorm statistics, Softmax, reductions and the final
L2 normalisation stay float32 behind explicit ``Cast`` nodes; everything else (MatMul, Conv, GELU,
residual adds, reshapes) computes in float16. Graph inputs and outputs stay float32, so the runtime
feeds the same arrays for every precision. The conversion itself is ONNX Runtime's
``onnxruntime.transformers.float16`` tool; this module chooses what it keeps in FP32 and checks the
result is type-consistent (every op's float inputs share one type), which a TensorRT strongly typed
network build requires.

Imports onnx and onnxruntime only, never torch: it runs on devices too.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import onnx
from onnx import TensorProto

from runtime.errors import EdgebindError

log = logging.getLogger("edgebind.fp16")

# Op types computed in float32. Reductions and normalisation statistics overflow or lose
# precision in float16 (sums of squares over 1024+ channels); Softmax needs exp() range.
FP32_KEEP_OPS: tuple[str, ...] = (
    "LayerNormalization",
    "Softmax",
    "ReduceMean",
    "ReduceSum",
    "ReduceSumSquare",
    "ReduceL1",
    "ReduceL2",
    "ReduceLogSumExp",
    "ReduceMax",
    "ReduceMin",
    "ReduceProd",
    "Pow",
    "Sqrt",
)
# Initializer bytes above which the result goes to ONNX external data (2 GB protobuf limit);
# the same bound as export/onnx_export.py (not imported: that module needs torch).
EXTERNAL_DATA_BYTES = 1_500_000_000
_FLOATS = {TensorProto.FLOAT, TensorProto.FLOAT16}
# Ops whose float inputs may legitimately differ in type (they convert or only read shapes).
_TYPE_CHANGING = {"Cast", "CastLike", "Shape", "Size"}
_NO_COMPUTE = _TYPE_CHANGING | {"Identity"}


class Fp16Error(EdgebindError):
    """FP16 conversion failed or produced a graph with mixed-type op inputs."""


@dataclass(frozen=True)
class Fp16Result:
    """What :func:`convert_fp16` wrote.

    Attributes:
        path: the FP16 ``.onnx``.
        data_files: external-data files beside it (empty unless the weights exceed 1.5 GB).
        fp16_nodes: nodes computing in float16.
        fp32_nodes: nodes computing in float32 (the islands), Cast nodes excluded.
        kept_ops: sorted op types of the float32 nodes.
    """

    path: Path
    data_files: tuple[Path, ...]
    fp16_nodes: int
    fp32_nodes: int
    kept_ops: tuple[str, ...]


def convert_fp16(
    src: Path,
    dst: Path,
    keep_fp32_ops: Sequence[str] = FP32_KEEP_OPS,
    keep_fp32_nodes: Sequence[str] = (),
) -> Fp16Result:
    """Convert the FP32 graph ``src`` to mixed precision at ``dst``.

    Args:
        src: an FP32 ONNX file (external data beside it is followed).
        dst: destination ``.onnx``; ``<dst name>.data`` is written too for weights above 1.5 GB.
        keep_fp32_ops: op types computed in float32.
        keep_fp32_nodes: extra node names computed in float32; the final normalisation (every node
            between the last MatMul/Gemm and the graph outputs) is always added.

    Returns:
        an :class:`Fp16Result`. The graph's inputs/outputs stay float32 (``(batch, ...)`` in,
        ``(batch, D)`` out), initializers are float16 except those only FP32 nodes read.

    Raises:
        Fp16Error: ``src`` is unreadable, the converter failed or the result mixes float types.
    """
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise Fp16Error(f"{src}: no such ONNX file")
    model = _prepared(src)
    nodes = sorted({*keep_fp32_nodes, *final_normalisation_nodes(model.graph)})
    ops = sorted({*DEFAULT_OP_BLOCK_LIST, *keep_fp32_ops})
    try:
        model = convert_float_to_float16(
            model, keep_io_types=True, disable_shape_infer=True, op_block_list=ops, node_block_list=nodes
        )
    except Exception as exc:  # the tool raises assorted types
        raise Fp16Error(f"{src}: FP16 conversion failed ({_first_line(exc)})") from exc
    topological_sort(model.graph)
    remove_redundant_casts(model)
    mixed = mixed_type_nodes(model)
    if mixed:
        raise Fp16Error(f"{src}: FP16 graph mixes float16/float32 inputs at {', '.join(mixed[:3])}")
    data_files = _save(model, dst)
    fp16, fp32, kept = _precision_counts(model)
    log.info("%s: %d FP16 nodes, %d FP32 nodes (%s)", dst.name, fp16, fp32, ", ".join(kept))
    return Fp16Result(path=dst, data_files=data_files, fp16_nodes=fp16, fp32_nodes=fp32, kept_ops=kept)


def final_normalisation_nodes(graph: onnx.GraphProto) -> list[str]:
    """Names of the nodes after the last MatMul/Gemm that lead to a graph output.

    In our encoders these compute the L2 norm, its clamp, the division and the logit scale.
    Nodes are assumed topologically sorted (ONNX requires it).
    """
    last = max((i for i, n in enumerate(graph.node) if n.op_type in {"MatMul", "Gemm"}), default=None)
    if last is None:
        return []
    downstream = set(graph.node[last].output)
    after: list[onnx.NodeProto] = []
    for node in graph.node[last + 1 :]:
        if downstream.intersection(node.input):
            downstream.update(node.output)
            after.append(node)
    needed = {o.name for o in graph.output}
    keep: list[str] = []
    for node in reversed(after):
        if needed.intersection(node.output):
            needed.update(node.input)
            keep.append(node.name)
    return keep[::-1]


def topological_sort(graph: onnx.GraphProto) -> None:
    """Reorder ``graph.node`` in place so every node follows its producers (the converter appends Casts).

    Stable: nodes already in order keep their relative order. ONNX and TensorRT's parser need it.
    """
    ready = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending = list(graph.node)
    ordered: list[onnx.NodeProto] = []
    while pending:
        rest = []
        for node in pending:
            if all(i in ready for i in node.input):
                ordered.append(node)
                ready.update(node.output)
            else:
                rest.append(node)
        if len(rest) == len(pending):
            raise Fp16Error(f"graph has a cycle or a dangling input at node {rest[0].name or rest[0].op_type}")
        pending = rest
    del graph.node[:]
    graph.node.extend(ordered)


def _prepared(src: Path) -> onnx.ModelProto:
    """Load ``src`` with its weights and complete type information for the converter.

    Value_info entries naming initializers are dropped: the dynamo exporter writes them, and the
    converter would retype them float16 even for initializers it keeps float32 (LayerNorm scale
    and bias), then add float32->float32 Casts and leave a graph ONNX's checker rejects.
    """
    model = _load(src, with_data=True)
    _drop_initializer_value_info(model.graph)
    known = {v.name for v in model.graph.value_info} | {o.name for o in model.graph.output}
    if not all(o in known for n in model.graph.node for o in n.output if o):
        try:
            model = onnx.shape_inference.infer_shapes(model)
        except Exception as exc:
            raise Fp16Error(f"{src}: shape inference failed ({_first_line(exc)})") from exc
    return model


def remove_redundant_casts(model: onnx.ModelProto) -> int:
    """Drop float32->float16->float32 Cast round trips and Casts to the type a tensor already has.

    The converter wraps every FP32 node in its own Casts, so consecutive FP32 nodes (the final
    normalisation) would pass through float16 between them. Consumers are rewired to the original
    float32 tensor; a Cast that produces a graph output becomes an Identity.

    Returns:
        the number of Cast nodes removed or turned into Identity.
    """
    graph = model.graph
    types = _tensor_types(model)
    producer = {o: n for n in graph.node for o in n.output}
    outputs = {o.name for o in graph.output}
    replace: dict[str, str] = {}
    changed = 0
    for node in graph.node:
        if node.op_type != "Cast":
            continue
        source = _cast_source(node, producer, types)
        if source is None:
            continue
        changed += 1
        if node.output[0] in outputs:
            node.op_type, node.input[0] = "Identity", source
            del node.attribute[:]
        else:
            replace[node.output[0]] = source
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in replace:
                node.input[i] = replace[name]
    _prune_dead(graph)
    return changed


def _cast_source(node: onnx.NodeProto, producer: dict[str, onnx.NodeProto], types: dict[str, int]) -> str | None:
    """The tensor a Cast can be bypassed with, or None when the Cast is needed."""
    target = next(a.i for a in node.attribute if a.name == "to")
    src = node.input[0]
    if types.get(src) == target:
        return src
    first = producer.get(src)
    if first is not None and first.op_type == "Cast" and types.get(first.input[0]) == target:
        widening = target == TensorProto.FLOAT and types.get(src) == TensorProto.FLOAT16
        return first.input[0] if widening else None
    return None


def _prune_dead(graph: onnx.GraphProto) -> None:
    """Remove Cast/Identity nodes whose outputs nobody reads, and value_info of vanished tensors."""
    while True:
        used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
        dead = [n for n in graph.node if n.op_type in {"Cast", "Identity"} and not used.intersection(n.output)]
        if not dead:
            break
        for node in dead:
            graph.node.remove(node)
    alive = {o for n in graph.node for o in n.output}
    kept = [v for v in graph.value_info if v.name in alive]
    del graph.value_info[:]
    graph.value_info.extend(kept)


def _drop_initializer_value_info(graph: onnx.GraphProto) -> None:
    """Remove value_info entries that describe initializers (the initializer carries the type)."""
    names = {t.name for t in graph.initializer}
    kept = [v for v in graph.value_info if v.name not in names]
    del graph.value_info[:]
    graph.value_info.extend(kept)


def fp32_islands(path: Path) -> dict[str, int]:
    """Count the nodes of :data:`FP32_KEEP_OPS` types whose float inputs are all float32.

    Args:
        path: an ONNX file (external data is not read).

    Returns:
        op type -> number of such nodes computing in float32, e.g. ``{"LayerNormalization": 6, ...}``.
    """
    model = _load(Path(path), with_data=False)
    types = _tensor_types(model)
    counts: dict[str, int] = {}
    for node in model.graph.node:
        if node.op_type not in FP32_KEEP_OPS:
            continue
        floats = [types[i] for i in node.input if i and types.get(i) in _FLOATS]
        if floats and all(t == TensorProto.FLOAT for t in floats):
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


def mixed_type_nodes(model: onnx.ModelProto) -> list[str]:
    """Names of nodes whose float inputs are not all one type (illegal in a strongly typed network)."""
    types = _tensor_types(model)
    bad = []
    for node in model.graph.node:
        if node.op_type in _TYPE_CHANGING:
            continue
        floats = {types[i] for i in node.input if i and types.get(i) in _FLOATS}
        if len(floats) > 1:
            bad.append(node.name or node.op_type)
    return bad


def _precision_counts(model: onnx.ModelProto) -> tuple[int, int, tuple[str, ...]]:
    """(FP16 nodes, FP32 nodes, sorted FP32 op types), judged by each node's float inputs and outputs."""
    types = _tensor_types(model)
    fp16 = fp32 = 0
    kept: set[str] = set()
    for node in model.graph.node:
        if node.op_type in _NO_COMPUTE:
            continue
        floats = {types.get(t) for t in [*node.input, *node.output] if t} & _FLOATS
        if floats == {TensorProto.FLOAT16}:
            fp16 += 1
        elif floats == {TensorProto.FLOAT}:
            fp32 += 1
            kept.add(node.op_type)
    return fp16, fp32, tuple(sorted(kept))


def _tensor_types(model: onnx.ModelProto) -> dict[str, int]:
    """Element type of every named tensor: inputs, outputs, initializers, value_info, Constants.

    Types missing from value_info are inferred on a weight-free copy (works above 2 GB).
    """
    graph = model.graph
    types = _declared_types(graph)
    if not all(o in types for n in graph.node for o in n.output if o):
        try:
            types = {**_declared_types(onnx.shape_inference.infer_shapes(_skeleton(model)).graph), **types}
        except Exception as exc:  # best effort: the declared types remain
            log.debug("type inference failed: %s", _first_line(exc))
    return types


def _declared_types(graph: onnx.GraphProto) -> dict[str, int]:
    types: dict[str, int] = {}
    for value in [*graph.input, *graph.output, *graph.value_info]:
        if value.type.HasField("tensor_type"):
            types[value.name] = value.type.tensor_type.elem_type
    for node in graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    types[node.output[0]] = attr.t.data_type
    types.update({t.name: t.data_type for t in graph.initializer})  # initializers are authoritative
    return types


def _skeleton(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` whose initializers carry name, type and shape but no data."""
    copy = onnx.ModelProto()
    copy.ir_version = model.ir_version
    copy.opset_import.extend(model.opset_import)
    graph = copy.graph
    graph.node.extend(model.graph.node)
    graph.input.extend(model.graph.input)
    graph.output.extend(model.graph.output)
    graph.value_info.extend(model.graph.value_info)
    for tensor in model.graph.initializer:
        graph.initializer.add(name=tensor.name, data_type=tensor.data_type, dims=tensor.dims)
    return copy


def _load(path: Path, *, with_data: bool) -> onnx.ModelProto:
    try:
        return onnx.load(str(path), load_external_data=with_data)
    except Exception as exc:
        raise Fp16Error(f"{path}: not a readable ONNX file ({_first_line(exc)})") from exc


def _save(model: onnx.ModelProto, dst: Path) -> tuple[Path, ...]:
    """Write ``model``; weights above :data:`EXTERNAL_DATA_BYTES` go to ``<dst name>.data``."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    data = dst.with_name(dst.name + ".data")
    data.unlink(missing_ok=True)  # onnx appends to an existing data file
    weights = sum(_tensor_bytes(t) for t in model.graph.initializer)
    if weights <= EXTERNAL_DATA_BYTES:
        onnx.save_model(model, str(dst))
        return ()
    onnx.save_model(model, str(dst), save_as_external_data=True, all_tensors_to_one_file=True, location=data.name)
    return (data,)


def _tensor_bytes(tensor: TensorProto) -> int:
    if tensor.raw_data:
        return len(tensor.raw_data)
    count = 1
    for dim in tensor.dims:
        count *= dim
    return count * 4


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
