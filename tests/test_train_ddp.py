"""torchrun with 2 CPU (gloo) processes matches a single process on the same global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from export.checkpoint import load_state_dict_file  # noqa: E402
from export.config import save_config  # noqa: E402
from export.train.__main__ import main  # noqa: E402
from export.train.metrics import read_metrics  # noqa: E402
from tests.train_support import AUDIO, IMAGE, micro_model_config  # noqa: E402

pytestmark = pytest.mark.torch

ROOT = Path(__file__).resolve().parents[1]


def write_run(tmp_path: Path) -> Path:
    save_config(micro_model_config(), tmp_path / "micro.json")
    dataset = {"factory": "export.train.synthetic:SyntheticPairs",
               "kwargs": {"num_items": 24, "modality": "audio", "image_shape": list(IMAGE),
                          "modality_shape": list(AUDIO)}}
    run = {"model": str(tmp_path / "micro.json"), "pairs": ["vision", "audio"], "train_anchor": True,
           "learn_temperature": True, "train_data": dataset, "steps": 6, "batch_size": 8, "grad_accum": 2,
           "lr": 3e-3, "warmup_steps": 1, "checkpoint_every": 3, "plot": False, "device": "cpu"}  # fmt: skip
    path = tmp_path / "run.json"
    path.write_text(json.dumps(run))
    return path


def test_two_process_gloo_matches_single_process(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_run(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--standalone",
           "-m", "export.train", "--config", str(config), "--out", str(tmp_path / "ddp"), "--no-progress"]  # fmt: skip
    proc = subprocess.run(cmd, check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])  # rank 0 alone prints
    assert summary["step"] == 6

    assert main(["--config", str(config), "--out", str(tmp_path / "single"), "--no-progress"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["step"] == 6

    ddp = [r["loss"] for r in read_metrics(tmp_path / "ddp" / "metrics.jsonl")]
    single = [r["loss"] for r in read_metrics(tmp_path / "single" / "metrics.jsonl")]
    assert len(ddp) == len(single) == 6
    assert ddp == pytest.approx(single, abs=1e-4)  # same global batch, gathered negatives, averaged grads
    assert ddp[-1] < ddp[0]
    a, b = load_state_dict_file(tmp_path / "ddp" / "model.pt"), load_state_dict_file(tmp_path / "single" / "model.pt")
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-3
    # only rank 0 wrote: one metrics file, checkpoints at steps 3 and 6
    written = sorted(p.name for p in (tmp_path / "ddp" / "checkpoints").iterdir())
    assert written == ["step_00000003.pt", "step_00000006.pt"]
    rng = torch.load(tmp_path / "ddp" / "checkpoints" / "step_00000006.pt", weights_only=True)["rng"]
    assert len(rng) == 2 and not torch.equal(rng[0]["torch"], rng[1]["torch"])  # every rank's RNG is kept


def test_cli_reports_config_errors_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"model": "edge_small", "stepz": 3}))
    assert main(["--config", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: bad.json: unknown key 'stepz'") and "\n" not in err
