"""LLVIP (visible + infrared pairs) into paired image/thermal records.

Layout read (the LLVIP release)::

    <root>/                           e.g. LLVIP/
      visible/train/<id>.jpg          RGB frames
      visible/test/<id>.jpg
      infrared/train/<id>.jpg         registered 8-bit infrared frames, same file names
      infrared/test/<id>.jpg
      Annotations/<id>.xml            pedestrian boxes (not used here)

Pairs are matched by file name; names present on one side only are counted and logged.
Infrared JPEGs are 8-bit, non-radiometric: they go through the runtime thermal pipeline's
8-bit path (``runtime.preprocess.thermal``). Captions are empty (LLVIP has none).
"""

from __future__ import annotations

from pathlib import Path

from export.train.data import PairRecord, log_dropped
from runtime.errors import InputError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


def _images(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        raise InputError(f"{folder}: no such LLVIP folder (expected <root>/visible|infrared/<split>/)")
    return {p.name: p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}


def llvip_records(root: str | Path, split: str = "train") -> list[PairRecord]:
    """Pair ``visible/<split>/<id>`` with ``infrared/<split>/<id>``.

    Args:
        root: the LLVIP folder.
        split: ``train`` or ``test``.

    Returns:
        One record per matched file name, sorted by name (image = visible, target = infrared).

    Raises:
        InputError: a split folder is missing or no name matches.
    """
    root = Path(root)
    visible = _images(root / "visible" / split)
    infrared = _images(root / "infrared" / split)
    unmatched = sorted(set(visible) ^ set(infrared))
    log_dropped([f"{split}/{name}: present on one side only" for name in unmatched], f"LLVIP {split}")
    names = sorted(set(visible) & set(infrared))
    if not names:
        raise InputError(f"{root}: no LLVIP {split} file name appears in both visible/ and infrared/")
    return [PairRecord(visible[n], infrared[n], source=f"LLVIP/{split}/{n}") for n in names]
