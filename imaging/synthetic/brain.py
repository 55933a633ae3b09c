"""Subject brains from real anatomy: the MNI152 template, deformed and atrophied per subject.

The template (nilearn's ICBM 2009a T1 with its gray-matter map, 1 mm, shipped
with the package) gives real anatomy. A head is built around the skull-stripped
brain (CSF rim, skull, scalp) so that preprocessing meets what scanners show.
Each subject differs by head size, a smooth random deformation and three
atrophy patterns whose size depends on age and on Alzheimer's-like disease:
ventricular enlargement, hippocampal loss and cortical thinning weighted to the
temporo-parietal cortex. ``docs/synthetic-data.md`` gives the generative model.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

# The averaged template has a flat T1 contrast (its ventricles read ~0.35 against white
# matter ~0.8); this map restores the contrast of a single MPRAGE: CSF ~0.15, gray matter
# ~0.55, white matter ~0.85 (template value -> rendered value).
TEMPLATE_CONTRAST = (
    (0.0, 0.25, 0.38, 0.5, 0.62, 0.8, 1.0),
    (0.0, 0.1, 0.15, 0.35, 0.55, 0.85, 1.0),
)
CSF_INTENSITY = 0.15
# Centres and spreads (MNI mm) of the deformations that enlarge the lateral ventricles.
LATERAL_VENTRICLE_CENTRES = np.array([[-12.0, -12.0, 21.0], [12.0, -12.0, 21.0]])
LATERAL_VENTRICLE_SPREAD = np.array([9.0, 24.0, 10.0])
# Hippocampal bodies (MNI mm) and the ellipsoid radii that cover them.
HIPPOCAMPAL_CENTRES = np.array([[-27.0, -22.0, -13.0], [28.0, -21.0, -13.0]])
HIPPOCAMPAL_RADII = np.array([7.0, 17.0, 7.0])
# Where Alzheimer's-like cortical thinning is strongest: temporo-parietal cortex.
TEMPOROPARIETAL_CENTRES = np.array([[-48.0, -45.0, 10.0], [48.0, -45.0, 10.0]])
TEMPOROPARIETAL_SPREAD = 32.0
# Head shells outside the brain mask, as (outer distance mm, intensity).
HEAD_SHELLS = ((2.5, CSF_INTENSITY), (8.0, 0.07), (13.0, 0.85))
TEMPLATE_PADDING_VOXELS = 16


@dataclass(frozen=True)
class HeadTemplate:
    """Template maps on one 1 mm grid, with the map from MNI (RAS) mm to voxel index."""

    # Stacked maps (4, x, y, z), sampled together: head T1 intensity (0..1, brain plus
    # CSF rim, skull and scalp); gray matter within a few mm of the brain's outer
    # surface; that outer cortex weighted toward the temporo-parietal lobes; and the
    # gray matter of the hippocampal bodies.
    maps: np.ndarray
    ras_to_index: np.ndarray  # 4x4


@dataclass(frozen=True)
class BrainPhenotype:
    """How one subject's brain departs from the template.

    Attributes:
        ventricular_expansion: relative enlargement of the lateral ventricles' surroundings.
        hippocampal_loss: fraction of hippocampal gray matter replaced by CSF.
        cortical_thinning: fraction of outer cortical gray matter replaced by CSF.
        ad_pattern: weight of the temporo-parietal emphasis of cortical thinning.
        head_scale: isotropic scale of the whole head (men larger on average).
        deformation: coefficients of a smooth random deformation, shape (3, terms, 5):
            amplitude (mm), frequency vector (3, cycles/mm) and phase for each axis.
    """

    ventricular_expansion: float
    hippocampal_loss: float
    cortical_thinning: float
    ad_pattern: float
    head_scale: float
    deformation: np.ndarray


def create_brain_phenotype(
    *, age_years: float, sex: str, ad_severity: float, rng: np.random.Generator
) -> BrainPhenotype:
    """Draw a subject's phenotype from age, sex and disease severity (0 = none, 1 = severe).

    Normal ageing enlarges the ventricles and thins the cortex a little; disease
    adds hippocampal loss, more ventricular enlargement and temporo-parietal
    thinning. Subject-to-subject spread is large enough that the groups overlap.
    """
    if sex not in ("M", "F"):
        raise ValueError(f'Argument "sex" must be "M" or "F", got {sex!r}')
    if not 0.0 <= ad_severity <= 1.0:
        raise ValueError(f'Argument "ad_severity" must lie in [0, 1], got {ad_severity}')
    ageing = float(np.clip((age_years - 55.0) / 35.0, 0.0, 1.2))
    spread = rng.normal(0.0, 1.0, size=3)
    terms = 4
    deformation = np.zeros((3, terms, 5))
    deformation[:, :, 0] = rng.normal(0.0, 1.6, size=(3, terms))
    deformation[:, :, 1:4] = rng.normal(0.0, 1.0 / 90.0, size=(3, terms, 3))
    deformation[:, :, 4] = rng.uniform(0.0, 2.0 * np.pi, size=(3, terms))
    return BrainPhenotype(
        ventricular_expansion=float(
            np.clip(0.06 + 0.16 * ageing + 0.28 * ad_severity + 0.05 * spread[0], 0.0, 0.55)
        ),
        hippocampal_loss=float(
            np.clip(0.04 + 0.10 * ageing + 0.50 * ad_severity + 0.06 * spread[1], 0.0, 0.8)
        ),
        cortical_thinning=float(
            np.clip(0.05 + 0.15 * ageing + 0.22 * ad_severity + 0.05 * spread[2], 0.0, 0.7)
        ),
        ad_pattern=float(ad_severity),
        head_scale=float(rng.normal(1.03 if sex == "M" else 0.97, 0.035)),
        deformation=deformation,
    )


@lru_cache(maxsize=1)
def load_head_template() -> HeadTemplate:
    """Build the head template once per process from nilearn's bundled MNI152 files."""
    from nilearn import datasets
    from scipy import ndimage

    t1_image = datasets.load_mni152_template(resolution=1)
    pad = TEMPLATE_PADDING_VOXELS
    brain_t1 = np.pad(t1_image.get_fdata(dtype=np.float32), pad)
    gray_matter = np.pad(
        datasets.load_mni152_gm_template(resolution=1).get_fdata(dtype=np.float32), pad
    )
    brain_mask = (
        np.pad(datasets.load_mni152_brain_mask(resolution=1).get_fdata(dtype=np.float32), pad) > 0.5
    )

    # Shells grow outward from the brain; the map is 1 mm isotropic so distances are mm.
    outside = ndimage.distance_transform_edt(~brain_mask).astype(np.float32)
    head_t1 = np.where(brain_mask, np.interp(brain_t1, *TEMPLATE_CONTRAST), 0.0).astype(np.float32)
    inner = 0.0
    for outer, intensity in HEAD_SHELLS:
        shell = (outside > inner) & (outside <= outer)
        head_t1[shell] = intensity
        inner = outer
    head_t1 = ndimage.gaussian_filter(head_t1, 0.7)

    inside = ndimage.distance_transform_edt(brain_mask).astype(np.float32)
    outer_cortex = gray_matter * np.clip((6.0 - inside) / 4.0, 0.0, 1.0)

    index_to_ras = t1_image.affine.copy()
    index_to_ras[:3, 3] -= index_to_ras[:3, :3] @ np.full(3, pad)
    # MNI coordinates of the grid, one broadcastable axis each (the grid is axis-aligned).
    x, y, z = (
        (
            np.arange(size, dtype=np.float32) * index_to_ras[axis, axis] + index_to_ras[axis, 3]
        ).reshape([-1 if a == axis else 1 for a in range(3)])
        for axis, size in enumerate(head_t1.shape)
    )
    hippocampus = np.zeros(head_t1.shape, dtype=np.float32)
    for cx, cy, cz in HIPPOCAMPAL_CENTRES:
        rx, ry, rz = HIPPOCAMPAL_RADII
        distance = np.sqrt(((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 + ((z - cz) / rz) ** 2)
        np.maximum(hippocampus, np.clip(1.5 - distance, 0.0, 1.0), out=hippocampus)
    temporoparietal = np.zeros(head_t1.shape, dtype=np.float32)
    for cx, cy, cz in TEMPOROPARIETAL_CENTRES:
        squared = (x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2
        np.maximum(
            temporoparietal, np.exp(-0.5 * squared / TEMPOROPARIETAL_SPREAD**2), out=temporoparietal
        )
    maps = np.stack(
        [head_t1, outer_cortex, outer_cortex * temporoparietal, gray_matter * hippocampus]
    )
    return HeadTemplate(maps=maps.astype(np.float32), ras_to_index=np.linalg.inv(index_to_ras))


def subject_to_template(points: np.ndarray, phenotype: BrainPhenotype) -> np.ndarray:
    """Map head-centred subject coordinates (N, 3 RAS mm) to template (MNI) coordinates.

    This is the pull-back used to render: each voxel of an acquisition asks
    where in the template its tissue comes from.
    """
    points = points.astype(np.float32)
    template = points / np.float32(phenotype.head_scale)
    deformation = phenotype.deformation.astype(np.float32)
    for axis in range(3):
        amplitude, frequency, phase = (
            deformation[axis, :, 0],
            deformation[axis, :, 1:4],
            deformation[axis, :, 4],
        )
        template[:, axis] += np.sin(points @ (frequency.T * np.float32(2.0 * np.pi)) + phase) @ (
            amplitude
        )
    # Sampling nearer the ventricle centres magnifies the ventricles.
    inverse_spread = (1.0 / LATERAL_VENTRICLE_SPREAD).astype(np.float32)
    for centre in LATERAL_VENTRICLE_CENTRES.astype(np.float32):
        offset = template - centre
        weight = np.exp(np.float32(-0.5) * np.sum((offset * inverse_spread) ** 2, axis=1))
        template -= (np.float32(phenotype.ventricular_expansion) * weight)[:, None] * offset
    return template


def template_sampling_grid(mni: np.ndarray, template: HeadTemplate) -> np.ndarray:
    """Turn MNI coordinates (..., 3) into the normalised (x, y, z) grid that ``grid_sample`` wants.

    ``grid_sample`` addresses (last, middle, first) array axes, scaled to [-1, 1].
    """
    to_index = template.ras_to_index.astype(np.float32)
    index = mni @ to_index[:3, :3].T + to_index[:3, 3]
    shape = np.array(template.maps.shape[1:], dtype=np.float32)
    return np.asarray((index[..., ::-1] / (shape[::-1] - 1.0)) * 2.0 - 1.0, dtype=np.float32)


def sample_head(grid: np.ndarray, phenotype: BrainPhenotype, template: HeadTemplate) -> np.ndarray:
    """T1 intensity (0..1) of a subject's head at the template positions ``grid`` (..., 3).

    ``grid`` comes from ``template_sampling_grid``; the result has its leading shape.
    """
    import torch

    with torch.no_grad():
        sampled = torch.nn.functional.grid_sample(
            torch.from_numpy(template.maps)[None],
            torch.from_numpy(np.ascontiguousarray(grid, dtype=np.float32)).view(1, 1, 1, -1, 3),
            mode="bilinear",
            padding_mode="zeros",
            align_corners=True,
        )[0, :, 0, 0].numpy()
    t1, outer_cortex, temporoparietal_cortex, hippocampal_gray = sampled
    cortical_thinning = phenotype.cortical_thinning * (
        (1.0 - phenotype.ad_pattern) * outer_cortex
        + phenotype.ad_pattern * 1.8 * temporoparietal_cortex
    )
    lost_gray = phenotype.hippocampal_loss * hippocampal_gray + np.clip(cortical_thinning, 0.0, 0.9)
    # Lost gray matter turns into CSF: the voxel darkens toward CSF's intensity.
    t1 = t1 - np.clip(lost_gray, 0.0, 1.0) * np.clip(t1 - CSF_INTENSITY, 0.0, None)
    return t1.astype(np.float32).reshape(grid.shape[:-1])


def render_t1(points: np.ndarray, phenotype: BrainPhenotype, template: HeadTemplate) -> np.ndarray:
    """T1 intensity (0..1) of a subject's head at subject coordinates ``points`` (N, 3 RAS mm)."""
    grid = template_sampling_grid(subject_to_template(points, phenotype), template)
    return sample_head(grid, phenotype, template)
