"""Evaluation of aligned towers: cross-modal recall@k and zero-shot top-1 with text prompts.

The metric functions work on precomputed embedding tensors; :func:`embed_dataset`
produces them from a model and a paired dataset (the batch format of ``export.train``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, default_collate

Tokenize = Callable[[Sequence[str]], Tensor]


def batch_key(modality: str) -> str:
    """The batch dict key holding ``modality``'s input: ``image`` for vision, else the modality."""
    return "image" if modality == "vision" else modality


def modality_input(batch: Mapping[str, Any], modality: str, tokenize: Tokenize | None = None) -> Tensor:
    """Take ``modality``'s model-ready tensor from a collated batch.

    Text falls back to tokenising ``batch["caption"]`` when the batch has no ``text`` tensor.

    Raises:
        KeyError: the batch lacks the modality (and, for text, captions or a tokenizer).
    """
    key = batch_key(modality)
    if key in batch:
        return batch[key]
    if modality == "vision" and "vision" in batch:
        return batch["vision"]
    if modality == "text" and "caption" in batch and tokenize is not None:
        return tokenize(list(batch["caption"]))
    raise KeyError(f"batch has no {key!r} entry (keys: {', '.join(sorted(batch))})")


def clip_tokenizer(context_length: int = 77) -> Tokenize:
    """The CLIP BPE tokenizer as a ``list[str] -> [N, 77] int64`` callable (needs its vocab file)."""
    from runtime.tokenizer import ClipTokenizer

    tok = ClipTokenizer.from_file()
    if context_length != tok.context_length:
        raise ValueError(f"text tower expects {context_length} tokens, the CLIP tokenizer makes {tok.context_length}")
    return lambda texts: torch.from_numpy(tok.encode(list(texts)))


def recall_at_k(query: Tensor, gallery: Tensor, ks: Sequence[int] = (1, 5, 10)) -> dict[int, float]:
    """Fraction of queries whose own gallery row (same index) ranks in the top k by cosine.

    Args:
        query: ``[N, D]`` embeddings.
        gallery: ``[N, D]`` embeddings; row i is query i's match.
        ks: cut-offs (a k above N counts every query as found).

    Returns:
        ``{k: recall}`` in [0, 1]. Ties count against the query (the match must beat them).
    """
    sims = F.normalize(query.float(), dim=-1) @ F.normalize(gallery.float(), dim=-1).T
    own = sims.diagonal().unsqueeze(1)
    beaten_by = (sims > own).sum(dim=1) + ((sims == own).sum(dim=1) - 1)
    return {k: float((beaten_by < k).float().mean()) for k in ks}


def cross_modal_recall(
    a: Tensor, b: Tensor, names: tuple[str, str], ks: Sequence[int] = (1, 5, 10)
) -> dict[str, float]:
    """Recall@k in both directions between paired embeddings ``a`` and ``b`` (``[N, D]`` each).

    Returns:
        ``{"<a>->< b>/R@k": ..., "<b>-><a>/R@k": ...}``, e.g. ``"vision->audio/R@1"``.
    """
    out: dict[str, float] = {}
    for (qn, q), (gn, g) in (((names[0], a), (names[1], b)), ((names[1], b), (names[0], a))):
        for k, value in recall_at_k(q, g, ks).items():
            out[f"{qn}->{gn}/R@{k}"] = value
    return out


def zero_shot_top1(embeddings: Tensor, class_embeddings: Tensor, labels: Tensor) -> float:
    """Top-1 accuracy of ``argmax_c cos(embedding, class_c)``.

    Args:
        embeddings: ``[N, D]`` modality embeddings.
        class_embeddings: ``[C, D]`` text embeddings of the class prompts.
        labels: ``[N]`` int class index of each row.
    """
    sims = F.normalize(embeddings.float(), dim=-1) @ F.normalize(class_embeddings.float(), dim=-1).T
    return float((sims.argmax(dim=1) == labels.to(sims.device)).float().mean())


@torch.no_grad()
def embed_texts(model: nn.Module, texts: Sequence[str], tokenize: Tokenize, device: torch.device | str) -> Tensor:
    """Unit text embeddings ``[len(texts), D]`` float32 on the CPU."""
    ids = tokenize(list(texts)).to(device)
    return F.normalize(model.encode("text", ids).float(), dim=-1).cpu()


@torch.no_grad()
def embed_dataset(
    model: nn.Module,
    dataset: Dataset[Any],
    modalities: Sequence[str],
    *,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
    tokenize: Tokenize | None = None,
) -> tuple[dict[str, Tensor], Tensor | None]:
    """Embed every row of a paired dataset, in dataset order, in eval mode.

    Args:
        model: an ``ImageBindModel`` (or anything with ``encode(modality, x)``).
        dataset: yields dicts in the training batch format.
        modalities: which inputs to embed.
        batch_size: rows per forward pass.
        device: where the model lives.
        tokenize: for text given as captions.

    Returns:
        ``({modality: [N, D] unit float32 CPU}, labels [N] int64 or None when absent)``.
    """
    was_training = model.training
    model.eval()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=default_collate,
                        generator=torch.Generator())  # fmt: skip
    chunks: dict[str, list[Tensor]] = {m: [] for m in modalities}
    labels: list[Tensor] = []
    for batch in loader:
        for m in modalities:
            x = modality_input(batch, m, tokenize).to(device)
            chunks[m].append(F.normalize(model.encode(m, x).float(), dim=-1).cpu())
        if "label" in batch:
            labels.append(torch.as_tensor(batch["label"]).long())
    model.train(was_training)
    embs = {m: torch.cat(v) for m, v in chunks.items()}
    return embs, (torch.cat(labels) if labels else None)


def evaluate_pairs(
    model: nn.Module,
    dataset: Dataset[Any],
    pairs: tuple[str, str],
    *,
    ks: Sequence[int] = (1, 5, 10),
    class_names: Sequence[str] = (),
    prompt_template: str = "{}",
    tokenize: Tokenize | None = None,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
) -> dict[str, float]:
    """Cross-modal recall@k between ``pairs`` and, with class names, zero-shot top-1 of each.

    Zero-shot needs a built text tower, a tokenizer and a ``label`` entry in the batches.

    Returns:
        ``{"eval/vision->audio/R@1": ..., "eval/zero_shot/audio/top1": ..., "eval/chance": ...}``.
    """
    embs, labels = embed_dataset(model, dataset, pairs, batch_size=batch_size, device=device, tokenize=tokenize)
    out = {f"eval/{k}": v for k, v in cross_modal_recall(embs[pairs[0]], embs[pairs[1]], pairs, ks).items()}
    if class_names and labels is not None and tokenize is not None:
        classes = embed_texts(model, [prompt_template.format(c) for c in class_names], tokenize, device)
        for m in pairs:
            if m != "text":
                out[f"eval/zero_shot/{m}/top1"] = zero_shot_top1(embs[m], classes, labels)
        out["eval/zero_shot/chance"] = 1.0 / len(class_names)
    return out
