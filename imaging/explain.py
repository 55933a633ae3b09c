"""Heat maps that show where a network looked: Grad-CAM, or occlusion sensitivity.

Both work on the network input as preprocessed (an MR volume ``(1, 1, X, Y, Z)`` in RAS
at the preset's spacing, or an echo clip ``(1, C, T, H, W)``) and return a heat map of
the input's spatial shape, non-negative with maximum 1 (all zero when nothing in the
input raised the explained output), so it overlays the input voxel for voxel.

- Grad-CAM (``monai.visualize.GradCAM``) weighs the feature maps of the backbone's last
  convolutional block that still has spatial extent by the gradient of the explained
  output. It needs gradients, so it runs outside ``torch.inference_mode`` on a copy of
  the model (MONAI's hooks stay on the copy).
- Occlusion sensitivity (``monai.visualize.OcclusionSensitivity``) hides one box of the
  input at a time; the heat is how far the explained output falls. Slower, model-agnostic.

:func:`save_overlays` draws key slices (three planes through the maximum) or key frames
as PNG files; matplotlib (Agg backend) is imported there. :mod:`imaging.viewer_file` keeps
the whole image and heat map, for a viewer that pages through every slice or frame.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

if TYPE_CHECKING:
    import torch
    from torch import nn

Method = Literal["gradcam", "occlusion"]
METHODS: tuple[Method, ...] = ("gradcam", "occlusion")
# Planes of an RAS volume (axes X: left->right, Y: posterior->anterior, Z: inferior->superior).
PLANE_AXES = {"sagittal": 0, "coronal": 1, "axial": 2}


@dataclass(frozen=True, eq=False)
class Explanation:
    """A heat map over a network input and what it explains.

    Attributes:
        method: ``"gradcam"`` or ``"occlusion"``.
        heatmap: float32, the input's spatial shape (``(X, Y, Z)`` or ``(T, H, W)``),
            values in [0, 1].
        image: The input's first channel, same shape, for overlays.
        target_index: The output column explained.
        target_name: What that column means (a class name, ``"reduced_ef"``...).
        modality: ``"MR"`` (a volume) or ``"US"`` (a clip, time first).
        target_layer: The layer Grad-CAM used, None for occlusion.
    """

    method: Method
    heatmap: np.ndarray
    image: np.ndarray
    target_index: int
    target_name: str
    modality: str
    target_layer: str | None = None

    @property
    def peak(self) -> tuple[int, ...]:
        """Index of the heat map's maximum."""
        return tuple(int(i) for i in np.unravel_index(np.argmax(self.heatmap), self.heatmap.shape))


def explain(
    model: nn.Module,
    x: torch.Tensor,
    *,
    modality: str,
    target_index: int,
    target_name: str = "",
    method: Method = "gradcam",
    target_layer: str | None = None,
) -> Explanation:
    """Explain output column ``target_index`` of ``model`` for the single input ``x``.

    Args:
        model: A network from the factory (``backbone`` and ``head``); not modified.
        x: One preprocessed input with batch axis: ``(1, C, *spatial)``.
        modality: ``"MR"`` or ``"US"`` (how overlays are drawn).
        target_index: Output column to explain (a class, or the reduced-EF logit).
        target_name: What the column means, for titles and reports.
        method: ``"gradcam"`` or ``"occlusion"``.
        target_layer: Grad-CAM's layer (dotted module name); default
            :func:`find_target_layer`.

    Raises:
        ValueError: Unknown method, or ``x`` is not one input with batch axis.
    """
    if method not in METHODS:
        raise ValueError(f'Argument "method" must be one of {METHODS}, got {method!r}')
    if x.ndim < 4 or x.shape[0] != 1:
        raise ValueError(f'Argument "x" must be (1, C, *spatial), got {tuple(x.shape)}')
    layer = None
    if method == "gradcam":
        layer = target_layer or find_target_layer(model, x)
        heatmap = gradcam_map(model, x, target_index=target_index, target_layer=layer)
    else:
        heatmap = occlusion_map(model, x, target_index=target_index)
    return Explanation(
        method=method,
        heatmap=heatmap,
        image=x[0, 0].detach().float().cpu().numpy(),
        target_index=target_index,
        target_name=target_name or f"output {target_index}",
        modality=modality,
        target_layer=layer,
    )


def find_target_layer(model: nn.Module, x: torch.Tensor) -> str:
    """The backbone's last convolutional block whose output still has spatial extent.

    Candidates are the backbone's direct children that contain a convolution (a ResNet's
    ``layer1..4``, a DenseNet's ``features``, a video ResNet's ``stem`` and layers). The
    last one whose feature map is at least 2 in every spatial axis wins, so small
    inputs, where the last block pools everything into one voxel, still get a map;
    when none is, the last candidate.

    Raises:
        ValueError: The model has no ``backbone`` or no convolution in it.
    """
    import torch
    from torch import nn

    backbone = getattr(model, "backbone", None)
    if not isinstance(backbone, nn.Module):
        raise ValueError(f"{type(model).__name__} has no backbone to explain")
    convolutions = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
    candidates = [
        name
        for name, child in backbone.named_children()
        if any(isinstance(module, convolutions) for module in child.modules())
    ]
    if not candidates:
        raise ValueError(f"the backbone of {type(model).__name__} has no convolution")
    shapes: dict[str, tuple[int, ...]] = {}
    handles = [
        backbone.get_submodule(name).register_forward_hook(
            lambda _m, _i, output, name=name: shapes.__setitem__(name, tuple(output.shape[2:]))
        )
        for name in candidates
    ]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(x.detach().clone())
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    extended = [name for name in candidates if min(shapes.get(name, (0,))) >= 2]
    return f"backbone.{(extended or candidates)[-1]}"


def gradcam_map(
    model: nn.Module, x: torch.Tensor, *, target_index: int, target_layer: str
) -> np.ndarray:
    """Grad-CAM of output ``target_index`` at ``target_layer``, upsampled to ``x``'s grid.

    Runs with gradients on a deep copy of ``model`` in eval mode (MONAI registers hooks
    that cannot be removed), so ``model`` and its caller's inference mode are untouched.
    """
    import torch
    from monai.visualize import GradCAM

    # Copies made inside inference mode would be inference tensors, which autograd refuses.
    with torch.inference_mode(False), torch.enable_grad():
        explained = copy.deepcopy(model).eval()
        for parameter in explained.parameters():
            parameter.requires_grad_(True)
        cam = GradCAM(nn_module=explained, target_layers=target_layer, postprocessing=_identity)
        inputs = x.detach().clone().float().requires_grad_(True)
        result = cam(inputs, class_idx=target_index)
    return unit_range(np.asarray(result.detach().cpu().numpy()[0, 0]))


def occlusion_map(
    model: nn.Module,
    x: torch.Tensor,
    *,
    target_index: int,
    mask_size: int | Sequence[int] | None = None,
    overlap: float = 0.5,
    n_batch: int = 8,
) -> np.ndarray:
    """How far output ``target_index`` falls when each region of ``x`` is hidden.

    Boxes of ``mask_size`` (default a quarter of each side, at least 2) are replaced by
    the image mean; the heat is the drop of the raw output (logit or value) from its
    unoccluded value, negative drops clipped to 0, scaled to [0, 1].
    """
    import torch
    from monai.visualize import OcclusionSensitivity

    spatial = tuple(int(n) for n in x.shape[2:])
    size = mask_size if mask_size is not None else tuple(max(2, n // 4) for n in spatial)
    occlusion = OcclusionSensitivity(
        model,
        mask_size=size,
        n_batch=n_batch,
        verbose=False,
        mode="mean_img",
        overlap=overlap,
        activate=False,
    )
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # MONAI's indexing deprecation warnings
            inputs = x.detach().clone().float()
            baseline = float(model(inputs)[0, target_index])
            occluded, _ = occlusion(inputs)
    finally:
        model.train(was_training)
    drop = baseline - np.asarray(occluded.detach().cpu().numpy()[0, target_index])
    return unit_range(np.maximum(drop, 0.0))


def unit_range(heat: np.ndarray) -> np.ndarray:
    """``heat`` clipped at 0 and divided by its maximum (all zeros stay zeros), float32."""
    heat = np.maximum(np.nan_to_num(heat.astype(np.float32)), 0.0)
    top = float(heat.max()) if heat.size else 0.0
    return heat / top if top > 0 else np.zeros_like(heat)


def key_slices(heatmap: np.ndarray) -> dict[str, int]:
    """Slice index per plane (``sagittal``, ``coronal``, ``axial``) through the maximum."""
    peak = np.unravel_index(np.argmax(heatmap), heatmap.shape)
    return {plane: int(peak[axis]) for plane, axis in PLANE_AXES.items()}


def key_frames(heatmap: np.ndarray, count: int = 4) -> list[int]:
    """``count`` evenly spaced frames of a ``(T, H, W)`` map plus its hottest frame, sorted.

    The hottest frame is the one with the most heat in total; without cardiac phase
    labels, evenly spaced frames cover the cycle (a 32-frame clip at period 2 spans
    about one beat).
    """
    frames = heatmap.shape[0]
    spaced = np.linspace(0, frames - 1, num=min(count, frames)).round().astype(int)
    hottest = int(np.argmax(heatmap.reshape(frames, -1).sum(axis=1)))
    return sorted({*(int(i) for i in spaced), hottest})


def save_overlays(
    explanation: Explanation, out_dir: str | Path, *, prefix: str = "explanation"
) -> list[Path]:
    """Write PNG overlays of the heat map on the input; return the files.

    MR: one file per plane (``PREFIX_axial.png``, ``_coronal``, ``_sagittal``) through
    the heat map's maximum, in neurological orientation (left on the left, anterior or
    superior up). Echo: one file per key frame (``PREFIX_frame012.png``).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    image = display_range(explanation.image)
    heat = explanation.heatmap
    panels: list[tuple[str, np.ndarray, np.ndarray, str]] = []
    if explanation.modality == "MR":
        for plane, index in key_slices(heat).items():
            panels.append(
                (
                    plane,
                    oriented_slice(image, plane, index),
                    oriented_slice(heat, plane, index),
                    f"{plane} slice {index}",
                )
            )
    else:
        for frame in key_frames(heat):
            panels.append((f"frame{frame:03d}", image[frame], heat[frame], f"frame {frame}"))
    written = []
    for suffix, background, overlay, where in panels:
        figure, axes = plt.subplots(figsize=(4, 4), dpi=100)
        axes.imshow(background, cmap="gray", vmin=0.0, vmax=1.0)
        axes.imshow(overlay, cmap="jet", vmin=0.0, vmax=1.0, alpha=0.4 * overlay)
        axes.set_title(
            f"{explanation.method}: {explanation.target_name}\n{where}; not for diagnostic use",
            fontsize=8,
        )
        axes.set_axis_off()
        path = out / f"{prefix}_{suffix}.png"
        figure.savefig(path, bbox_inches="tight")
        plt.close(figure)
        written.append(path)
    return written


def oriented_slice(volume: np.ndarray, plane: str, index: int) -> np.ndarray:
    """Slice ``index`` of an RAS ``(X, Y, Z)`` volume in ``plane``, first row at the top.

    Neurological orientation: the patient's left on the left; anterior up in axial
    slices, superior up in coronal and sagittal ones (posterior on the left of a
    sagittal slice).

    Raises:
        ValueError: ``plane`` is not ``axial``, ``coronal`` or ``sagittal``, or ``index``
            lies outside the volume.
    """
    if plane not in PLANE_AXES:
        raise ValueError(f'Argument "plane" must be one of {tuple(PLANE_AXES)}, got {plane!r}')
    axis = PLANE_AXES[plane]
    if not 0 <= index < volume.shape[axis]:
        raise ValueError(
            f'Argument "index" must be in 0..{volume.shape[axis] - 1} for the {plane} plane, '
            f"got {index}"
        )
    # Rows then run along the second remaining axis, which grows upwards: flip it.
    return np.ascontiguousarray(np.take(volume, index, axis=axis).T[::-1])


def display_range(image: np.ndarray) -> np.ndarray:
    """``image`` windowed to its 1st-99th percentile and scaled to [0, 1], float32."""
    low, high = np.percentile(image, [1, 99]) if image.size else (0.0, 1.0)
    if high <= low:
        return np.zeros_like(image, dtype=np.float32)
    return np.clip((image - low) / (high - low), 0.0, 1.0).astype(np.float32)


def _identity(x: torch.Tensor) -> torch.Tensor:
    # MONAI's default post-processing maps (min, max) to (1, 0), inverting the map.
    return x
