"""The TensorRT builder calls behind ``python -m export.engine`` (no torch).

One code path for TensorRT 10.x and 11.x: the network is strongly typed (precision
comes from the ONNX graph: FP16 casts, symmetric Q/DQ). TensorRT 10 needs
``NetworkDefinitionCreationFlag.STRONGLY_TYPED``; 11 is always strongly typed and
keeps the flag only as an ignored, deprecated member, so the flag is set when the
module offers it. No precision builder flags and no calibrators are used (both are
removed in 11).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from runtime.errors import EdgebindError


class EngineBuildError(EdgebindError):
    """TensorRT could not parse or build a network."""


def import_tensorrt() -> ModuleType:
    """Import the TensorRT Python bindings or raise a one-line install hint."""
    try:
        import tensorrt
    except ImportError:
        raise EdgebindError(
            "python -m export.engine needs the TensorRT Python bindings on the target device "
            "(JetPack: sudo apt-get install python3-libnvinfer; x86: pip install tensorrt)"
        ) from None
    return tensorrt


def network_flags(trt: Any) -> int:
    """Creation flags for a strongly typed network on TensorRT 10 (0 where the flag does not exist)."""
    flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    return 0 if flag is None else 1 << int(flag)


def parser_errors(parser: Any, onnx_path: Path) -> list[str]:
    """One line per ONNX parser error: file, node index/name/operator, description."""
    lines = []
    for i in range(parser.num_errors):
        err = parser.get_error(i)
        where = f"node {err.node()}"
        name = getattr(err, "node_name", lambda: "")()
        op = getattr(err, "node_operator", lambda: "")()
        if name or op:
            where += f" ({' '.join(x for x in (op, name) if x)})"
        desc = " ".join(str(err.desc()).split())
        lines.append(f"{onnx_path.name}: {where}: {desc}")
    return lines


def _timing_cache(trt_config: Any, path: Path | None) -> Any:
    """Load ``path`` into a timing cache attached to ``trt_config`` (a fresh one if absent or stale)."""
    blob = path.read_bytes() if path is not None and path.is_file() else b""
    cache = trt_config.create_timing_cache(blob)
    if not trt_config.set_timing_cache(cache, False) and blob:
        # A cache from another TensorRT version or GPU: start over instead of failing the build.
        cache = trt_config.create_timing_cache(b"")
        trt_config.set_timing_cache(cache, False)
    return cache


def _save_timing_cache(trt_config: Any, path: Path | None) -> None:
    if path is None:
        return
    data = trt_config.get_timing_cache().serialize()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(bytes(memoryview(data)))
    tmp.replace(path)


def build_plan(
    trt: Any,
    onnx_path: Path,
    profiles: Sequence[dict[str, Any]],
    workspace_mb: int,
    timing_cache: Path | None,
) -> bytes:
    """Parse ``onnx_path`` and build a serialized engine.

    Args:
        trt: the ``tensorrt`` module.
        profiles: one ``{input, min, opt, max}`` per graph input (shapes as int lists).
        workspace_mb: cap on the builder/runtime workspace pool (8 GB boards: ~1024).
        timing_cache: file loaded before and saved after the build (None: no persistence).

    Raises:
        EngineBuildError: parser errors (one line each) or a failed build.
    """
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(network_flags(trt))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):  # resolves external data beside the file
        raise EngineBuildError("\n".join(parser_errors(parser, onnx_path)) or f"{onnx_path}: ONNX parse failed")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
    profile = builder.create_optimization_profile()
    for p in profiles:
        profile.set_shape(p["input"], tuple(p["min"]), tuple(p["opt"]), tuple(p["max"]))
    config.add_optimization_profile(profile)
    _timing_cache(config, timing_cache)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise EngineBuildError(f"{onnx_path}: TensorRT could not build an engine (see the TensorRT log above)")
    _save_timing_cache(config, timing_cache)
    return bytes(memoryview(plan))
