"""Encoder latency, throughput, memory and accuracy per backend and precision, vs PyTorch FP32 eager.

``python -m benchmarks.latency --bundle bundles/huge --backends ort,torch --precisions fp32,fp16,int8
--modalities audio thermal --batch 1,8`` writes ``<out>/latency-<name>.{json,md,png}``.

Every (modality, engine, precision, batch) runs in its own subprocess (:mod:`benchmarks.variant`)
on the same seeded, structured inputs. The baseline is the PyTorch FP32 eager model rebuilt
from the bundle's config and seed (or ``--checkpoint``); it is refused when its weights hash
differs from the manifest's ``model_id``. Each row carries its speed ratio vs that baseline
at the same modality and batch, and cosines of its outputs vs the baseline's. Artifacts or
backends that are missing become ``absent`` rows with the reason.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import RESULTS, cosine_stats, latency_stats, machine_info, structured_inputs
from runtime.backends import BackendUnavailable, backend_format
from runtime.errors import EdgebindError
from runtime.manifest import ModalitySpec, ModelManifest, load_manifest

BASELINE = "pytorch-eager"
REPO = Path(__file__).resolve().parent.parent


Job = tuple[str, str, str, int]  # modality, engine, precision, batch


def variant_spec(args: argparse.Namespace, manifest: ModelManifest, job: Job, work: Path) -> dict[str, Any]:
    """The spec file contents of one variant, or ``{"absent": reason}`` when its artifact is missing."""
    mod, backend, precision, batch = job
    base = {"modality": mod, "batch": batch, "iters": args.iters, "warmup": args.warmup, "warmup_s": args.warmup_s,
            "threads": args.threads,
            "device": args.device, "acc_n": args.acc_n, "inputs": str(work / f"{mod}.inputs.npy")}  # fmt: skip
    if backend == BASELINE:
        return {**base, "kind": "eager", "model_path": str(work / f"{mod}.tower.pt"), "config": args.config}
    spec = manifest.spec(mod)
    try:
        fmt = backend_format(backend)
    except BackendUnavailable as exc:
        return {"absent": str(exc)}
    art = next((a for a in spec.artifacts if a.precision == precision and a.format == fmt), None)
    if art is None:
        have = ", ".join(f"{a.format}/{a.precision}" for a in spec.artifacts)
        return {"absent": f"no {fmt}/{precision} artifact in the bundle (it has {have})"}
    options = backend_options(backend, precision, args, getattr(art, "engine", None) or {})
    return {**base, "kind": backend, "model_path": str(manifest.path(art.file)), "options": options,
            "input_name": spec.input.name, "artifact": art.file}  # fmt: skip


def backend_options(backend: str, precision: str, args: argparse.Namespace, engine: dict[str, Any]) -> dict[str, Any]:
    """Constructor options for ``open_backend`` per backend kind."""
    if backend.startswith("ort"):
        return {"intra_op_threads": args.threads}
    if backend == "torch":
        return {"device": args.device, "fp16": precision == "fp16", "cuda_graphs": args.device.startswith("cuda")}
    return {"engine_fingerprint": engine, "cuda_graphs": True} if engine else {"cuda_graphs": True}


def run_child(spec: dict[str, Any], work: Path, tag: str, timeout_s: float) -> dict[str, Any]:
    """Run one spec in a fresh interpreter; any crash or timeout becomes an ``error`` result."""
    spec_path, result_path = work / f"{tag}.spec.json", work / f"{tag}.result.json"
    spec_path.write_text(json.dumps(spec))
    result_path.unlink(missing_ok=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    env.update({"OMP_NUM_THREADS": str(spec["threads"]), "MKL_NUM_THREADS": str(spec["threads"])})
    cmd = [sys.executable, "-m", "benchmarks.variant", str(spec_path), str(result_path)]
    try:
        proc = subprocess.run(cmd, check=False, env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"status": "error", "reason": f"timed out after {timeout_s:.0f} s"}
    if result_path.is_file():
        result: dict[str, Any] = json.loads(result_path.read_text())
        return result
    last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    return {"status": "error", "reason": f"worker exited with code {proc.returncode}: {last}"}


def reference(args: argparse.Namespace, manifest: ModelManifest, mods: list[str], work: Path) -> dict[str, Any]:
    """Rebuild and hash-check the FP32 model, writing towers and reference outputs into ``work``."""
    src = manifest.source
    if not args.checkpoint and not src.get("random_weights", False):
        return {"status": "refused", "reason": f"bundle {manifest.root} was exported from checkpoint "
                f"{src.get('checkpoint')!r}; pass --checkpoint FILE for the PyTorch FP32 baseline"}  # fmt: skip
    spec = {"kind": "reference", "config": args.config, "seed": int(src.get("seed") or 0),
            "checkpoint": str(args.checkpoint) if args.checkpoint else None, "model_id": manifest.model_id,
            "built": [m.value for m in manifest.modalities], "threads": args.threads, "acc_n": args.acc_n,
            "out_dir": str(work), "modalities": {m: str(work / f"{m}.inputs.npy") for m in mods}}  # fmt: skip
    return run_child(spec, work, "reference", args.timeout)


def write_inputs(manifest: ModelManifest, mods: list[str], n: int, seed: int, work: Path) -> None:
    """Seeded structured inputs per modality, shared by every variant (``<mod>.inputs.npy``)."""
    for mod in mods:
        spec: ModalitySpec = manifest.spec(mod)
        rows = structured_inputs(mod, [int(d) for d in spec.input.shape[1:]], n, seed)
        np.save(work / f"{mod}.inputs.npy", rows.astype(spec.input.dtype))


def plan(args: argparse.Namespace, mods: list[str]) -> list[Job]:
    """Every (modality, engine, precision, batch), baseline first within each modality and batch."""
    jobs = []
    for mod in mods:
        for batch in args.batch:
            jobs.append((mod, BASELINE, "fp32", batch))
            jobs += [(mod, b, p, batch) for b in args.backends for p in args.precisions]
    return jobs


def run_jobs(args: argparse.Namespace, manifest: ModelManifest, jobs: list[Job],
             work: Path, tick: Callable[[str], None]) -> list[dict[str, Any]]:  # fmt: skip
    """Run every job ``args.rounds`` times, interleaved; returns one merged row per job."""
    results: dict[Job, list[dict[str, Any]]] = {job: [] for job in jobs}
    for rnd in range(args.rounds):
        for job in jobs:
            tick(f"{' '.join(map(str, job))} (round {rnd + 1})")
            if results[job] and results[job][-1]["status"] != "ok":
                continue  # absent or failing: no point in repeating it
            results[job].append(run_variant(args, manifest, job, work))
    return [merge_row(job, res, manifest) for job, res in results.items()]


def run_variant(args: argparse.Namespace, manifest: ModelManifest, job: Job, work: Path) -> dict[str, Any]:
    """One subprocess run of ``job``, with its cosines vs the reference outputs when it succeeded."""
    mod, backend, precision, batch = job
    spec = variant_spec(args, manifest, job, work)
    if "absent" in spec:
        return {"status": "absent", "reason": spec["absent"]}
    tag = f"{mod}.{backend}.{precision}.b{batch}"
    spec["outputs"] = str(work / f"{tag}.outputs.npy")
    res = run_child(spec, work, tag, args.timeout)
    res["artifact"] = spec.get("artifact")
    if res["status"] == "ok":
        res["accuracy"] = cosine_stats(np.load(spec["outputs"]), np.load(work / f"{mod}.reference.npy"))
    return res


def merge_row(job: Job, res: list[dict[str, Any]], manifest: ModelManifest) -> dict[str, Any]:
    """One report row: latency pooled over rounds, throughput, memory, accuracy and the gate."""
    mod, backend, precision, batch = job
    res = [r for r in res if r["status"] == "ok"] or res[-1:]  # a failed later round keeps the good ones
    last = res[-1]
    row: dict[str, Any] = {"modality": mod, "engine": backend, "precision": precision, "batch": batch,
                           "baseline": backend == BASELINE, "status": last["status"],
                           "artifact": last.get("artifact")}  # fmt: skip
    if last["status"] != "ok":
        return {**row, "reason": last.get("reason", "")}
    times = [t for r in res for t in r["times_s"]]
    stats = latency_stats(times)
    rounds = [latency_stats(r["times_s"])["p50_ms"] for r in res]
    row.update(stats, iters=len(times), rounds=len(res), round_p50_ms=rounds)
    row["throughput_rows_s"] = batch * 1e3 / stats["p50_ms"]
    for key in ("peak_rss_mb", "run_rss_mb", "gpu_peak_mb", "load_s"):
        row[key] = max((r[key] for r in res if r.get(key) is not None), default=None)
    row.update(last["accuracy"])
    if backend != BASELINE:
        row["gate"] = _gate(manifest, mod, precision, last.get("artifact"))
    return row


def _gate(manifest: ModelManifest, mod: str, precision: str, file: str | None) -> dict[str, Any]:
    for art in manifest.spec(mod).artifacts:
        if art.file == file:
            gate = dict(getattr(art, "gate", None) or {})
            if getattr(art, "forced", False):
                gate["forced"] = True
            return gate
    return {}


def add_ratios(rows: list[dict[str, Any]]) -> None:
    """``speedup_vs_baseline`` = baseline p50 / row p50 at the same modality and batch."""
    base = {(r["modality"], r["batch"]): r["p50_ms"] for r in rows if r["baseline"] and r["status"] == "ok"}
    for r in rows:
        ref = base.get((r["modality"], r["batch"]))
        r["speedup_vs_baseline"] = ref / r["p50_ms"] if ref and r["status"] == "ok" else None


def run_benchmark(
    args: argparse.Namespace, tick: Callable[[str], None], total: Callable[[int], None]
) -> dict[str, Any]:
    """Inputs, reference, every variant; returns the report payload (raises EdgebindError on refusal)."""
    manifest = load_manifest(args.bundle, verify_hashes=False)
    mods = args.modalities or [m.value for m in manifest.modalities]
    for mod in mods:
        manifest.spec(mod)  # one-line BundleError for a modality the bundle lacks
    jobs = plan(args, mods)
    total(len(jobs) * args.rounds + 1)
    with tempfile.TemporaryDirectory(prefix="edgebind-latency-") as tmp:
        work = Path(tmp)
        write_inputs(manifest, mods, max(args.acc_n, *args.batch), args.seed, work)
        tick("PyTorch FP32 reference (weights hash check)")
        ref = reference(args, manifest, mods, work)
        if ref["status"] != "ok":
            raise EdgebindError(ref["reason"])
        rows = run_jobs(args, manifest, jobs, work, tick)
    add_ratios(rows)
    return {"meta": run_meta(args, manifest, mods), "rows": rows}


def run_meta(args: argparse.Namespace, manifest: ModelManifest, mods: list[str]) -> dict[str, Any]:
    """Machine, bundle and method description stored with the rows."""
    meta = machine_info(args.threads)
    meta.update(bundle=str(args.bundle), model=manifest.model_name, model_id=manifest.model_id,
                random_weights=bool(manifest.source.get("random_weights")), config=args.config,
                modalities=mods, backends=args.backends, precisions=args.precisions, batches=args.batch,
                iters=args.iters, warmup=args.warmup, warmup_s=args.warmup_s, rounds=args.rounds, acc_n=args.acc_n,
                input_seed=args.seed,
                device=args.device, name=args.name)  # fmt: skip
    if args.device.startswith("cuda"):
        meta["gpu"] = gpu_info()
    return meta


def gpu_info() -> dict[str, Any]:
    """GPU name and driver via nvidia-smi (no torch import in this process)."""
    try:
        query = ["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"]
        out = subprocess.run(query, check=False, capture_output=True, text=True, timeout=20).stdout.splitlines()
        name, driver = (s.strip() for s in out[0].split(",", 1))
        return {"name": name, "driver": driver}
    except (OSError, IndexError, ValueError, subprocess.SubprocessError) as exc:
        return {"error": str(exc)}


def _csv(kind: Callable[[str], Any]) -> Callable[[str], list[Any]]:
    return lambda text: [kind(t.strip()) for t in text.split(",") if t.strip()]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.latency", description=__doc__.splitlines()[0])
    p.add_argument("--bundle", type=Path, required=True)
    p.add_argument("--backends", type=_csv(str), default=["ort"], help="comma list: ort,ort-cuda,tensorrt,torch")
    p.add_argument("--precisions", type=_csv(str), default=["fp32", "fp16", "int8"])
    p.add_argument("--modalities", nargs="+", default=None, help="default: every modality in the bundle")
    p.add_argument("--batch", type=_csv(int), default=[1], help="comma list of batch sizes, e.g. 1,8")
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3, help="untimed calls before timing")
    p.add_argument("--warmup-s", type=float, default=2.0, help="...and warm up for at least this many seconds")
    p.add_argument("--rounds", type=int, default=1, help="interleaved rounds; latencies pooled over rounds")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--device", default="cpu", help="device of the PyTorch baseline and torch backend")
    p.add_argument("--checkpoint", type=Path, default=None, help="weights the bundle was exported from")
    p.add_argument("--config", default=None, help="model config (default: the manifest's source.config)")
    p.add_argument("--acc-n", type=int, default=8, help="inputs for the accuracy columns")
    p.add_argument("--seed", type=int, default=2000, help="seed of the structured inputs")
    p.add_argument("--timeout", type=float, default=1200.0, help="seconds per variant process")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--name", default=None, help="report file tag (default: <host>-<date>)")
    args = p.parse_args(argv)
    if args.config is None:
        args.config = _default_config(args.bundle)
    return args


def _default_config(bundle: Path) -> str:
    try:
        data = json.loads((bundle / "manifest.json").read_text())
    except (OSError, ValueError):
        return "imagebind_huge"
    src = data.get("source", {})
    given = src.get("config") or data.get("model_name") or "imagebind_huge"
    return str(bundle / given) if (bundle / given).is_file() else str(given)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and write the report; returns the exit status (2: refused or bad bundle)."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from benchmarks.latency_report import write_report

    args = parse_args(argv)
    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
               TimeElapsedColumn())  # fmt: skip
    with Progress(*columns, transient=True) as bar:
        task = bar.add_task("starting", total=None)
        started = [0]

        def tick(what: str) -> None:  # called as each step starts
            bar.update(task, description=what, completed=started[0])
            started[0] += 1

        try:
            payload = run_benchmark(args, tick, lambda n: bar.update(task, total=n))
        except EdgebindError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    name = args.name or f"{payload['meta']['host']}-{payload['meta']['date']}"
    md = write_report(payload, args.out, f"latency-{name}")
    print(md.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
