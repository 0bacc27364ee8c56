"""PyTorch backend: runs a ``torch.export`` program (``.pt2``) written by ``python -m export.torch_program``.

Never imports ``export``; torch is imported inside functions only (design §2).

Loading safety: ``torch.export.load`` (torch 2.13) reads the graph from JSON and plain
tensors as raw bytes, but it unpickles three kinds of payload: tensor subclasses and
legacy weight files (``torch.load(weights_only=False)``), custom/opaque objects
(``pickle.loads``) and sample inputs (``weights_only=True`` with a silent fallback to
``weights_only=False``); AOTInductor payloads load compiled shared libraries.
:func:`inspect_program` reads the archive with ``zipfile``/``json`` first and refuses
any of those, so only raw tensors and the JSON graph reach torch.
"""

from __future__ import annotations

import json
import logging
import time
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from runtime.backends.base import BackendUnavailable, check_feeds
from runtime.errors import BundleError
from runtime.manifest import TensorSpec

META_NAME = "edgebind.json"  # extra file written by export.torch_program: input/output specs
_FORBIDDEN_DIRS = ("data/aotinductor/", "data/executorch/", "data/mtia", "xl_model_weights/")
_log = logging.getLogger("edgebind.backend")


def _members(zf: zipfile.ZipFile) -> dict[str, zipfile.ZipInfo]:
    """Archive members keyed by path below the archive's root folder."""
    return {info.filename.partition("/")[2]: info for info in zf.infolist() if "/" in info.filename}


def _check_payloads(zf: zipfile.ZipFile, members: Mapping[str, zipfile.ZipInfo], where: str) -> None:
    for rel in members:
        is_legacy = rel.startswith(("data/weights/", "data/constants/")) and rel.endswith(".pt")
        if rel.startswith(_FORBIDDEN_DIRS) or is_legacy:
            raise BundleError(f"{where}: refusing {rel} (compiled code or pickled payload); re-export the program")
        if rel.endswith(("_weights_config.json", "_constants_config.json")):
            config = json.loads(zf.read(members[rel])).get("config", {})
            for fqn, meta in config.items():
                if meta.get("use_pickle") or not str(meta.get("path_name", "")).startswith(("weight_", "tensor_")):
                    raise BundleError(f"{where}: refusing {fqn} (stored as a pickled object); re-export the program")
        if rel.startswith("data/sample_inputs/") and members[rel].file_size:
            raise BundleError(f"{where}: refusing pickled sample inputs {rel}; re-export the program")


def inspect_program(path: str | Path) -> dict[str, Any]:
    """Validate a ``.pt2`` archive without torch and return its edgebind metadata.

    Returns:
        ``{"inputs": [TensorSpec dicts], "outputs": [...], "torch_version": ...}``.

    Raises:
        BundleError: not a zip, not written by ``export.torch_program``, or holding a pickled
            object, AOTInductor code or sample inputs (one line naming the member).
    """
    where = str(path)
    try:
        with zipfile.ZipFile(path) as zf:
            members = _members(zf)
            if len([m for m in members if m.startswith("models/") and m.endswith(".json")]) != 1:
                raise BundleError(f"{where}: expected exactly one program in the archive; re-export it")
            _check_payloads(zf, members, where)
            meta_key = f"extra/{META_NAME}"
            if meta_key not in members:
                raise BundleError(f"{where}: no {META_NAME}; write it with python -m export.torch_program")
            meta: dict[str, Any] = json.loads(zf.read(members[meta_key]))
    except (OSError, zipfile.BadZipFile, json.JSONDecodeError, UnicodeDecodeError, AttributeError) as exc:
        raise BundleError(f"{where}: not a readable torch.export archive ({exc})") from None
    return meta


class TorchBackend:
    """Runs one exported program with PyTorch on the CPU or a CUDA GPU.

    Args:
        model_path: the ``.pt2`` file; its input is ``(batch, *row)`` with a dynamic batch.
        device: ``"cpu"`` or ``"cuda"`` (``"cuda:N"``).
        fp16: expect an FP16 program. Precision is baked in at export (``--precision fp16``):
            an exported graph asserts its dtypes, so autocast cannot lower an FP32 program and
            an FP32 program is refused with a one-line hint. Outputs are float32 either way.
        cuda_graphs: on CUDA, capture one graph per batch size with static input/output tensors.
        intra_op_threads: ``torch.set_num_threads`` when > 0 (process-wide).
        engine_fingerprint: the manifest ``engine`` dict; a different torch version is logged.
    """

    def __init__(
        self,
        model_path: str | Path,
        *,
        device: str = "cpu",
        fp16: bool = False,
        cuda_graphs: bool = False,
        intra_op_threads: int = 0,
        engine_fingerprint: Mapping[str, Any] | None = None,
        **_: Any,
    ) -> None:
        meta = inspect_program(model_path)
        import torch

        if device.startswith("cuda") and not torch.cuda.is_available():
            raise BackendUnavailable(f"backend 'torch' on {device}: this PyTorch sees no CUDA GPU")
        _warn_version(str(model_path), (engine_fingerprint or {}).get("torch_version"), torch.__version__)
        if fp16 and meta.get("precision") != "fp16":
            raise BundleError(
                f"{model_path}: fp16 requested but this is a {meta.get('precision', 'fp32')} program; "
                "run the fp16 artifact (python -m export.torch_program --precision fp16)"
            )
        if intra_op_threads > 0:
            torch.set_num_threads(intra_op_threads)
        self._torch = torch
        self.device = torch.device(device)
        self.inputs = tuple(TensorSpec.from_dict(s, str(model_path)) for s in meta.get("inputs", []))
        self.outputs = tuple(TensorSpec.from_dict(s, str(model_path)) for s in meta.get("outputs", []))
        self._module = self._load(Path(model_path))
        self._use_graphs = cuda_graphs and self.device.type == "cuda"
        self._graphs: dict[tuple[int, ...], tuple[Any, list[Any], Any]] = {}
        self.last_latency_s = 0.0

    def _load(self, path: Path) -> Any:
        torch = self._torch
        try:
            program = torch.export.load(str(path))
            if self.device.type != "cpu":
                from torch.export.passes import move_to_device_pass

                program = move_to_device_pass(program, self.device)
        except Exception as exc:  # torch raises many types for a bad or foreign-version archive
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise BundleError(f"{path}: torch.export.load failed ({first}); re-export with this torch") from None
        return program.module()

    def _call(self, args: list[Any]) -> Any:
        out = self._module(*args)
        return out[0] if isinstance(out, (tuple, list)) else out

    def infer(self, feeds: Mapping[str, NDArray[np.generic]]) -> dict[str, NDArray[np.generic]]:
        """Run the program on ``feeds`` ((batch, *row) arrays); returns new float arrays keyed by output name."""
        check_feeds(feeds, self.inputs)
        torch = self._torch
        start = time.perf_counter()
        with torch.inference_mode():
            host = [torch.from_numpy(np.ascontiguousarray(feeds[s.name])) for s in self.inputs]
            if self._use_graphs:
                out = self._replay(host)
            else:
                out = self._call([t.to(self.device) for t in host])
            result = out.float().cpu().numpy()
        self.last_latency_s = time.perf_counter() - start
        return {self.outputs[0].name: result}

    def _replay(self, host: list[Any]) -> Any:
        key = tuple(int(t.shape[0]) for t in host)
        if key not in self._graphs:
            self._graphs[key] = self._capture(host)
        graph, static_in, static_out = self._graphs[key]
        for dst, src in zip(static_in, host, strict=True):
            dst.copy_(src, non_blocking=False)
        graph.replay()
        return static_out

    def _capture(self, host: list[Any]) -> tuple[Any, list[Any], Any]:
        """Warm up on a side stream, then record one CUDA graph for these input shapes."""
        torch = self._torch
        static_in = [t.to(self.device) for t in host]
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):
                self._call(static_in)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_out = self._call(static_in)
        return graph, static_in, static_out

    def close(self) -> None:
        """Drop the program and captured graphs."""
        self._graphs.clear()
        self._module = None

    def __enter__(self) -> TorchBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _warn_version(where: str, built: Any, running: str) -> None:
    if built and str(built).split(".")[:2] != running.split(".")[:2]:
        _log.warning("%s: exported with torch %s, running torch %s; re-export if it fails", where, built, running)
