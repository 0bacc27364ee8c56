"""Initialise the frozen image and text towers from OpenCLIP weights (ViT-H-14 for ImageBind huge).

ImageBind's vision and text towers are OpenCLIP's, re-keyed into the official layout:

=============================================  ==================================================
OpenCLIP key                                   official key (``modality_*.<m>.``)
=============================================  ==================================================
``visual.conv1.weight`` ``[E,3,p,p]``           ``preprocessors.vision.rgbt_stem.proj.1.weight``
                                               ``[E,3,T,p,p]``: each frame gets ``w / T``
``visual.class_embedding`` ``[E]``              ``preprocessors.vision.cls_token`` ``[1,1,E]``
``visual.positional_embedding`` ``[L,E]``       ``preprocessors.vision.pos_embedding_helper.pos_embed``
``visual.ln_pre``                              ``trunks.vision.pre_transformer_layer.0``
``(visual.)transformer.resblocks.i.ln_1/2``     ``trunks.<m>.blocks.i.norm_1/2``
``... .attn.in_proj_*``, ``.attn.out_proj``     ``trunks.<m>.blocks.i.attn.*`` (same names)
``... .mlp.c_fc`` / ``.mlp.c_proj``             ``trunks.<m>.blocks.i.mlp.fc1`` / ``.mlp.fc2``
``visual.ln_post``                             ``heads.vision.0``
``visual.proj`` ``[E,D]``                       ``heads.vision.2.weight`` ``[D,E]`` (transposed)
``token_embedding.weight``                     ``preprocessors.text.token_embedding.weight``
``positional_embedding`` ``[77,E]``             ``preprocessors.text.pos_embed`` ``[1,77,E]``
(``attn_mask``, not stored)                    ``preprocessors.text.mask`` (the same causal mask)
``ln_final``                                   ``heads.text.proj.0``
``text_projection`` ``[E,D]``                   ``heads.text.proj.1.weight`` ``[D,E]`` (transposed)
``logit_scale`` (log of the pair's scale)      ``postprocessors.text.1.log_logit_scale``
=============================================  ==================================================

Computation is the same up to the LayerNorm epsilon: OpenCLIP uses 1e-5 in every
LayerNorm, ImageBind 1e-6 in the pre-LN, the block norms and the head norms (a relative
change of about 1e-5 / var(x) inside each norm; embeddings agree to cosine ~1 - 1e-7).
Everything else matches: class token first, position embedding added before ``ln_pre``,
pre-norm blocks with exact-erf GELU and no layer scale, ``ln_post`` over all tokens then the
class token, the causal text mask, end-of-text pooling at the largest token id, ``ln_final``
before the projection. The patch conv is inflated by splitting the 2-D kernel evenly over
the T frames, so a still image (repeated to T frames by the preprocessor) gives exactly the
2-D conv's output and a static clip does too. OpenCLIP's ``logit_scale`` belongs to the
image-text pair; ImageBind keeps it in the text postprocessor (clipped at 100).

Only local files are read: :func:`load_openclip` never downloads. ``open_clip`` itself is
optional: it is consulted (when importable) for the named model's architecture config;
without it the config JSON is read from the installed ``open_clip_torch`` files, and without
that only the tensor shapes are checked.
"""

from __future__ import annotations

import importlib.metadata
import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from export.checkpoint import CheckpointError
from export.config import ModelConfig, TowerConfig
from export.model import build_model
from runtime.errors import ConfigError

TOWERS = ("vision", "text")
# Files open_clip / Hugging Face store a model's weights in, most preferred first.
CHECKPOINT_NAMES = (
    "open_clip_model.safetensors", "open_clip_pytorch_model.safetensors", "open_clip_pytorch_model.bin",
    "open_clip_pytorch_model.pth", "model.safetensors", "pytorch_model.bin", "model.pth",
)  # fmt: skip
_BLOCK_KEYS = {  # our block key suffix -> OpenCLIP resblock key suffix
    "attn.in_proj_weight": "attn.in_proj_weight", "attn.in_proj_bias": "attn.in_proj_bias",
    "attn.out_proj.weight": "attn.out_proj.weight", "attn.out_proj.bias": "attn.out_proj.bias",
    "norm_1.weight": "ln_1.weight", "norm_1.bias": "ln_1.bias", "norm_2.weight": "ln_2.weight",
    "norm_2.bias": "ln_2.bias", "mlp.fc1.weight": "mlp.c_fc.weight", "mlp.fc1.bias": "mlp.c_fc.bias",
    "mlp.fc2.weight": "mlp.c_proj.weight", "mlp.fc2.bias": "mlp.c_proj.bias",
}  # fmt: skip
_TEXT_PREFIXES = ("token_embedding.", "positional_embedding", "transformer.", "ln_final.", "text_projection")
_IGNORED = ("logit_scale", "logit_bias", "attn_mask", "input_resolution", "context_length", "vocab_size")
# Non-default OpenCLIP options the ImageBind towers cannot express.
_UNSUPPORTED = {
    "vision_cfg": {"ls_init_value": None, "no_ln_pre": False, "final_ln_after_pool": False, "pool_type": "tok",
                   "attentional_pool": False, "timm_model_name": None, "pos_embed_type": "learnable",
                   "norm_kwargs": None, "act_kwargs": None, "block_type": None, "qk_norm": False},
    "text_cfg": {"ls_init_value": None, "embed_cls": False, "no_causal_mask": False, "final_ln_after_pool": False,
                 "pool_type": "argmax", "proj_bias": False, "proj_type": "linear", "hf_model_name": None,
                 "norm_kwargs": None, "act_kwargs": None, "block_type": None, "qk_norm": False},
}  # fmt: skip

Source = tuple[str, Callable[[Tensor], Tensor]]


def _shape(t: Tensor | Sequence[int]) -> str:
    return "[" + ",".join(str(int(n)) for n in (t.shape if isinstance(t, Tensor) else t)) + "]"


def inflate_patch_conv(weight: Tensor, frames: int) -> Tensor:
    """``[E, C, kh, kw]`` 2-D patch kernel -> ``[E, C, frames, kh, kw]``, ``weight / frames`` per frame.

    A clip whose frames are all the same image then gives exactly the 2-D conv's output
    (the ``frames`` equal terms sum back to ``weight``; exact in floating point for T = 2).
    """
    return weight.unsqueeze(2).expand(-1, -1, frames, -1, -1) / frames


def _normalise_keys(clip_sd: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Strip a DDP ``module.`` prefix and the ``text.`` prefix of OpenCLIP's CustomTextCLIP layout."""
    sd = {k.removeprefix("module."): v for k, v in clip_sd.items()}
    if "text.token_embedding.weight" in sd:
        sd = {k.removeprefix("text.") if k.startswith("text.") else k: v for k, v in sd.items()}
    return sd


def _source_of(key: str, modality: str, frames: int, sd: Mapping[str, Tensor]) -> Source | None:
    """The OpenCLIP key and the transform that produce our ``key`` (None: generated, not loaded)."""
    same: Callable[[Tensor], Tensor] = lambda t: t  # noqa: E731
    _, _, rest = key.partition(f".{modality}.")
    part = key.split(".", maxsplit=1)[0]
    visual = "visual." if modality == "vision" else ""
    if part == "modality_trunks":
        if rest.startswith("pre_transformer_layer.0."):
            return "visual.ln_pre." + rest.rsplit(".", 1)[1], same
        _, index, suffix = rest.split(".", 2)
        return f"{visual}transformer.resblocks.{index}.{_BLOCK_KEYS.get(suffix, suffix)}", same
    table: dict[str, Source] = {
        "modality_preprocessors.vision.cls_token": ("visual.class_embedding", lambda t: t.reshape(1, 1, -1)),
        "modality_preprocessors.vision.rgbt_stem.proj.1.weight": (
            "visual.conv1.weight", lambda t: inflate_patch_conv(t, frames)),
        "modality_preprocessors.vision.pos_embedding_helper.pos_embed": (
            "visual.positional_embedding", lambda t: t.unsqueeze(0)),
        "modality_heads.vision.0.weight": ("visual.ln_post.weight", same),
        "modality_heads.vision.0.bias": ("visual.ln_post.bias", same),
        "modality_heads.vision.2.weight": ("visual.proj", lambda t: t.t()),
        "modality_preprocessors.text.pos_embed": ("positional_embedding", lambda t: t.unsqueeze(0)),
        "modality_preprocessors.text.token_embedding.weight": ("token_embedding.weight", same),
        "modality_heads.text.proj.0.weight": ("ln_final.weight", same),
        "modality_heads.text.proj.0.bias": ("ln_final.bias", same),
        "modality_postprocessors.text.1.log_logit_scale": ("logit_scale", lambda t: t.reshape(())),
    }  # fmt: skip
    if key == "modality_heads.text.proj.1.weight":  # a Parameter [E, D], or an nn.Linear weight [D, E]
        if "text_projection.weight" in sd:
            return "text_projection.weight", same
        return "text_projection", lambda t: t.t()
    return table.get(key)


def openclip_state_dict(
    clip_sd: Mapping[str, Tensor],
    cfg: ModelConfig,
    modalities: Iterable[str] = TOWERS,
    clip_config: Mapping[str, Any] | None = None,
) -> dict[str, Tensor]:
    """Re-key an OpenCLIP CLIP state dict into the official layout of our vision and text towers.

    Args:
        clip_sd: an ``open_clip`` ``CLIP`` state dict (``visual.*``, ``token_embedding.weight``,
            ``transformer.resblocks.*``, ``ln_final.*``, ``text_projection``, ``logit_scale``).
        cfg: the model config whose vision/text towers receive the weights.
        modalities: which of ``vision`` and ``text`` to convert.
        clip_config: the OpenCLIP model config (``{"embed_dim", "vision_cfg", "text_cfg"}``);
            when given, head counts and options that shapes cannot show are checked too.

    Returns:
        ``{official key: tensor}`` for every state-dict entry of the requested towers (the
        text causal ``mask`` is generated), in the model's key order; dtypes are kept.

    Raises:
        CheckpointError: a missing key, a shape mismatch (one line naming both keys and both
            shapes) or an OpenCLIP key the towers cannot use (e.g. layer scale).
        ConfigError: ``clip_config`` describes another architecture than ``cfg``.
    """
    wanted = tuple(m for m in TOWERS if m in set(modalities))
    bad = sorted(set(modalities) - set(TOWERS))
    if bad:
        raise ConfigError(f"OpenCLIP holds only the vision and text towers, not {bad[0]!r}")
    if clip_config is not None:
        check_openclip_config(clip_config, cfg, wanted)
    sd = _normalise_keys(clip_sd)
    with torch.device("meta"):
        expected = build_model(cfg, wanted).state_dict()
    frames = cfg.vision.kernel_size[0] if cfg.vision.kernel_size else 1
    out: dict[str, Tensor] = {}
    used: set[str] = set()
    for key, target in expected.items():
        modality = key.split(".")[1]
        if key == "modality_preprocessors.text.mask":
            length = cfg.text.input_shape[0]
            out[key] = torch.full((length, length), -math.inf).triu(1)
            continue
        source = _source_of(key, modality, frames, sd)
        if source is None:
            raise CheckpointError(f"no OpenCLIP source for {key} (shape {_shape(target)})")
        src, convert = source
        if src not in sd:
            raise CheckpointError(f"OpenCLIP state dict is missing {src} (needed for {key}, shape {_shape(target)})")
        value = convert(sd[src]).contiguous()
        if tuple(value.shape) != tuple(target.shape):
            raise CheckpointError(
                f"OpenCLIP {src} {_shape(sd[src])} -> {key}: expected {_shape(target)}, found {_shape(value)}; "
                "is the model config the checkpoint's architecture?"
            )
        out[key] = value
        used.add(src)
    _check_unused(sd, used, wanted)
    return out


def _check_unused(sd: Mapping[str, Tensor], used: set[str], wanted: Sequence[str]) -> None:
    """Refuse tower keys that were not consumed: extra blocks, layer scale, attentional pooling..."""
    for key, value in sd.items():
        if key in used or key in _IGNORED:
            continue
        vision_key = key.startswith("visual.")
        text_key = key.startswith(_TEXT_PREFIXES)
        if (vision_key and "vision" in wanted) or (text_key and "text" in wanted):
            raise CheckpointError(
                f"OpenCLIP key {key} {_shape(value)} has no place in the ImageBind towers "
                "(more blocks than the config, layer scale, attentional pooling or a projection bias?)"
            )


def tower_configs(clip_config: Mapping[str, Any], frames: int = 2) -> dict[str, Any]:
    """The ImageBind ``vision``/``text`` :class:`TowerConfig` and ``out_embed_dim`` of an OpenCLIP config.

    Args:
        clip_config: ``{"embed_dim": D, "vision_cfg": {...}, "text_cfg": {...}}`` (open_clip JSON).
        frames: video frames T of the inflated patch conv (ImageBind: 2).

    Returns:
        ``{"out_embed_dim": D, "vision": TowerConfig, "text": TowerConfig}``.
    """
    try:
        vision, text = clip_config["vision_cfg"], clip_config["text_cfg"]
        patch, size = vision.get("patch_size", 16), vision.get("image_size", 224)
        hs, ws = (size, size) if isinstance(size, int) else size
        width = vision.get("width", 768)
        return {
            "out_embed_dim": int(clip_config["embed_dim"]),
            "vision": TowerConfig(
                embed_dim=width, num_blocks=vision.get("layers", 12), num_heads=width // vision.get("head_width", 64),
                input_shape=(3, frames, hs, ws), kernel_size=(frames, patch, patch),
            ),
            "text": TowerConfig(
                embed_dim=text.get("width", 512), num_blocks=text.get("layers", 12), num_heads=text.get("heads", 8),
                input_shape=(text.get("context_length", 77),), vocab_size=text.get("vocab_size", 49408),
            ),
        }  # fmt: skip
    except (KeyError, TypeError, AttributeError) as exc:
        raise ConfigError(f"OpenCLIP model config: missing or malformed entry ({exc!r})") from None


def check_openclip_config(clip_config: Mapping[str, Any], cfg: ModelConfig, modalities: Sequence[str] = TOWERS) -> None:
    """Raise :class:`ConfigError` (one line) when the OpenCLIP architecture cannot fill ``cfg``'s towers."""
    if clip_config.get("quick_gelu"):
        raise ConfigError("OpenCLIP model uses QuickGELU; the ImageBind towers use exact GELU")
    for section, defaults in _UNSUPPORTED.items():
        for option, default in defaults.items():
            value = dict(clip_config.get(section) or {}).get(option, default)
            if value != default:
                raise ConfigError(f"OpenCLIP {section}.{option}={value!r} is not supported by the ImageBind towers")
    derived = tower_configs(clip_config, frames=cfg.vision.input_shape[1])
    if derived["out_embed_dim"] != cfg.out_embed_dim:
        raise ConfigError(f"OpenCLIP embed_dim {derived['out_embed_dim']} != out_embed_dim {cfg.out_embed_dim}")
    for modality in modalities:
        ours: TowerConfig = cfg.tower(modality)
        theirs = derived[modality]
        for name in ("embed_dim", "num_blocks", "num_heads", "input_shape", "kernel_size", "vocab_size"):
            if getattr(ours, name) != getattr(theirs, name):
                raise ConfigError(f"{cfg.name}.{modality}.{name} is {getattr(ours, name)!r}, the OpenCLIP model "
                                  f"has {getattr(theirs, name)!r}")  # fmt: skip
        if ours.bias_kv:
            raise ConfigError(f"{cfg.name}.{modality}.bias_kv: OpenCLIP towers have no bias_kv")


def openclip_config(model_name: str) -> dict[str, Any] | None:
    """The architecture config of OpenCLIP model ``model_name`` (or of a JSON file path), if available.

    Asks ``open_clip`` when it imports; otherwise reads ``model_configs/<name>.json`` from the
    installed ``open_clip_torch`` distribution; None when neither knows the name.
    """
    path = Path(model_name)
    if path.suffix == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{path}: not a readable OpenCLIP model config ({exc})") from None
        return dict(data.get("model_cfg", data))
    try:
        import open_clip

        found = open_clip.get_model_config(model_name)
        if found is not None:
            return dict(found)
    except Exception:  # open_clip is optional and may fail to import (e.g. a broken torchvision)
        pass
    try:
        dist = importlib.metadata.distribution("open_clip_torch")
    except importlib.metadata.PackageNotFoundError:
        return None
    for file in dist.files or ():
        if file.name == f"{model_name}.json" and "model_configs" in file.parts:
            return dict(json.loads(Path(str(dist.locate_file(file))).read_text(encoding="utf-8")))
    return None


def _resolve_checkpoint(pretrained: str | Path, model_name: str) -> Path:
    path = Path(pretrained).expanduser()
    if path.is_dir():
        found = next((path / n for n in CHECKPOINT_NAMES if (path / n).is_file()), None)
        if found is None:
            raise CheckpointError(f"{path}: no OpenCLIP checkpoint inside (looked for {', '.join(CHECKPOINT_NAMES)})")
        return found
    if not path.is_file():
        raise CheckpointError(
            f"{pretrained}: no such OpenCLIP checkpoint file for {model_name} (only local files are read, "
            "nothing is downloaded: pass the path of e.g. open_clip_pytorch_model.bin)"
        )
    return path


def load_openclip(model_name: str, pretrained: str | Path) -> dict[str, Tensor]:
    """Read a local OpenCLIP checkpoint (``.bin``/``.pt``/``.pth`` or ``.safetensors``); never downloads.

    Args:
        model_name: OpenCLIP architecture name (e.g. ``ViT-H-14``), for messages.
        pretrained: the checkpoint file, or a folder holding one of :data:`CHECKPOINT_NAMES`
            (e.g. a Hugging Face cache snapshot folder).

    Returns:
        The flat OpenCLIP state dict on the CPU (``module.`` prefixes removed).

    Raises:
        CheckpointError: missing file, unreadable or unsafe content (one line).
    """
    path = _resolve_checkpoint(pretrained, model_name)
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise CheckpointError(f"{path}: reading .safetensors needs the 'safetensors' package") from None
        obj: Any = load_file(str(path), device="cpu")
    else:
        try:
            obj = torch.load(path, weights_only=True, map_location="cpu")
        except Exception as exc:  # torch raises many types for bad or unsafe files
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise CheckpointError(f"{path}: not a readable OpenCLIP checkpoint ({first})") from None
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]  # an open_clip training checkpoint
    if not isinstance(obj, Mapping) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: expected a dict of tensors (an OpenCLIP state dict)")
    return _normalise_keys(obj)


def init_from_openclip(model: nn.Module, model_name: str, pretrained: str | Path) -> list[str]:
    """Load OpenCLIP weights into the vision/text towers ``model`` has built; returns those modalities.

    Raises:
        CheckpointError / ConfigError: as :func:`load_openclip` and :func:`openclip_state_dict`.
    """
    built = [m for m in TOWERS if m in getattr(model, "modalities", ())]
    if not built:
        raise ConfigError("TrainConfig.init_openclip: the model builds neither a vision nor a text tower")
    clip_sd = load_openclip(model_name, pretrained)
    state = openclip_state_dict(clip_sd, model.config, built, openclip_config(model_name))  # type: ignore[arg-type]
    model.load_state_dict(state, strict=False)
    return built
