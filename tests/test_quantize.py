"""INT8: symmetric Q/DQ that ONNX Runtime runs, three calibration methods, clear errors, check_qdq."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from calibration.quantize import (  # noqa: E402
    METHODS,
    QuantConfig,
    QuantizeError,
    check_qdq,
    quantize_int8,
    session_options_hint,
)
from export.onnx_ops import unsupported_ops  # noqa: E402
from tests.test_fp16 import cosine, graph_input, run, structured_rows  # noqa: E402

MIN_COSINE = 0.98
QDQ = {"QuantizeLinear", "DequantizeLinear"}


def quantize(bundle: Path, out: Path, modality: str, cfg: QuantConfig = QuantConfig(), rows: int = 8):  # noqa: B008
    src = bundle / f"{modality}.fp32.onnx"
    name, shape, dtype = graph_input(src)
    cal = structured_rows(shape, dtype, n=rows, seed=1000)
    return quantize_int8(src, out / f"{modality}.int8.onnx", name, cal, cfg)


def int8_cosine(bundle: Path, modality: str, path: Path, rows: int = 4) -> np.ndarray:
    """Row cosines INT8 vs FP32 on held-out structured inputs (another seed than calibration)."""
    src = bundle / f"{modality}.fp32.onnx"
    name, shape, dtype = graph_input(src)
    x = structured_rows(shape, dtype, n=rows, seed=2000)
    return cosine(run(src, {name: x}), run(path, {name: x}))


@pytest.fixture(scope="module")
def int8_dir(tiny_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("int8")
    for mod in ("thermal", "audio", "text"):
        quantize(tiny_bundle, out, mod)
    return out


@pytest.mark.parametrize("modality", ["thermal", "audio", "text"])
def test_qdq_is_symmetric_int8_and_runs_close_to_fp32(
    tiny_bundle: Path, int8_dir: Path, modality: str, record_property: pytest.RecordProperty
) -> None:
    path = int8_dir / f"{modality}.int8.onnx"
    model = onnx.load(str(path))
    inits = {t.name: t for t in model.graph.initializer}
    qdq = [n for n in model.graph.node if n.op_type in QDQ]
    assert qdq
    for node in qdq:  # independent walk: explicit INT8 zero point, all zero
        zero_point = inits[node.input[2]]
        assert zero_point.data_type == TensorProto.INT8
        assert not numpy_helper.to_array(zero_point).any()
    assert check_qdq(path) == []
    assert unsupported_ops({n.op_type for n in model.graph.node} - QDQ) == []
    assert model.graph.input[0].type.tensor_type.elem_type in (TensorProto.FLOAT, TensorProto.INT64)
    assert model.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
    cos = int8_cosine(tiny_bundle, modality, path)
    record_property(f"int8_cosine_min_{modality}", float(cos.min()))
    print(f"{modality}: INT8 vs FP32 cosine mean {cos.mean():.5f} min {cos.min():.5f}")
    assert cos.min() >= MIN_COSINE


def test_weights_per_channel_activations_per_tensor_attention_float(int8_dir: Path) -> None:
    model = onnx.load(str(int8_dir / "thermal.int8.onnx"))
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    for node in graph.node:
        if node.op_type == "QuantizeLinear":
            assert numpy_helper.to_array(inits[node.input[1]]).size == 1
        if node.op_type == "DequantizeLinear" and node.input[0] in inits:
            weight = inits[node.input[0]]
            assert weight.data_type == TensorProto.INT8
            axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
            user = next(n for n in graph.node if node.output[0] in n.input)
            trans_b = next((a.i for a in user.attribute if a.name == "transB"), 0)
            out_axis = {"MatMul": 1, "Gemm": 0 if trans_b else 1, "Conv": 0}[user.op_type]
            assert axis == out_axis, user.name  # one scale per output channel
            assert numpy_helper.to_array(inits[node.input[1]]).shape == (weight.dims[axis],)
    matmuls = [n for n in graph.node if n.op_type == "MatMul"]
    float_both = [n for n in matmuls if all(producer.get(i) is None or producer[i].op_type != "DequantizeLinear"
                                            for i in n.input)]  # fmt: skip
    assert len(float_both) == 4  # attention scores and context of the two blocks stay float
    for node in graph.node:  # no output Q/DQ: MatMul/Gemm results are never quantized
        if node.op_type == "QuantizeLinear":
            assert producer.get(node.input[0]) is None or producer[node.input[0]].op_type not in {"MatMul", "Gemm"}


@pytest.mark.parametrize("method", METHODS)
def test_every_calibration_method_works(tiny_bundle: Path, tmp_path: Path, method: str) -> None:
    cfg = QuantConfig(method=method, entropy_bins=256)  # few bins keep entropy fast here
    result = quantize(tiny_bundle, tmp_path, "thermal", cfg, rows=6)
    assert result.method == method and result.config["method"] == method
    assert result.activation_qdq == result.weight_dq == 10  # 8 Linear + head Gemm + patch Conv
    assert len(result.excluded_nodes) == 4
    assert check_qdq(result.path) == []
    assert int8_cosine(tiny_bundle, "thermal", result.path).min() >= MIN_COSINE


def test_attention_and_excluded_nodes_options(tiny_bundle: Path, tmp_path: Path) -> None:
    base = quantize(tiny_bundle, tmp_path, "audio", QuantConfig(method="minmax"), rows=4)
    attn = quantize(tiny_bundle, tmp_path / "a", "audio", QuantConfig(method="minmax", quantize_attention=True), rows=4)
    assert attn.activation_qdq > base.activation_qdq and attn.excluded_nodes == ()
    skip = (_weighted(tiny_bundle / "audio.fp32.onnx")[0],)
    kept = quantize(tiny_bundle, tmp_path / "k", "audio", QuantConfig(method="minmax", exclude_nodes=skip), rows=4)
    assert kept.weight_dq == base.weight_dq - 1 and skip[0] in kept.excluded_nodes
    assert check_qdq(attn.path) == [] and check_qdq(kept.path) == []


def _weighted(path: Path) -> list[str]:
    graph = onnx.load(str(path)).graph
    inits = {t.name for t in graph.initializer}
    return [n.name for n in graph.node if n.op_type == "MatMul" and n.input[1] in inits]


def test_dynamic_batch_and_progress(tiny_bundle: Path, tmp_path: Path) -> None:
    seen: list[tuple[str, float]] = []
    src = tiny_bundle / "imu.fp32.onnx"
    name, shape, dtype = graph_input(src)
    cal = structured_rows(shape, dtype, n=9, seed=3)
    result = quantize_int8(src, tmp_path / "imu.int8.onnx", name, cal, QuantConfig(method="minmax"),
                           progress=lambda stage, f: seen.append((stage, f)))  # fmt: skip
    fractions = [f for stage, f in seen if stage == "calibrate"]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and seen[-1] == ("done", 1.0)
    assert result.config["calibration_rows"] == 9
    x = structured_rows(shape, dtype, n=3, seed=4)
    batch = run(result.path, {name: x})
    single = np.concatenate([run(result.path, {name: x[i : i + 1]}) for i in range(3)])
    np.testing.assert_allclose(batch, single, rtol=1e-4, atol=1e-4 * np.abs(single).max())


def test_bad_calibration_sets_are_one_line_errors(tiny_bundle: Path, tmp_path: Path) -> None:
    src = tiny_bundle / "thermal.fp32.onnx"
    name, shape, _ = graph_input(src)
    good = structured_rows(shape, "float32", n=2, seed=0)
    nan = good.copy()
    nan[1, 0, 3, 3] = np.nan
    cases = {
        "NaN": (name, nan, QuantConfig()),
        "shape": (name, good[:, :, :100], QuantConfig()),
        "rank": (name, good[0], QuantConfig()),
        "empty": (name, good[:0], QuantConfig()),
        "dtype": (name, good.astype(np.float64), QuantConfig()),
        "input": ("nope", good, QuantConfig()),
        "unknown method": (name, good, QuantConfig(method="kl")),
        "exclude_nodes": (name, good, QuantConfig(exclude_nodes=("no_such_node",))),
    }
    for what, (inp, data, cfg) in cases.items():
        with pytest.raises(QuantizeError) as err:
            quantize_int8(src, tmp_path / "x.onnx", inp, data, cfg)
        message = str(err.value)
        assert message and "\n" not in message, what
        assert what.split()[0].lower() in message.lower() or what == "rank", (what, message)
    assert not (tmp_path / "x.onnx").exists()


def test_check_qdq_flags_asymmetric_int32_and_missing_zero_points(int8_dir: Path, tmp_path: Path) -> None:
    model = onnx.load(str(int8_dir / "thermal.int8.onnx"))
    q = next(n for n in model.graph.node if n.op_type == "QuantizeLinear")
    zp_index = next(i for i, t in enumerate(model.graph.initializer) if t.name == q.input[2])
    model.graph.initializer[zp_index].CopyFrom(helper.make_tensor(q.input[2], TensorProto.INT8, [], [3]))
    bad = tmp_path / "asymmetric.onnx"
    onnx.save(model, str(bad))
    problems = check_qdq(bad)
    assert any("non-zero zero point" in p for p in problems) and all("\n" not in p for p in problems)

    bias = numpy_helper.from_array(np.arange(4, dtype=np.int32), "bias_q")
    scale = numpy_helper.from_array(np.array(0.5, np.float32), "s")
    zp32 = numpy_helper.from_array(np.array(0, np.int32), "z")
    dq = helper.make_node("DequantizeLinear", ["bias_q", "s", "z"], ["y"], name="bias_dq")
    q_nozp = helper.make_node("QuantizeLinear", ["x", "s"], ["xq"], name="q_nozp")
    graph = helper.make_graph([dq, q_nozp], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4]),
                               helper.make_tensor_value_info("xq", TensorProto.UINT8, [4])],
                              [bias, scale, zp32])  # fmt: skip
    other = tmp_path / "int32.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(other))
    problems = check_qdq(other)
    assert any("INT32" in p for p in problems) and any("no zero point" in p for p in problems)


def test_session_options_hint(int8_dir: Path, tmp_path: Path) -> None:
    assert session_options_hint(int8_dir / "thermal.int8.onnx") == {}  # 3-D Linear layers: no fusion risk
    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.standard_normal((16, 8)).astype(np.float32), "W")
    bias = numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), "b")
    nodes = [helper.make_node("MatMul", ["x", "W"], ["y"], name="mm"), helper.make_node("Add", ["y", "b"], ["z"])]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 16])
    z = helper.make_tensor_value_info("z", TensorProto.FLOAT, ["batch", 8])
    graph = helper.make_graph(nodes, "g", [x], [z], [weight, bias])
    src = tmp_path / "mm2d.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(src))
    result = quantize_int8(src, tmp_path / "mm2d.int8.onnx", "x", rng.standard_normal((4, 16)).astype(np.float32),
                           QuantConfig(method="minmax"))  # fmt: skip
    hint = session_options_hint(result.path)
    assert hint == {"disabled_optimizers": ["MatMulAddFusion"]}
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(result.path), options, providers=["CPUExecutionProvider"], **hint)
    ops = {n.op_type for n in onnx.load(options.optimized_model_filepath).graph.node}
    assert "MatMulIntegerToFloat" in ops and "Gemm" not in ops  # the hint keeps the integer kernel


def test_external_data_source_and_output(tiny_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import calibration.quantize as quantize_module

    src = tmp_path / "src" / "audio.fp32.onnx"  # an external-data source, like the huge bundle
    src.parent.mkdir()
    model = onnx.load(str(tiny_bundle / "audio.fp32.onnx"))
    onnx.save_model(model, str(src), save_as_external_data=True, location="audio.fp32.onnx.data")
    monkeypatch.setattr(quantize_module, "EXTERNAL_DATA_BYTES", 0)
    name, shape, dtype = graph_input(src)
    cal = structured_rows(shape, dtype, n=4, seed=5)
    result = quantize_int8(src, tmp_path / "out" / "audio.int8.onnx", name, cal, QuantConfig(method="minmax"))
    assert result.data_files == (tmp_path / "out" / "audio.int8.onnx.data",)
    assert check_qdq(result.path) == []
    assert sorted(p.name for p in result.path.parent.iterdir()) == ["audio.int8.onnx", "audio.int8.onnx.data"]
    x = structured_rows(shape, dtype, n=2, seed=6)
    assert cosine(run(src, {name: x}), run(result.path, {name: x})).min() >= MIN_COSINE
