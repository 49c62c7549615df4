"""Segment Anything (ViT-B/L/H, or a tiny test variant) built from a local checkpoint.

``build_sam`` returns a ``SamModel`` (segment-anything's own ``Sam`` module on
its device); ``SamSegmenter`` runs it the way ``SamPredictor`` does, but for
a video pipeline: one image embedding per keyframe (``embed``), then all box
prompts of that frame in one batched decoder call (``segment``) that returns
compact mask crops instead of full-frame masks.

Precision: bf16 autocast on CUDA, fp32 on CPU. Preprocessing is SamPredictor's
(ResizeLongestSide, pixel mean/std, zero pad to a square); crops are cut from
the low-res logits with the same two bilinear resizes as
``Sam.postprocess_masks``, evaluated only inside each box.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
from torch.nn import functional as F

from stream.errors import DeviceError, ModelError
from stream.masks.crop import MaskCrop
from stream.masks.geometry import clip_boxes, expand_rect
from stream.models.checkpoint import load_state_dict

if TYPE_CHECKING:
    from segment_anything.modeling import Sam

log = logging.getLogger(__name__)

ArchName = Literal["vit_b", "vit_l", "vit_h", "tiny"]


@dataclass(frozen=True)
class SamArch:
    """Image-encoder hyper-parameters of one SAM variant (the decoder is the same for all)."""

    name: str
    embed_dim: int
    depth: int
    num_heads: int
    global_attn_indexes: tuple[int, ...]
    img_size: int = 1024
    patch_size: int = 16
    window_size: int = 14

    def describe(self) -> str:
        return f"{self.name} (embed_dim {self.embed_dim}, depth {self.depth}, img_size {self.img_size})"


ARCHS: dict[str, SamArch] = {
    "vit_b": SamArch("vit_b", 768, 12, 12, (2, 5, 8, 11)),
    "vit_l": SamArch("vit_l", 1024, 24, 16, (5, 11, 17, 23)),
    "vit_h": SamArch("vit_h", 1280, 32, 16, (7, 15, 23, 31)),
    # Not a released model: the real classes at a size that runs in tests on a CPU.
    "tiny": SamArch("tiny", 64, 2, 2, (1,), img_size=256, window_size=8),
}


@dataclass
class SamModel:
    """A built SAM: ``sam`` is segment_anything.modeling.Sam in eval mode on ``device``.

    autocast_dtype: torch.bfloat16 on CUDA, None (fp32) on CPU.
    random_weights: True when no checkpoint was loaded (outputs are not real masks).
    """

    sam: Sam
    arch: SamArch
    device: torch.device
    autocast_dtype: torch.dtype | None
    random_weights: bool
    checkpoint: Path | None = None


def _resolve_device(device: str | torch.device) -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise ModelError(f"SAM device {device!r} is not a torch device; use auto, cpu or cuda[:N]") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(
            f"segment.device: {device!r} asks for CUDA but no CUDA device is available; use auto or cpu"
        )
    return dev


def _make_sam(arch: SamArch) -> Sam:
    """segment-anything's own classes, wired as its build_sam does, at ``arch``'s size."""
    from segment_anything.modeling import (
        ImageEncoderViT,
        MaskDecoder,
        PromptEncoder,
        Sam,
        TwoWayTransformer,
    )

    prompt_dim = 256
    grid = arch.img_size // arch.patch_size
    sam = Sam(
        image_encoder=ImageEncoderViT(
            depth=arch.depth,
            embed_dim=arch.embed_dim,
            img_size=arch.img_size,
            mlp_ratio=4,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            num_heads=arch.num_heads,
            patch_size=arch.patch_size,
            qkv_bias=True,
            use_rel_pos=True,
            global_attn_indexes=arch.global_attn_indexes,
            window_size=arch.window_size,
            out_chans=prompt_dim,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=prompt_dim,
            image_embedding_size=(grid, grid),
            input_image_size=(arch.img_size, arch.img_size),
            mask_in_chans=16,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=2, embedding_dim=prompt_dim, mlp_dim=2048, num_heads=8),
            transformer_dim=prompt_dim,
            iou_head_depth=3,
            iou_head_hidden_dim=256,
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )
    return sam.eval()


def checkpoint_arch(state_dict: dict[str, torch.Tensor]) -> SamArch | None:
    """The SAM variant a state dict holds, read from its tensor shapes (None if not a SAM).

    A variant outside ARCHS comes back with name "unknown"."""
    patch = state_dict.get("image_encoder.patch_embed.proj.weight")
    pos = state_dict.get("image_encoder.pos_embed")
    if not isinstance(patch, torch.Tensor) or patch.ndim != 4:
        return None
    embed_dim, patch_size = int(patch.shape[0]), int(patch.shape[-1])
    prefix = "image_encoder.blocks."
    blocks = {int(k[len(prefix) :].split(".", 1)[0]) for k in state_dict if k.startswith(prefix)}
    depth = max(blocks) + 1 if blocks else 0
    img_size = int(pos.shape[1]) * patch_size if isinstance(pos, torch.Tensor) and pos.ndim == 4 else 0
    for arch in ARCHS.values():
        if (arch.embed_dim, arch.depth, arch.img_size) == (embed_dim, depth, img_size):
            return arch
    return SamArch("unknown", embed_dim, depth, 0, (), img_size=img_size, patch_size=patch_size)


def build_sam(
    arch: ArchName | str,
    checkpoint: Path | str | None,
    *,
    random_seed: int | None = None,
    device: str | torch.device = "auto",
) -> SamModel:
    """Build SAM ``arch`` and load ``checkpoint`` (a SAM state dict, weights_only).

    Without a checkpoint the weights are random and ``random_seed`` is required
    (random weights must be asked for explicitly; they never make real masks).
    Raises ModelError for an unknown arch, a device that is not there, a file
    that is not a SAM checkpoint, or a checkpoint of another SAM size (the
    message names both); WeightsError for a missing file; UnsafeCheckpointError
    for a pickle that would run code (see stream.models.checkpoint).
    """
    if arch not in ARCHS:
        raise ModelError(f"unknown SAM arch {arch!r}; choose one of {', '.join(ARCHS)}")
    spec = ARCHS[arch]
    dev = _resolve_device(device)
    if checkpoint is None and random_seed is None:
        raise ModelError(
            f"no checkpoint given for SAM {arch}: pass a checkpoint path (stream weights pull) "
            "or ask for random weights with a seed"
        )
    path = Path(checkpoint) if checkpoint is not None else None
    state = None
    if path is not None:  # check the file before spending time on building the model
        state = load_state_dict(path)
        found = checkpoint_arch(state)
        if found is None:
            raise ModelError(
                f"{path} is not a SAM checkpoint (no image_encoder.patch_embed.proj.weight); "
                f"use a segment-anything {arch} checkpoint"
            )
        if (found.embed_dim, found.depth, found.img_size) != (spec.embed_dim, spec.depth, spec.img_size):
            hint = f" or set the arch to {found.name}" if found.name in ARCHS else ""
            raise ModelError(
                f"SAM checkpoint {path} holds {found.describe()} but the config asks for "
                f"{spec.describe()}; use a {arch} checkpoint{hint}"
            )
    with torch.random.fork_rng(devices=[]):
        if random_seed is not None:
            torch.manual_seed(random_seed)
        sam = _make_sam(spec)
    if state is not None:
        try:
            sam.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise ModelError(f"SAM checkpoint {path} does not fit {spec.describe()}: {exc}") from exc
    sam.to(dev)
    model = SamModel(
        sam=sam,
        arch=spec,
        device=dev,
        autocast_dtype=torch.bfloat16 if dev.type == "cuda" else None,
        random_weights=path is None,
        checkpoint=path,
    )
    log.info(
        "SAM %s on %s (%s)%s",
        spec.name,
        dev,
        "bf16 autocast" if model.autocast_dtype else "fp32",
        ", RANDOM WEIGHTS" if model.random_weights else f", weights {path}",
    )
    return model


@dataclass(frozen=True)
class ImageEmbedding:
    """One keyframe's image embedding.

    features: (1, 256, E, E) tensor on the model's device (E = img_size / 16).
    original_size: (H, W) of the source image; input_size: (h, w) after ResizeLongestSide.
    """

    features: torch.Tensor
    original_size: tuple[int, int]
    input_size: tuple[int, int]


@dataclass(frozen=True)
class MaskBatch:
    """Masks for N box prompts of one frame, in prompt order.

    crops: N MaskCrop in source pixels (empty for a skipped box); each is the
        thresholded mask inside its box grown by the segmenter's margin, trimmed
        to its True pixels.
    scores: (N,) float32 predicted IoU (0 for a skipped box).
    valid: (N,) bool, False where the box was degenerate or outside the frame.
    boxes: (N, 4) float32 XYXY prompts after clipping to the frame.
    low_res_logits: (M, 4E, 4E) float32 on the model's device for the M valid
        boxes (E = img_size / 16, so 256 × 256 for the released models).
    """

    crops: list[MaskCrop]
    scores: np.ndarray
    valid: np.ndarray
    boxes: np.ndarray
    low_res_logits: torch.Tensor | None = None


@dataclass
class SegmenterStats:
    """Counters since construction (per segmenter, so per source when used per source)."""

    embeddings: int = 0
    decoder_calls: int = 0
    masks: int = 0
    boxes_clipped: int = 0
    boxes_skipped: int = 0


def _interp_matrix(low: int, full: int, valid: int, out: int) -> torch.Tensor:
    """(out, low) float32 matrix M with M @ v == the two 1-D bilinear resizes of
    Sam.postprocess_masks applied to v (low → full, keep [:valid], → out).
    Bilinear resizing is separable, so mask = Ay @ logits @ Ax.T exactly."""
    eye = torch.eye(low, dtype=torch.float32).unsqueeze(0)
    m = F.interpolate(eye, size=full, mode="linear", align_corners=False)[..., :valid]
    m = F.interpolate(m, size=out, mode="linear", align_corners=False)
    return m[0].T.contiguous()


@dataclass(frozen=True)
class _Upsampler:
    """Sam.postprocess_masks for one (input size, original size) as two matrices.

    ay: (H, L), ax: (W, L) on the model's device; *_first/*_last: per output row
    or column, the range of low-res cells with a non-zero weight (numpy int)."""

    ay: torch.Tensor
    ax: torch.Tensor
    y_first: np.ndarray
    y_last: np.ndarray
    x_first: np.ndarray
    x_last: np.ndarray

    @staticmethod
    def build(
        low: int, img: int, input_size: tuple[int, int], original_size: tuple[int, int], device: torch.device
    ) -> _Upsampler:
        ay = _interp_matrix(low, img, input_size[0], original_size[0])
        ax = _interp_matrix(low, img, input_size[1], original_size[1])
        ny, nx = (ay != 0).numpy(), (ax != 0).numpy()
        return _Upsampler(
            ay=ay.to(device),
            ax=ax.to(device),
            y_first=ny.argmax(axis=1),
            y_last=low - ny[:, ::-1].argmax(axis=1),
            x_first=nx.argmax(axis=1),
            x_last=low - nx[:, ::-1].argmax(axis=1),
        )


class SamSegmenter:
    """Embed once per keyframe, decode all box prompts of that frame in one call.

    crop_margin: a mask is evaluated inside its box grown by this fraction of
        the box side (at least 4 px) on each side; SAM's mask for a box prompt
        rarely leaves the box by more.
    resize: "pil" is SamPredictor's exact resize (CPU, PIL); "torch" resizes on
        the device with antialiased bilinear (faster on CUDA, differs from "pil"
        by rounding only); "auto" picks "torch" on CUDA and "pil" on CPU.
    max_batch: boxes per decoder pass; the embedding is repeated per box inside
        SAM's decoder, so this bounds memory for frames with very many tracks.
    decoder: runs the prompt encoder + mask decoder for single-mask box prompts instead
        of PyTorch (``stream.models.sam_onnx.OrtSamDecoder``): (features, boxes in SAM
        input pixels) → (logits (N, 1, 4E, 4E), IoU (N, 1)); None: PyTorch.
    """

    def __init__(
        self,
        model: SamModel,
        *,
        crop_margin: float = 0.1,
        resize: Literal["auto", "pil", "torch"] = "auto",
        max_batch: int = 128,
        decoder: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None,
    ) -> None:
        from segment_anything.utils.transforms import ResizeLongestSide

        self.model = model
        self.crop_margin = crop_margin
        self.resize = ("torch" if model.device.type == "cuda" else "pil") if resize == "auto" else resize
        self.max_batch = max(1, max_batch)
        self.transform = ResizeLongestSide(model.arch.img_size)
        self.decoder = decoder
        self.stats = SegmenterStats()
        self._upsamplers: dict[tuple[int, tuple[int, int], tuple[int, int]], _Upsampler] = {}

    def _autocast(self) -> torch.autocast:
        dtype = self.model.autocast_dtype
        return torch.autocast(self.model.device.type, dtype=dtype or torch.float32, enabled=dtype is not None)

    @torch.inference_mode()
    def embed(self, image: np.ndarray) -> ImageEmbedding:
        """image: (H, W, 3) uint8 BGR. Runs the image encoder once."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"image must be (H, W, 3) uint8 BGR, got {image.shape} {image.dtype}")
        height, width = image.shape[:2]
        sam = self.model.sam
        dev = self.model.device
        # Resizing works channel by channel, so resize the BGR frame and swap channels
        # on the small result: the same pixels as SamPredictor's, without a full-frame copy.
        if self.resize == "pil":
            small = np.ascontiguousarray(self.transform.apply_image(image)[..., ::-1])
            x = torch.from_numpy(small).to(dev).permute(2, 0, 1).unsqueeze(0).float()
        else:
            h, w = self.transform.get_preprocess_shape(height, width, self.model.arch.img_size)
            x = (
                torch.from_numpy(image)
                .to(dev, non_blocking=True)
                .permute(2, 0, 1)
                .flip(0)
                .unsqueeze(0)
                .float()
            )
            x = F.interpolate(x, (h, w), mode="bilinear", align_corners=False, antialias=True)
            x = x.round_().clamp_(0, 255)
        input_size = (int(x.shape[-2]), int(x.shape[-1]))
        with self._autocast():
            features = sam.image_encoder(sam.preprocess(x))
        self.stats.embeddings += 1
        return ImageEmbedding(features=features, original_size=(height, width), input_size=input_size)

    @torch.inference_mode()
    def segment(self, embedding: ImageEmbedding, boxes: np.ndarray, multimask: bool = False) -> MaskBatch:
        """Masks for boxes (N, 4) float32 XYXY source pixels, all in one decoder call.

        Boxes partly outside the frame are clipped; degenerate ones (no area
        inside the frame, NaN) are skipped: empty crop, score 0, valid False.
        multimask: decode SAM's 3 candidates per box and keep the one with the
        best predicted IoU (off by default: a box is not an ambiguous prompt).
        """
        height, width = embedding.original_size
        clipped, valid, changed = clip_boxes(boxes, height, width)
        n = clipped.shape[0]
        self.stats.boxes_clipped += int(changed.sum())
        self.stats.boxes_skipped += int((~valid).sum())
        crops = [MaskCrop.empty() for _ in range(n)]
        scores = np.zeros(n, dtype=np.float32)
        idx = np.flatnonzero(valid)
        if idx.size == 0:
            return MaskBatch(crops, scores, valid, clipped, None)
        logits_parts, score_parts = [], []
        for start in range(0, idx.size, self.max_batch):
            part = idx[start : start + self.max_batch]
            logits, iou = self._decode(embedding, clipped[part], multimask)
            logits_parts.append(logits)
            score_parts.append(iou)
        self.stats.decoder_calls += 1
        low = torch.cat(logits_parts)
        scores[idx] = torch.cat(score_parts).cpu().numpy()
        for i, crop in zip(idx, self._crops(low, clipped[idx], embedding), strict=True):
            crops[i] = crop
        self.stats.masks += int(idx.size)
        return MaskBatch(crops, scores, valid, clipped, low)

    def _decode(
        self, embedding: ImageEmbedding, boxes: np.ndarray, multimask: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        sam = self.model.sam
        prompts = self.transform.apply_boxes(boxes, embedding.original_size)
        box_t = torch.as_tensor(prompts, dtype=torch.float32, device=self.model.device)
        if self.decoder is not None and not multimask:
            low, iou = self.decoder(embedding.features, box_t)
            return low[:, 0], iou[:, 0]
        with self._autocast():
            sparse, dense = sam.prompt_encoder(points=None, boxes=box_t, masks=None)
            low, iou = sam.mask_decoder(
                image_embeddings=embedding.features,
                image_pe=sam.prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=multimask,
            )
        low, iou = low.float(), iou.float()
        best = iou.argmax(dim=1) if multimask else torch.zeros(len(iou), dtype=torch.long, device=iou.device)
        rows = torch.arange(len(iou), device=iou.device)
        return low[rows, best], iou[rows, best]

    def _crops(self, low: torch.Tensor, boxes: np.ndarray, embedding: ImageEmbedding) -> list[MaskCrop]:
        """Threshold Sam.postprocess_masks(low) > 0, evaluated only inside each grown box."""
        height, width = embedding.original_size
        key = (int(low.shape[-1]), embedding.input_size, embedding.original_size)
        up = self._upsamplers.get(key)
        if up is None:
            if len(self._upsamplers) >= 8:  # frame sizes rarely change; stay bounded if they do
                self._upsamplers.clear()
            up = _Upsampler.build(key[0], self.model.arch.img_size, key[1], key[2], low.device)
            self._upsamplers[key] = up
        rects, flat = [], []
        for k, box in enumerate(boxes):
            x0, y0, x1, y1 = expand_rect(box, self.crop_margin, 4.0, height, width)
            r0, r1 = int(up.y_first[y0:y1].min()), int(up.y_last[y0:y1].max())
            c0, c1 = int(up.x_first[x0:x1].min()), int(up.x_last[x0:x1].max())
            part = up.ay[y0:y1, r0:r1] @ low[k, r0:r1, c0:c1] @ up.ax[x0:x1, c0:c1].T
            flat.append((part > self.model.sam.mask_threshold).reshape(-1))
            rects.append((x0, y0, x1, y1))
        bits = torch.cat(flat).cpu().numpy()
        crops, offset = [], 0
        for x0, y0, x1, y1 in rects:
            count = (x1 - x0) * (y1 - y0)
            full = bits[offset : offset + count].reshape(y1 - y0, x1 - x0)
            offset += count
            tight = MaskCrop.from_full(full)
            crops.append(tight if tight.is_empty else MaskCrop(tight.mask, tight.x0 + x0, tight.y0 + y0))
        return crops
