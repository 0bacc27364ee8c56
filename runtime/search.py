"""``python -m runtime.search``: "when did we last hear/see/feel X" over an embedding memory.

Usage::

    python -m runtime.search --memory DIR [--bundle DIR] "glass breaking" [--since 10m] [--until 2m]
        [--modality audio] [--top 10] [--min-score S] [--json]

The query is text, embedded by the bundle's text encoder, or an example / composite
expression such as ``@audio:clip.wav`` or ``"a dog" + 0.5*@audio:bark.wav``
(:mod:`runtime.prompt_math`; example paths relative to the current directory).
``--bundle`` defaults to the bundle recorded in the memory; a bundle whose model differs
from the one that filled the memory is refused.
``--since``/``--until`` take a duration ago (``90s``, ``10m``, ``2h``, ``1d``) or an ISO
time (``2026-11-27T23:00:00``, local time unless it has an offset). Output: one line per
hit, best first (``3 min ago  audio  s0.audio  score 0.41  2026-11-27 23:01:12``), or with
``--json`` one object ``{"ok": true, "query", "hits": [{id, score, stream, source, modality,
start_ns, end_ns (wall ns), start_mono_ns, end_mono_ns, ago_s, time}], "searched"}``.
Errors (no memory, corrupt store, bad time, missing bundle) print one line and exit 2.

:func:`search_request` is the same search for the daemon's control interface.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from runtime.errors import EdgebindError, InputError
from runtime.memory import EmbeddingMemory, Hit
from runtime.types import Modality

EmbedText = Callable[[list[str]], NDArray[np.float32]]
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
MAX_TOP = 1000


def parse_when(text: str, now_ns: int | None = None) -> int:
    """A wall-clock ns time from ``"10m"`` (ago), a bare number of seconds ago, or an ISO time."""
    now_ns = time.time_ns() if now_ns is None else now_ns
    s = str(text).strip()
    seconds = _duration_s(s)
    if seconds is not None:
        return now_ns - int(seconds * 1e9)
    try:
        t = dt.datetime.fromisoformat(s)
    except ValueError:
        raise InputError(f"bad time {text!r}: use a duration ago (30s, 10m, 2h, 1d) or an ISO time") from None
    if t.tzinfo is None:
        t = t.astimezone()
    return int(t.timestamp() * 1e9)


def parse_duration_s(text: str) -> float:
    """Seconds from ``"90s"``, ``"10m"``, ``"2h"``, ``"7d"``, ``"1w"`` or a bare number of seconds (> 0).

    Raises:
        InputError: anything else (one line with the accepted forms).
    """
    seconds = _duration_s(str(text).strip())
    if seconds is None or seconds <= 0:
        raise InputError(f"bad duration {text!r}: use a positive number of seconds or 90s, 10m, 2h, 7d, 1w")
    return seconds


def _duration_s(text: str) -> float | None:
    """Seconds of ``"90"``, ``"90s"``, ``"10m"``, ``"2h"``, ``"7d"``, ``"1w"``; None if it is not one."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([smhdw]?)", text)
    return None if m is None else float(m.group(1)) * _UNITS[m.group(2) or "s"]


def ago(seconds: float) -> str:
    """``"12 s ago"``, ``"3 min ago"``, ``"2.5 h ago"``, ``"4.0 d ago"`` (``"in 3 s"`` ahead of the clock)."""
    if seconds < 0:  # pace=fast sources stamp data ahead of the clock
        return "just now" if seconds > -1 else f"in {-seconds:.0f} s"
    if seconds < 90:
        return f"{seconds:.0f} s ago"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min ago"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h ago"
    return f"{seconds / 86400:.1f} d ago"


def hit_dict(hit: Hit, now_ns: int) -> dict[str, Any]:
    d = hit.to_dict()
    d["ago_s"] = round((now_ns - hit.end_ns) / 1e9, 3)
    d["time"] = dt.datetime.fromtimestamp(hit.start_ns / 1e9).astimezone().isoformat(timespec="milliseconds")
    return d


def search_request(
    memory: EmbeddingMemory,
    embed_text: EmbedText | None,
    request: Mapping[str, Any],
    *,
    embed_query: Callable[[str], NDArray[np.float32]] | None = None,
) -> dict:
    """The daemon control op ``{"op": "memory.search", "query": "glass breaking" | "vector": [...],
    "since": "10m", "until": ..., "modality": "audio" | [...], "top": 10, "min_score": 0.2}``.

    Args:
        memory: the store to search.
        embed_text: texts -> (N, D) embeddings, for a plain-text ``query``.
        request: the request object (keys above; others are ignored).
        embed_query: query string -> (D,) vector; when given it replaces ``embed_text`` and may
            accept expressions and examples (:func:`runtime.prompt_math.query_vector`).

    Returns ``{"ok": true, "query", "hits": [...], "searched": windows}`` or ``{"ok": false, "error": one line}``;
    never raises on malformed input.
    """
    try:
        if not isinstance(request, Mapping):
            raise InputError("request must be an object")
        now = time.time_ns()
        top = request.get("top", 10)
        if isinstance(top, bool) or not isinstance(top, int) or not 1 <= top <= MAX_TOP:
            raise InputError(f"top must be an integer 1..{MAX_TOP}")
        min_score = request.get("min_score")
        if min_score is not None and (isinstance(min_score, bool) or not isinstance(min_score, (int, float))):
            raise InputError("min_score must be a number")
        since = request.get("since")
        until = request.get("until")
        since_ns = None if since is None else parse_when(str(since), now)
        until_ns = None if until is None else parse_when(str(until), now)
        mod = request.get("modality")
        if mod is not None:
            names = [mod] if isinstance(mod, str) else mod
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise InputError("modality must be a name or a list of names")
            mod = [Modality.parse(n) for n in names]
        query = request.get("query")
        if "vector" in request:
            vec = np.asarray(request["vector"], dtype=np.float32)
            if vec.ndim != 1 or vec.shape[0] != memory.dim or not np.all(np.isfinite(vec)):
                raise InputError(f"vector must be {memory.dim} finite numbers")
        elif isinstance(query, str) and query.strip():
            vec = _embed(query.strip(), embed_text, embed_query)
            if vec.shape != (memory.dim,):
                raise InputError(f"the query has D={vec.shape[-1]} but the memory stores D={memory.dim}")
        else:
            raise InputError('give "query" (text) or "vector"')
        hits = memory.search(vec, top, since_ns=since_ns, until_ns=until_ns, modality=mod,
                             min_score=None if min_score is None else float(min_score))  # fmt: skip
        return {"ok": True, "query": query, "hits": [hit_dict(h, now) for h in hits], "searched": len(memory)}
    except (EdgebindError, ValueError, TypeError, KeyError) as exc:
        return {"ok": False, "error": " ".join(str(exc).split())[:300] or type(exc).__name__}


def _embed(query: str, embed_text: EmbedText | None, embed_query: Callable[[str], NDArray] | None) -> NDArray:
    if embed_query is not None:
        return np.asarray(embed_query(query), np.float32).reshape(-1)
    if embed_text is None:
        raise InputError("text queries need the bundle's text encoder")
    return np.asarray(embed_text([query]), np.float32)[0]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m runtime.search", description=__doc__.splitlines()[0])
    p.add_argument("query", help='text ("glass breaking") or an expression ("a dog" + 0.5*@audio:bark.wav)')
    p.add_argument("--memory", type=Path, required=True, help="embedding memory directory")
    p.add_argument("--bundle", type=Path, help="bundle directory (default: the one recorded in the memory)")
    p.add_argument("--since", help="only windows after this: 10m (ago), 2h, 1d or an ISO time")
    p.add_argument("--until", help="only windows before this (same forms)")
    p.add_argument("--modality", action="append", help="only this modality (repeatable)")
    p.add_argument("--top", type=int, default=10, help="hits to show (default 10)")
    p.add_argument("--min-score", type=float, help="drop hits below this cosine")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.add_argument("--backend", default="ort", help="embedder backend for the query (default ort)")
    return p


def _query_vector(expr: str, bundle: Path, backend: str, model_id: str | None) -> NDArray[np.float32]:
    from runtime.embedder import Embedder
    from runtime.manifest import load_manifest
    from runtime.prompt_math import query_vector

    manifest = load_manifest(bundle)
    if model_id and manifest.model_id != model_id:
        raise InputError(f"bundle {bundle} (model {manifest.model_id[:12]}) did not fill this memory "
                         f"(model {model_id[:12]}); pass the bundle that recorded it")  # fmt: skip
    with Embedder(manifest, backend, "fp32", max_batch=8) as embedder:
        return np.asarray(query_vector(expr, manifest, embedder, Path.cwd()), np.float32).reshape(-1)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI: 0 on success (even with no hits), 2 on an error."""
    args = _parser().parse_args(argv)
    try:
        now = time.time_ns()
        since_ns = None if args.since is None else parse_when(args.since, now)
        until_ns = None if args.until is None else parse_when(args.until, now)
        mods = None if not args.modality else [Modality.parse(m) for m in args.modality]
        if args.top < 1:
            raise InputError("--top must be >= 1")
        with EmbeddingMemory(args.memory) as memory:
            meta = memory.meta()
            bundle = args.bundle or (Path(meta["bundle"]) if meta.get("bundle") else None)
            if bundle is None:
                raise InputError(f"memory {args.memory} records no bundle; pass --bundle")
            vec = _query_vector(args.query, bundle, args.backend, meta.get("model_id"))
            if vec.shape[0] != memory.dim:
                raise InputError(f"the query has D={vec.shape[0]} but the memory stores D={memory.dim}")
            hits = memory.search(vec, args.top, since_ns=since_ns, until_ns=until_ns, modality=mods,
                                 min_score=args.min_score)  # fmt: skip
            searched = len(memory)
    except (EdgebindError, ValueError) as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    if args.json:
        out = {"ok": True, "query": args.query, "hits": [hit_dict(h, now) for h in hits], "searched": searched}
        print(json.dumps(out))
        return 0
    if not hits:
        print(f"no match among {searched} windows")
    for h in hits:
        when = dt.datetime.fromtimestamp(h.start_ns / 1e9).strftime("%Y-%m-%d %H:%M:%S")
        print(f"{ago((now - h.end_ns) / 1e9):>12}  {h.modality:<8} {h.stream:<14} score {h.score:.2f}  {when}"
              f"  {h.source}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
