"""FP16 mixed precision: FP32 islands where they belong, a strongly typed graph, cosine vs FP32."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from export.fp16 import (  # noqa: E402
    FP32_KEEP_OPS,
    Fp16Error,
    convert_fp16,
    final_normalisation_nodes,
    fp32_islands,
    mixed_type_nodes,
)
from export.onnx_ops import unsupported_ops  # noqa: E402

FLOAT, FLOAT16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16
MODALITIES = ("thermal", "audio", "text", "imu", "vision", "depth")


def structured_rows(shape: tuple[int, ...], dtype: str, n: int, seed: int) -> np.ndarray:
    """Random but structured model inputs ``(n, *shape)``.

    Float rows: smooth multi-scale fields over the last two axes (sinusoids, a Gaussian hot spot,
    a little noise), standardised per row. int64 rows: CLIP-style token ids (SOT, ids, EOT, padding).
    """
    rng = np.random.default_rng(seed)
    if dtype == "int64":
        tokens = np.zeros((n, *shape), np.int64)
        for row in tokens:
            k = int(rng.integers(2, 20))
            row[0], row[1 : k + 1], row[k + 1] = 49406, rng.integers(1, 49406, k), 49407
        return tokens
    h, w = shape[-2], shape[-1]
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    planes = int(np.prod(shape[:-2], dtype=np.int64))
    out = np.empty((n, *shape), np.float32)
    for i in range(n):
        fields = []
        for _ in range(planes):
            f = sum(
                rng.normal() * np.sin(2 * np.pi * (rng.uniform(0.5, 6) * yy + rng.uniform(0.5, 6) * xx) + phase)
                for phase in rng.uniform(0, 6, 4)
            )
            cy, cx = rng.uniform(0, h / max(h, w)), rng.uniform(0, w / max(h, w))
            f = f + 3 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 0.005) + 0.1 * rng.standard_normal((h, w))
            fields.append(f)
        x = np.stack(fields).reshape(shape)
        out[i] = (x - x.mean()) / x.std()
    return out


def graph_input(path: Path) -> tuple[str, tuple[int, ...], str]:
    """(name, per-row shape, dtype) of the single graph input."""
    (inp,) = onnx.load(str(path), load_external_data=False).graph.input
    dims = tuple(d.dim_value for d in inp.type.tensor_type.shape.dim[1:])
    return inp.name, dims, "int64" if inp.type.tensor_type.elem_type == onnx.TensorProto.INT64 else "float32"


def run(path: Path, feeds: dict[str, np.ndarray]) -> np.ndarray:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)[0]


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def elem_types(model: onnx.ModelProto) -> dict[str, int]:
    """Element type of every tensor, from ONNX's own type inference (independent of export.fp16)."""
    graph = onnx.shape_inference.infer_shapes(model, strict_mode=True).graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*graph.input, *graph.output, *graph.value_info]}
    types.update({t.name: t.data_type for t in graph.initializer})
    return types


@pytest.fixture(scope="module")
def fp16_dir(tiny_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("fp16")
    for mod in MODALITIES:
        convert_fp16(tiny_bundle / f"{mod}.fp32.onnx", out / f"{mod}.fp16.onnx")
    return out


@pytest.mark.parametrize("modality", MODALITIES)
def test_listed_ops_and_final_normalisation_compute_in_fp32(fp16_dir: Path, modality: str) -> None:
    model = onnx.load(str(fp16_dir / f"{modality}.fp16.onnx"))
    types = elem_types(model)
    kept = [n for n in model.graph.node if n.op_type in FP32_KEEP_OPS]
    assert {n.op_type for n in kept} >= {"LayerNormalization", "Softmax", "ReduceL2"}
    for node in kept:
        floats = [types[i] for i in node.input if i and types[i] in (FLOAT, FLOAT16)]
        assert floats and all(t == FLOAT for t in floats), (node.name, node.op_type, floats)
    last_div = [n.name for n in model.graph.node if n.op_type == "Div"][-1]  # the L2 division
    tail = {n.name for n in model.graph.node if n.op_type in {"ReduceL2", "Clip"}} | {last_div}
    for node in model.graph.node:
        if node.name in tail:
            assert all(types[o] == FLOAT for o in node.output), node.name
    big = [t for t in model.graph.initializer if len(t.dims) == 2 and min(t.dims) > 8]
    assert big and all(t.data_type == FLOAT16 for t in big)  # projection weights stored half
    assert model.graph.input[0].type.tensor_type.elem_type in (FLOAT, onnx.TensorProto.INT64)
    assert model.graph.output[0].type.tensor_type.elem_type == FLOAT


def test_fp32_islands_counts_every_kept_node(tiny_bundle: Path, fp16_dir: Path) -> None:
    src = onnx.load(str(tiny_bundle / "thermal.fp32.onnx"))
    expected: dict[str, int] = {}
    for node in src.graph.node:
        if node.op_type in FP32_KEEP_OPS:
            expected[node.op_type] = expected.get(node.op_type, 0) + 1
    assert fp32_islands(fp16_dir / "thermal.fp16.onnx") == expected
    assert fp32_islands(tiny_bundle / "thermal.fp32.onnx") == expected  # trivially: all FP32


@pytest.mark.parametrize("modality", MODALITIES)
def test_graph_is_valid_and_strongly_typed(fp16_dir: Path, modality: str) -> None:
    model = onnx.load(str(fp16_dir / f"{modality}.fp16.onnx"))
    onnx.checker.check_model(model, full_check=True)  # also checks topological order
    assert mixed_type_nodes(model) == []
    assert unsupported_ops({n.op_type for n in model.graph.node}) == []
    producer = {o: n for n in model.graph.node for o in n.output}
    for node in model.graph.node:  # no float32 -> float16 -> float32 round trips
        first = producer.get(node.input[0]) if node.op_type == "Cast" else None
        assert not (first is not None and first.op_type == "Cast" and _to(first) == FLOAT16 and _to(node) == FLOAT)


def _to(node: onnx.NodeProto) -> int:
    return next(a.i for a in node.attribute if a.name == "to")


@pytest.mark.parametrize("modality", MODALITIES)
def test_fp16_matches_fp32_in_onnx_runtime(tiny_bundle: Path, fp16_dir: Path, modality: str) -> None:
    src = tiny_bundle / f"{modality}.fp32.onnx"
    name, shape, dtype = graph_input(src)
    x = structured_rows(shape, dtype, n=3, seed=7)
    ref = run(src, {name: x})
    got = run(fp16_dir / f"{modality}.fp16.onnx", {name: x})
    assert got.dtype == np.float32 and got.shape == ref.shape
    assert cosine(ref, got).min() >= 0.999


def test_file_is_about_half_and_result_counts(tiny_bundle: Path, tmp_path: Path) -> None:
    src = tiny_bundle / "text.fp32.onnx"  # weight-dominated
    result = convert_fp16(src, tmp_path / "text.fp16.onnx")
    assert result.path.stat().st_size < 0.6 * src.stat().st_size
    assert result.data_files == ()
    assert result.fp16_nodes > result.fp32_nodes > 0
    assert {"LayerNormalization", "Softmax", "ReduceL2", "Div"} <= set(result.kept_ops)


def test_extra_nodes_can_be_kept_fp32(tiny_bundle: Path, tmp_path: Path) -> None:
    src = tiny_bundle / "thermal.fp32.onnx"
    graph = onnx.load(str(src)).graph
    matmul = next(n.name for n in graph.node if n.op_type == "MatMul")
    result = convert_fp16(src, tmp_path / "t.onnx", keep_fp32_nodes=[matmul])
    model = onnx.load(str(result.path))
    types = elem_types(model)
    node = next(n for n in model.graph.node if n.name == matmul)
    assert [types[i] for i in node.input] == [FLOAT, FLOAT]


def test_final_normalisation_is_the_tail_after_the_projection(tiny_bundle: Path) -> None:
    graph = onnx.load(str(tiny_bundle / "thermal.fp32.onnx")).graph
    ops = {n.name: n.op_type for n in graph.node}
    tail = [ops[name] for name in final_normalisation_nodes(graph)]
    assert {"ReduceL2", "Clip", "Div", "Mul"} <= set(tail)
    assert "Gemm" not in tail and "LayerNormalization" not in tail


def test_unreadable_source_is_a_one_line_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    for src in (bad, tmp_path / "missing.onnx"):
        with pytest.raises(Fp16Error) as err:
            convert_fp16(src, tmp_path / "out.onnx")
        assert "\n" not in str(err.value) and str(src) in str(err.value)


def test_large_weights_go_to_external_data(tiny_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from export import fp16

    src = tmp_path / "src" / "thermal.fp32.onnx"  # an external-data source, like the huge bundle
    src.parent.mkdir()
    model = onnx.load(str(tiny_bundle / "thermal.fp32.onnx"))
    onnx.save_model(model, str(src), save_as_external_data=True, location="thermal.fp32.onnx.data")
    monkeypatch.setattr(fp16, "EXTERNAL_DATA_BYTES", 0)
    result = convert_fp16(src, tmp_path / "out" / "thermal.fp16.onnx")
    assert result.data_files == (tmp_path / "out" / "thermal.fp16.onnx.data",)
    stored = onnx.load(str(result.path), load_external_data=False).graph.initializer
    big = [t for t in stored if int(np.prod(t.dims)) * 2 >= 4096]  # fp16 tensors of >= 4 KB
    assert big and all(t.data_location == onnx.TensorProto.EXTERNAL for t in big)
    assert result.data_files[0].stat().st_size >= sum(int(np.prod(t.dims)) * 2 for t in big)
    name, shape, dtype = graph_input(src)
    x = structured_rows(shape, dtype, n=2, seed=1)
    assert cosine(run(src, {name: x}), run(result.path, {name: x})).min() >= 0.999
