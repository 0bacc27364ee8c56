"""SUN RGB-D (image + depth) into paired image/depth records.

Layout read (``SUNRGBD.zip`` as released by Princeton, v2)::

    <root>/                                   e.g. SUNRGBD/
      kv1/NYUdata/<scene>/ ...                sensor folders: kv1, kv2, realsense, xtion
      kv2/kinect2data/<scene>/
        image/<name>.jpg                      the RGB frame (one file)
        depth/<name>.png                      raw depth, 16-bit, mm rotated right by 3 bits
        depth_bfx/<name>.png                  the same, hole-filled (optional)
        intrinsics.txt                        3 x 3 camera matrix, row-major (fx first)
        scene.txt                             optional scene type, e.g. "bedroom"

A scene is any folder holding ``image/``, ``depth/`` (or ``depth_bfx/``) and
``intrinsics.txt``, at any depth below ``root``. Per row the depth preprocessing gets the
scene's ``focal_px`` (fx from intrinsics), the sensor's baseline (Kinect 0.075 m,
RealSense / Xtion 0.095 m, from the sensor folder name) and ``png_decode="sunrgbd"``
(undo the 3-bit rotation; see ``runtime.preprocess.depth`` for the ~8x ambiguity).
The caption is the scene type with underscores as spaces ("" without ``scene.txt``).
Train/test splits come from the toolbox's ``allsplit.mat`` (MATLAB); export it to a text
file of scene folders (relative to ``root``, one per line) and pass it as ``split_file``.
"""

from __future__ import annotations

from pathlib import Path

from export.train.data import PairRecord, log_dropped
from runtime.errors import InputError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
BASELINE_M = {"kv1": 0.075, "kv2": 0.075, "realsense": 0.095, "xtion": 0.095}


def read_intrinsics(path: Path) -> float:
    """fx in pixels from a SUN RGB-D ``intrinsics.txt`` (9 numbers, row-major 3 x 3)."""
    try:
        values = [float(v) for v in path.read_text(encoding="utf-8").split()]
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: not a readable 3 x 3 intrinsics matrix ({exc})") from None
    if len(values) != 9 or values[0] <= 0:
        raise InputError(f"{path}: expected 9 numbers with fx > 0 first, got {len(values)}")
    return values[0]


def find_scenes(root: Path) -> list[Path]:
    """Every scene folder below ``root`` (sorted): holds ``intrinsics.txt`` and ``image/``."""
    return sorted(p.parent for p in root.rglob("intrinsics.txt") if (p.parent / "image").is_dir())


def _first_file(folder: Path, suffixes: tuple[str, ...]) -> Path | None:
    if not folder.is_dir():
        return None
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in suffixes)
    return files[0] if files else None


def scene_record(scene: Path, root: Path, prefer_filled: bool = False) -> PairRecord:
    """One scene folder to a record (see the module docstring); raises InputError naming the folder."""
    image = _first_file(scene / "image", IMAGE_SUFFIXES)
    folders = ("depth_bfx", "depth") if prefer_filled else ("depth", "depth_bfx")
    depth = next((d for d in (_first_file(scene / f, (".png",)) for f in folders) if d is not None), None)
    if image is None or depth is None:
        raise InputError(f"{scene}: needs image/<name>.jpg and depth/<name>.png")
    sensor = scene.relative_to(root).parts[0].lower() if scene != root else ""
    baseline = next((b for name, b in BASELINE_M.items() if sensor.startswith(name)), BASELINE_M["kv1"])
    overrides = {"focal_px": read_intrinsics(scene / "intrinsics.txt"), "baseline_m": baseline, "png_decode": "sunrgbd"}
    scene_txt = scene / "scene.txt"
    caption = scene_txt.read_text(encoding="utf-8").strip().replace("_", " ") if scene_txt.is_file() else ""
    return PairRecord(image, depth, caption, preprocess=overrides, source=str(scene))


def sunrgbd_records(
    root: str | Path, split_file: str | Path | None = None, *, prefer_filled: bool = False
) -> list[PairRecord]:
    """Pair every scene's RGB frame with its depth map.

    Args:
        root: the ``SUNRGBD`` folder.
        split_file: optional text file of scene folders relative to ``root``, one per line.
        prefer_filled: use ``depth_bfx/`` (hole-filled) when present instead of raw ``depth/``.

    Returns:
        One record per usable scene; broken scenes are logged and counted.

    Raises:
        InputError: no scene found, or none usable.
    """
    root = Path(root)
    if split_file is not None:
        lines = Path(split_file).read_text(encoding="utf-8").splitlines()
        scenes = [root / line.strip().strip("/") for line in lines if line.strip()]
    else:
        scenes = find_scenes(root)
    records: list[PairRecord] = []
    dropped: list[str] = []
    for scene in scenes:
        try:
            records.append(scene_record(scene, root, prefer_filled))
        except InputError as exc:
            dropped.append(str(exc))
    log_dropped(dropped, f"SUN RGB-D {root}")
    if not records:
        raise InputError(f"{root}: no usable SUN RGB-D scene (image/, depth/, intrinsics.txt); {len(dropped)} broken")
    return records
