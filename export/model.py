"""The ImageBind model family: preprocessors, heads and the root module.

The module tree reproduces the official state_dict keys and shapes exactly
(fact sheet §4), so released checkpoints load strictly. ``forward`` follows the
official semantics (clip folding, mean over clips); ``encode`` is the
export-friendly single-modality path: one clip per row, dynamic batch.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from export.config import MODALITIES, ModelConfig, TowerConfig
from export.layers import (
    BLOCK_LN_EPS,
    STEM_LN_EPS,
    LogitScale,
    Normalize,
    SelectToken,
    Trunk,
    init_weights,
)
from runtime.errors import InputError

# Fixed output scales of the non-learnable postprocessors (fact sheet §3.1).
FIXED_SCALES = {"audio": 20.0, "depth": 5.0, "thermal": 10.0, "imu": 5.0}
TEXT_INIT_SCALE = 1 / 0.07


class PadIm2Video(nn.Module):
    """Still image → clip: ``[B, C, H, W]`` → ``[B, C, frames, H, W]`` by repeating the frame."""

    def __init__(self, frames: int) -> None:
        super().__init__()
        self.frames = frames

    def forward(self, x: Tensor) -> Tensor:
        """Insert a time axis at dim 2 for 4-D input; repeat a single frame ``frames`` times."""
        if x.ndim == 4:
            x = x.unsqueeze(2)
        if x.shape[2] == 1:
            x = x.expand(-1, -1, self.frames, -1, -1)
        return x


class VideoStem(nn.Module):
    """Vision patch stem: ``proj = [PadIm2Video, Conv3d(k = stride, no bias)]``.

    The Conv3d is evaluated as an exact Conv2d over ``[B, C*T, H, W]`` (time
    inner) with the weight reshaped ``[E, C, T, kh, kw]`` → ``[E, C*T, kh, kw]``.
    """

    def __init__(self, tower: TowerConfig) -> None:
        super().__init__()
        channels, frames = tower.input_shape[:2]
        kernel = tower.kernel_size
        conv = nn.Conv3d(channels, tower.embed_dim, kernel, stride=kernel, bias=False)
        self.proj = nn.Sequential(PadIm2Video(frames), conv)

    def forward(self, x: Tensor) -> Tensor:
        """``[B, 3, H, W]`` or ``[B, 3, T, H, W]`` float → ``[B, P, E]`` patch tokens."""
        x = self.proj[0](x)
        batch, channels, frames, height, width = x.shape
        weight = self.proj[1].weight
        weight = weight.reshape(weight.shape[0], channels * frames, *weight.shape[3:])
        y = F.conv2d(x.reshape(batch, channels * frames, height, width), weight, stride=weight.shape[2:])
        return y.flatten(2).transpose(1, 2)


class ImageStem(nn.Module):
    """Conv2d patch stem (no bias) followed by LayerNorm(eps 1e-5): ``[B,C,H,W]`` → ``[B,P,E]``."""

    def __init__(self, tower: TowerConfig) -> None:
        super().__init__()
        in_ch = tower.input_shape[0]
        self.proj = nn.Conv2d(in_ch, tower.embed_dim, tower.kernel_size, tower.patch_stride, bias=False)
        self.norm_layer = nn.LayerNorm(tower.embed_dim, eps=STEM_LN_EPS)

    def forward(self, x: Tensor) -> Tensor:
        """Patchify, flatten row-major and normalise."""
        return self.norm_layer(self.proj(x).flatten(2).transpose(1, 2))


class PosEmbedding(nn.Module):
    """Holds the learnable ``pos_embed`` ``[1, L, E]`` (official ``pos_embedding_helper``)."""

    def __init__(self, num_tokens: int, dim: int) -> None:
        super().__init__()
        self.pos_embed = nn.Parameter(torch.empty(1, num_tokens, dim))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)


class PatchPreprocessor(nn.Module):
    """Vision/audio/depth/thermal: stem → prepend ``cls_token`` → add position embedding.

    Args:
        tower: the tower config.
        stem: the patch stem module.
        stem_name: attribute name of the stem (``rgbt_stem`` or ``depth_stem``).
    """

    def __init__(self, tower: TowerConfig, stem: nn.Module, stem_name: str) -> None:
        super().__init__()
        self.stem_name = stem_name
        self.cls_token = nn.Parameter(torch.zeros(1, 1, tower.embed_dim))
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        self.add_module(stem_name, stem)
        self.pos_embedding_helper = PosEmbedding(tower.num_tokens, tower.embed_dim)

    def forward(self, x: Tensor) -> Tensor:
        """Raw input ``[B, ...]`` float → tokens ``[B, L, E]``."""
        patches = getattr(self, self.stem_name)(x)
        cls = self.cls_token.expand(patches.shape[0], -1, -1)
        return torch.cat([cls, patches], dim=1) + self.pos_embedding_helper.pos_embed


class TextPreprocessor(nn.Module):
    """Token embedding + ``pos_embed``; owns the causal ``mask`` buffer (0 / -inf)."""

    def __init__(self, tower: TowerConfig) -> None:
        super().__init__()
        length, dim = tower.input_shape[0], tower.embed_dim
        self.pos_embed = nn.Parameter(torch.empty(1, length, dim))
        nn.init.normal_(self.pos_embed, std=0.01)
        self.register_buffer("mask", torch.full((length, length), -math.inf).triu(1))
        self.token_embedding = nn.Embedding(tower.vocab_size, dim)
        nn.init.normal_(self.token_embedding.weight, std=0.02)

    def forward(self, ids: Tensor) -> Tensor:
        """``[B, 77]`` int64 token ids → tokens ``[B, 77, E]``."""
        return self.token_embedding(ids) + self.pos_embed

    @staticmethod
    def eot_onehot(ids: Tensor, dtype: torch.dtype) -> Tensor:
        """One-hot ``[B, 77]`` of the first maximal id per row (the end-of-text token)."""
        positions = torch.arange(ids.shape[1], device=ids.device)
        return (positions.unsqueeze(0) == ids.argmax(dim=-1, keepdim=True)).to(dtype)


class ImuPreprocessor(nn.Module):
    """IMU: 8-sample windows, channel-major → Linear(6*8 → E) → LN → cls → ``pos_embed``."""

    def __init__(self, tower: TowerConfig) -> None:
        super().__init__()
        channels, _ = tower.input_shape
        self.window = tower.kernel_size[0]
        self.pos_embed = nn.Parameter(torch.empty(1, tower.num_tokens, tower.embed_dim))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, tower.embed_dim))
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        self.imu_stem = nn.Module()
        self.imu_stem.proj = nn.Linear(channels * self.window, tower.embed_dim, bias=False)
        self.imu_stem.norm_layer = nn.LayerNorm(tower.embed_dim, eps=STEM_LN_EPS)

    def forward(self, x: Tensor) -> Tensor:
        """``[B, 6, 2000]`` float → tokens ``[B, 251, E]``."""
        batch, channels, samples = x.shape
        windows = x.reshape(batch, channels, samples // self.window, self.window).transpose(1, 2)
        patches = self.imu_stem.norm_layer(self.imu_stem.proj(windows.flatten(2)))
        cls = self.cls_token.expand(batch, -1, -1)
        return torch.cat([cls, patches], dim=1) + self.pos_embed


class TextHead(nn.Module):
    """Select the end-of-text token, then ``proj = [LN, Linear(no bias)]``."""

    def __init__(self, dim: int, out_dim: int) -> None:
        super().__init__()
        self.proj = nn.Sequential(nn.LayerNorm(dim, eps=BLOCK_LN_EPS), nn.Linear(dim, out_dim, bias=False))

    def forward(self, x: Tensor, eot_onehot: Tensor) -> Tensor:
        """``x`` ``[B, 77, E]``, ``eot_onehot`` ``[B, 77]`` → ``[B, D]`` (exact one-hot select)."""
        pooled = torch.matmul(eot_onehot.unsqueeze(1), x).squeeze(1)
        return self.proj(pooled)


def _make_preprocessor(modality: str, tower: TowerConfig) -> nn.Module:
    if modality == "vision":
        return PatchPreprocessor(tower, VideoStem(tower), "rgbt_stem")
    if modality == "text":
        return TextPreprocessor(tower)
    if modality == "imu":
        return ImuPreprocessor(tower)
    stem_name = "depth_stem" if modality == "depth" else "rgbt_stem"
    return PatchPreprocessor(tower, ImageStem(tower), stem_name)


def _make_head(modality: str, tower: TowerConfig, out_dim: int) -> nn.Module:
    dim = tower.embed_dim
    if modality == "text":
        return TextHead(dim, out_dim)
    middle: list[nn.Module] = [SelectToken(0)]
    if modality == "imu":
        middle.append(nn.Dropout(0.5))
    return nn.Sequential(nn.LayerNorm(dim, eps=BLOCK_LN_EPS), *middle, nn.Linear(dim, out_dim, bias=False))


def _make_postprocessor(modality: str) -> nn.Module:
    if modality == "vision":
        return Normalize()
    if modality == "text":
        return nn.Sequential(Normalize(), LogitScale(TEXT_INIT_SCALE, learnable=True))
    return nn.Sequential(Normalize(), LogitScale(FIXED_SCALES[modality], learnable=False))


class ImageBindModel(nn.Module):
    """ImageBind encoders for the requested modalities.

    Owns exactly the four official ``ModuleDict`` attributes, keyed by modality.

    Args:
        cfg: the model configuration.
        modalities: which towers to build (official order kept); ``None`` = all six.
    """

    def __init__(self, cfg: ModelConfig, modalities: Iterable[str] | None = None) -> None:
        super().__init__()
        wanted = set(MODALITIES if modalities is None else modalities)
        unknown = sorted(wanted - set(MODALITIES))
        if unknown:
            raise InputError(f"unknown modality {unknown[0]!r}: expected one of {', '.join(MODALITIES)}")
        self.config = cfg
        self.modalities = tuple(m for m in MODALITIES if m in wanted)
        self.modality_preprocessors = nn.ModuleDict()
        self.modality_trunks = nn.ModuleDict()
        self.modality_heads = nn.ModuleDict()
        self.modality_postprocessors = nn.ModuleDict()
        for m in self.modalities:
            tower = cfg.tower(m)
            self.modality_preprocessors[m] = _make_preprocessor(m, tower)
            self.modality_trunks[m] = Trunk(
                tower.embed_dim,
                tower.num_blocks,
                tower.num_heads,
                bias_kv=tower.bias_kv,
                drop_path=tower.drop_path,
                pre_norm=m == "vision",
            )
            self.modality_heads[m] = _make_head(m, tower, cfg.out_embed_dim)
            self.modality_postprocessors[m] = _make_postprocessor(m)
        for m in self.modalities:
            self.modality_trunks[m].apply(init_weights)
            self.modality_heads[m].apply(init_weights)

    def forward(self, inputs: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Official semantics: embed every modality present in ``inputs``.

        Tensors with >= 5 dims are ``[B, S, ...]`` (S clips per sample): they are
        folded to ``[B*S, ...]``, embedded, and the postprocessed (normalised and
        scaled) clip vectors are averaged over S without re-normalising.

        Args:
            inputs: ``{modality: tensor}``; per-row layouts as in :meth:`encode`
                (vision clips must be 6-D ``[B, S, 3, 2, 224, 224]``).

        Returns:
            ``{modality: [B, D] float}`` for the same keys.
        """
        out: dict[str, Tensor] = {}
        for modality, x in inputs.items():
            self._require(modality)
            if modality == "vision" and x.ndim == 5:
                raise InputError(
                    f"vision input has shape {list(x.shape)}: forward() folds >=5-D inputs as "
                    "[B, clips, ...]; send clips as [B, S, 3, 2, 224, 224] or use encode()"
                )
            if x.ndim >= 5:
                batch, clips = x.shape[:2]
                emb = self.encode(modality, x.reshape(batch * clips, *x.shape[2:]))
                out[modality] = emb.reshape(batch, clips, -1).mean(dim=1)
            else:
                out[modality] = self.encode(modality, x)
        return out

    def encode(self, modality: str, x: Tensor) -> Tensor:
        """Embed one clip per row (no clip folding); the path exported to ONNX.

        Args:
            modality: one of the built modalities.
            x: text ``[B, 77]`` int64; vision ``[B, 3, 2, 224, 224]`` (a 2-frame
                clip) or ``[B, 3, 224, 224]`` (a still image, repeated to 2 frames);
                audio ``[B, 1, 128, 204]`` normalised log-mel; depth/thermal
                ``[B, 1, 224, 224]``; imu ``[B, 6, 2000]``; floats are float32/64.

        Returns:
            ``[B, D]``: the L2-normalised embedding times :meth:`output_scale`.
        """
        self._require(modality)
        self._check_input(modality, x)
        pre = self.modality_preprocessors[modality]
        trunk = self.modality_trunks[modality]
        head = self.modality_heads[modality]
        if modality == "text":
            tokens = pre(x)
            hidden = trunk(tokens, pre.mask.to(tokens.dtype))
            pooled = head(hidden, pre.eot_onehot(x, tokens.dtype))
        else:
            pooled = head(trunk(pre(x)))
        return self.modality_postprocessors[modality](pooled)

    def output_scale(self, modality: str) -> float:
        """The norm of a single-clip output row: vision 1, text ``min(exp(s), 100)``, audio 20, ..."""
        self._require(modality)
        post = self.modality_postprocessors[modality]
        if isinstance(post, Normalize):
            return 1.0
        return float(post[1].scale().detach())

    def input_shape(self, modality: str) -> tuple[int, ...]:
        """One row's input shape for :meth:`encode` (vision: the 2-frame clip layout)."""
        return self.config.tower(modality).input_shape

    def _require(self, modality: str) -> None:
        if modality not in self.modality_preprocessors:
            raise InputError(f"modality {modality!r} is not built in this model (built: {self.modalities})")

    def _check_input(self, modality: str, x: Tensor) -> None:
        expected = self.input_shape(modality)
        got = tuple(x.shape[1:])
        still = modality == "vision" and got == (expected[0], *expected[2:])
        if got != expected and not still:
            want = f"[B, {', '.join(map(str, expected))}]"
            raise InputError(f"{modality} input has shape {list(x.shape)}; expected {want}")
        if (modality == "text") != (not x.is_floating_point()):
            kind = "integer token ids" if modality == "text" else "floating point"
            raise InputError(f"{modality} input has dtype {x.dtype}; expected {kind}")


def build_model(cfg: ModelConfig, modalities: Iterable[str] | None = None) -> ImageBindModel:
    """Construct an (untrained) :class:`ImageBindModel` in eval mode.

    Build under ``with torch.device("meta"):`` to get shapes without memory.

    Args:
        cfg: the model configuration.
        modalities: subset of towers to build; ``None`` = all six.
    """
    return ImageBindModel(cfg, modalities).eval()
