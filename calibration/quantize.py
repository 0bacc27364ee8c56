"""Calibrated INT8 encoders: explicit, symmetric Q/DQ ONNX that TensorRT and ONNX Runtime both run.

The recipe (``shared/reference/int8-cpu-probe.md``, adapted to our dynamo-exported graphs):

- quantize only MatMul/Gemm/Conv with a constant weight (the Linear layers and the patch stem);
  attention's activation x activation MatMuls, LayerNorm, Softmax and the residual path stay float;
- Q/DQ on those nodes' inputs only, no output Q/DQ (TensorRT's explicit-quantization placement);
- INT8 activations per tensor, INT8 weights per output channel, all zero points 0;
- 7-bit weights (``reduce_range``) by default: x86 CPUs without VNNI saturate int16 pair sums
  with full-range weights. Still symmetric and TensorRT-legal;
- float biases (no INT32 bias DequantizeLinear, which TensorRT does not take).

Calibration ranges come from ONNX Runtime's calibrators (MinMax, Percentile, Entropy) fed in
chunks, so memory stays bounded and progress can be reported; the quantizer itself is
``onnxruntime.quantization.quantize_static`` reading those ranges from a cache file.

Imports numpy, onnx and onnxruntime; never torch.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx
from numpy.typing import NDArray
from onnx import TensorProto

from calibration import graph_fixes
from runtime.errors import EdgebindError

log = logging.getLogger("edgebind.quantize")

METHODS = ("minmax", "percentile", "entropy")
# Rows per calibration run; histogram calibrators hold one chunk's activations in memory.
CHUNK_ROWS = 4
# Weights above this many bytes (after quantization) go to ONNX external data.
EXTERNAL_DATA_BYTES = 1_500_000_000
_ONNX_DTYPES = {TensorProto.FLOAT: np.dtype(np.float32), TensorProto.INT64: np.dtype(np.int64)}

Progress = Callable[[str, float], None]


class QuantizeError(EdgebindError):
    """INT8 quantization cannot run on this input (bad calibration set, config or graph)."""


@dataclass(frozen=True)
class QuantConfig:
    """How to calibrate and quantize.

    Attributes:
        method: calibration method, one of :data:`METHODS`.
        percentile: percentile of |activation| kept by the ``percentile`` method.
        entropy_bins: histogram bins of the ``entropy`` method (ONNX Runtime's default of 128
            makes it the same as MinMax).
        reduce_range: 7-bit weights; needed for accuracy on AVX2 CPUs without VNNI.
        per_channel: per-output-channel weight scales.
        quantize_attention: also quantize the activation x activation MatMuls.
        exclude_nodes: node names kept float (e.g. GEMMs hurt by activation outliers).
    """

    method: str = "percentile"
    percentile: float = 99.99
    entropy_bins: int = 2048
    reduce_range: bool = True
    per_channel: bool = True
    quantize_attention: bool = False
    exclude_nodes: tuple[str, ...] = ()

    def validate(self) -> None:
        """Raise :class:`QuantizeError` naming the first invalid field."""
        if self.method not in METHODS:
            raise QuantizeError(f"unknown calibration method {self.method!r} (choose from {', '.join(METHODS)})")
        if not 50.0 < self.percentile <= 100.0:
            raise QuantizeError(f"percentile must be in (50, 100], got {self.percentile}")
        if self.entropy_bins < 256:
            raise QuantizeError(f"entropy_bins must be >= 256 (128 quantized bins), got {self.entropy_bins}")


@dataclass(frozen=True)
class QuantResult:
    """What :func:`quantize_int8` wrote.

    Attributes:
        path: the INT8 ``.onnx``.
        data_files: external-data files beside it (empty unless weights exceed 1.5 GB).
        method: calibration method used.
        activation_qdq: activation QuantizeLinear nodes (each followed by its DequantizeLinear).
        weight_dq: DequantizeLinear nodes of constant INT8 weights.
        excluded_nodes: MatMul/Gemm/Conv nodes left float (attention MatMuls and ``exclude_nodes``).
        config: the :class:`QuantConfig` as a dict plus ``calibration_rows`` (for the manifest).
    """

    path: Path
    data_files: tuple[Path, ...]
    method: str
    activation_qdq: int
    weight_dq: int
    excluded_nodes: tuple[str, ...]
    config: dict


def quantize_int8(  # noqa: PLR0917 (the documented positional interface)
    src: Path,
    dst: Path,
    input_name: str,
    calibration: NDArray[np.generic],
    cfg: QuantConfig = QuantConfig(),
    progress: Progress | None = None,
) -> QuantResult:
    """Calibrate ``src`` on ``calibration`` and write its symmetric INT8 Q/DQ version to ``dst``.

    Args:
        src: FP32 ONNX encoder (external data beside it is followed).
        dst: destination ``.onnx``.
        input_name: the graph input the calibration rows feed.
        calibration: ``(N, *row)`` model-ready inputs, one clip per row, dtype of the graph input
            (float32; int64 token ids for text), finite, N >= 1.
        cfg: calibration method and quantization options.
        progress: called as ``progress(stage, fraction)`` with stages ``"calibrate"``,
            ``"quantize"`` and ``"done"``; fraction in [0, 1].

    Returns:
        a :class:`QuantResult`. Graph inputs and outputs stay float32.

    Raises:
        QuantizeError: unreadable ``src``, unknown input, bad calibration data or config, or a
            result that fails :func:`check_qdq`.
    """
    report = progress or (lambda stage, fraction: None)
    src, dst = Path(src), Path(dst)
    cfg.validate()
    graph = _load(src, with_data=False).graph
    check_calibration(graph, input_name, calibration)
    chosen, excluded = _select_nodes(graph, cfg)
    dst.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="edgebind-int8-", dir=dst.parent) as tmp, _quiet_onnxruntime():
        cache = Path(tmp) / "ranges.json"
        _calibrate(src, input_name, calibration, cfg, tmp=Path(tmp), cache=cache, report=report)
        report("quantize", 0.0)
        model = _quantize(src, Path(tmp) / "model.int8.onnx", cfg, chosen=chosen, excluded=excluded, cache=cache)
    graph_fixes.rewire_shape_reads(model.graph)
    graph_fixes.drop_dead_value_info(model.graph)
    data_files = _save(model, dst)
    problems = check_qdq(dst)
    if problems:
        for path in (dst, *data_files):
            path.unlink(missing_ok=True)
        raise QuantizeError(f"{src}: quantized graph is not clean Q/DQ ({problems[0]}); nothing written")
    activation_qdq, weight_dq = _qdq_counts(model.graph)
    report("done", 1.0)
    config = {**asdict(cfg), "exclude_nodes": list(cfg.exclude_nodes), "calibration_rows": len(calibration)}
    return QuantResult(dst, data_files, cfg.method, activation_qdq, weight_dq, excluded, config)


def _select_nodes(graph: onnx.GraphProto, cfg: QuantConfig) -> tuple[list[str], tuple[str, ...]]:
    """(nodes to quantize, MatMul/Gemm/Conv nodes left float) under ``cfg``."""
    weighted, activation = graph_fixes.weight_nodes(graph)
    unknown = sorted(set(cfg.exclude_nodes) - set(weighted) - set(activation))
    if unknown:
        raise QuantizeError(f"exclude_nodes names no MatMul/Gemm/Conv node of this graph: {', '.join(unknown[:3])}")
    candidates = weighted + (activation if cfg.quantize_attention else [])
    chosen = [n for n in candidates if n not in cfg.exclude_nodes]
    if not chosen:  # ONNX Runtime reads an empty selection as "everything"
        raise QuantizeError("no MatMul/Gemm/Conv node with a constant weight is left to quantize")
    return chosen, tuple(n for n in weighted + activation if n not in chosen)


def _method(name: str) -> object:
    from onnxruntime.quantization import CalibrationMethod

    return {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
            "entropy": CalibrationMethod.Entropy}[name]  # fmt: skip


def _quantize(
    src: Path, raw: Path, cfg: QuantConfig, *, chosen: list[str], excluded: tuple[str, ...], cache: Path
) -> onnx.ModelProto:
    """Run ONNX Runtime's static Q/DQ quantizer with the ranges in ``cache``; return the result."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    try:
        quantize_static(
            str(src),
            str(raw),
            calibration_data_reader=None,
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(graph_fixes.WEIGHT_OPS),
            nodes_to_quantize=chosen,
            nodes_to_exclude=list(excluded),
            per_channel=cfg.per_channel,
            reduce_range=cfg.reduce_range,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            use_external_data_format=_has_external_data(src),
            calibrate_method=_method(cfg.method),
            calibration_cache_path=str(cache),
            extra_options={
                "ActivationSymmetric": True,
                "WeightSymmetric": True,
                "QuantizeBias": False,  # float biases: no INT32 DequantizeLinear
                "OpTypesToExcludeOutputQuantization": list(graph_fixes.WEIGHT_OPS),
            },
        )
        return onnx.load(str(raw))
    except Exception as exc:  # the tool raises assorted types
        raise QuantizeError(f"{src}: quantization failed ({_first_line(exc)})") from exc


@contextlib.contextmanager
def _quiet_onnxruntime() -> Iterator[None]:
    """Silence the quantization tool's prints and root-logger advice (pre-processing hints)."""

    def drop(record: logging.LogRecord) -> bool:
        return "onnxruntime" not in record.pathname

    root = logging.getLogger()
    root.addFilter(drop)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.removeFilter(drop)


def check_calibration(graph: onnx.GraphProto, input_name: str, calibration: NDArray[np.generic]) -> None:
    """Raise :class:`QuantizeError` (one line) unless ``calibration`` can feed ``input_name``.

    Args:
        calibration: ``(N, *row)``; ``row`` must match the graph input's fixed dims, the dtype
            must be the input's (float32, or int64 for token ids), N >= 1, values finite.
    """
    spec = next((i for i in graph.input if i.name == input_name), None)
    if spec is None:
        names = ", ".join(i.name for i in graph.input)
        raise QuantizeError(f"graph has no input {input_name!r} (inputs: {names})")
    if not isinstance(calibration, np.ndarray):
        raise QuantizeError(f"calibration set must be a numpy array, got {type(calibration).__name__}")
    want = _ONNX_DTYPES.get(spec.type.tensor_type.elem_type)
    if want is None or calibration.dtype != want:
        raise QuantizeError(f"calibration set has dtype {calibration.dtype}, input {input_name!r} takes {want}")
    dims = [d.dim_value if d.HasField("dim_value") else None for d in spec.type.tensor_type.shape.dim]
    rows = tuple(calibration.shape[1:])
    if calibration.ndim != len(dims) or any(d is not None and d != r for d, r in zip(dims[1:], rows, strict=True)):
        expected = "(N, " + ", ".join(str(d) for d in dims[1:]) + ")"
        raise QuantizeError(f"calibration set has shape {calibration.shape}, input {input_name!r} takes {expected}")
    if calibration.shape[0] == 0:
        raise QuantizeError("calibration set is empty (0 rows)")
    if calibration.dtype.kind == "f" and not np.isfinite(calibration).all():
        bad = int((~np.isfinite(calibration)).reshape(len(calibration), -1).any(axis=1).sum())
        raise QuantizeError(f"calibration set has NaN or infinite values in {bad} of {len(calibration)} rows")


def _calibrate(
    src: Path,
    input_name: str,
    calibration: NDArray[np.generic],
    cfg: QuantConfig,
    *,
    tmp: Path,
    cache: Path,
    report: Progress,
) -> None:
    """Collect activation ranges chunk by chunk and save them to ``cache`` (ONNX Runtime's JSON)."""
    from onnxruntime.quantization.calibrate import create_calibrator, save_tensors_data

    options: dict[str, object] = {"symmetric": True}
    if cfg.method == "percentile":
        options.update(percentile=cfg.percentile, num_bins=2048)
    elif cfg.method == "entropy":
        options.update(num_bins=cfg.entropy_bins, num_quantized_bins=128)
    total = len(calibration)
    report("calibrate", 0.0)
    try:
        calibrator = create_calibrator(
            str(src),
            list(graph_fixes.WEIGHT_OPS),
            augmented_model_path=str(tmp / "augmented.onnx"),
            calibrate_method=_method(cfg.method),
            use_external_data_format=_has_external_data(src),
            extra_options=options,
        )
        for start in range(0, total, CHUNK_ROWS):
            calibrator.collect_data(_Rows(input_name, calibration[start : start + CHUNK_ROWS]))
            report("calibrate", min(start + CHUNK_ROWS, total) / total)
        save_tensors_data(calibrator.compute_data(), cache)
    except Exception as exc:  # the tool raises assorted types
        raise QuantizeError(f"{src}: calibration failed ({_first_line(exc)})") from exc


class _Rows:
    """ONNX Runtime calibration reader over one chunk: yields one ``{input_name: (n, *row)}`` feed."""

    def __init__(self, input_name: str, rows: NDArray[np.generic]) -> None:
        self._feeds: Iterator[dict[str, NDArray[np.generic]]] = iter([{input_name: np.ascontiguousarray(rows)}])

    def get_next(self) -> dict[str, NDArray[np.generic]] | None:
        return next(self._feeds, None)

    def __iter__(self) -> _Rows:
        return self

    def __next__(self) -> dict[str, NDArray[np.generic]]:
        feed = self.get_next()
        if feed is None:
            raise StopIteration
        return feed


def check_qdq(path: Path) -> list[str]:
    """List what keeps ``path`` from being clean symmetric INT8 Q/DQ; ``[]`` means clean.

    Checks every QuantizeLinear/DequantizeLinear: an explicit zero point of type INT8, all zero;
    positive finite scales; per-tensor (scalar) activation scales; constant weights INT8 within
    [-127, 127]; no DequantizeLinear of INT32 (quantized bias) or other types; each Q's DQ
    consumers use the same scale and zero point.
    """
    return graph_fixes.qdq_problems(_load(Path(path), with_data=False).graph, Path(path).parent)


def session_options_hint(path: Path) -> dict:
    """ONNX Runtime session settings that ``path`` needs to run at full speed; ``{}`` if none.

    A weight-quantized 2-D ``MatMul`` followed by a bias ``Add`` is re-fused by ONNX Runtime's
    ``MatMulAddFusion`` into a float Gemm that then runs unquantized; disabling that fusion keeps
    the integer kernel. Our exporter's Linear layers are 3-D MatMul + Add, which the fusion skips.
    """
    graph = _load(Path(path), with_data=False).graph
    return {"disabled_optimizers": ["MatMulAddFusion"]} if graph_fixes.refusable_matmul_add(graph) else {}


def _qdq_counts(graph: onnx.GraphProto) -> tuple[int, int]:
    """(activation QuantizeLinear nodes, weight DequantizeLinear nodes)."""
    constants = graph_fixes.constant_names(graph)
    activation = sum(1 for n in graph.node if n.op_type == "QuantizeLinear" and n.input[0] not in constants)
    weights = sum(1 for n in graph.node if n.op_type == "DequantizeLinear" and n.input[0] in constants)
    return activation, weights


def _has_external_data(path: Path) -> bool:
    model = _load(path, with_data=False)
    return any(t.data_location == TensorProto.EXTERNAL for t in model.graph.initializer)


def _load(path: Path, *, with_data: bool) -> onnx.ModelProto:
    if not path.is_file():
        raise QuantizeError(f"{path}: no such ONNX file")
    try:
        return onnx.load(str(path), load_external_data=with_data)
    except Exception as exc:
        raise QuantizeError(f"{path}: not a readable ONNX file ({_first_line(exc)})") from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _save(model: onnx.ModelProto, dst: Path) -> tuple[Path, ...]:
    """Write ``model``; weights above :data:`EXTERNAL_DATA_BYTES` go to ``<dst name>.data``."""
    data = dst.with_name(dst.name + ".data")
    data.unlink(missing_ok=True)  # onnx appends to an existing data file
    weights = sum(len(t.raw_data) for t in model.graph.initializer)
    if weights <= EXTERNAL_DATA_BYTES:
        onnx.save_model(model, str(dst))
        return ()
    onnx.save_model(model, str(dst), save_as_external_data=True, all_tensors_to_one_file=True, location=data.name)
    return (data,)
