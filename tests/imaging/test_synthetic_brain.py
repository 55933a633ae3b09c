"""The synthetic brain: real anatomy, atrophy that follows age and disease, site effects."""

from __future__ import annotations

import numpy as np
import pytest

from imaging.synthetic.brain import (
    BrainPhenotype,
    create_brain_phenotype,
    load_head_template,
    render_t1,
)
from imaging.synthetic.mr_acquisition import MRProtocol, acquire_mr


def _box(x: tuple[float, float], y: tuple[float, float], z: tuple[float, float]) -> np.ndarray:
    grid = np.meshgrid(*(np.arange(low, high + 0.1, 2.0) for low, high in (x, y, z)))
    return np.stack([axis.ravel() for axis in grid], axis=1)


def _dark_fraction(phenotype: BrainPhenotype, points: np.ndarray) -> float:
    """Fraction of voxels at CSF-like intensity: ventricles, widened sulci, temporal horns."""
    t1 = render_t1(points, phenotype, load_head_template())
    return float(np.mean((t1 > 0.05) & (t1 < 0.3)))


def _same_subject(age: float, severity: float) -> BrainPhenotype:
    return create_brain_phenotype(
        age_years=age, sex="F", ad_severity=severity, rng=np.random.default_rng(11)
    )


def test_template_is_real_anatomy_with_a_head_around_it() -> None:
    template = load_head_template()
    t1 = template.maps[0]
    # Deep white matter (centrum semiovale) is bright; far corners are air.
    origin = np.round(template.ras_to_index @ np.array([0.0, 0.0, 0.0, 1.0]))[:3].astype(int)
    white_matter = np.round(template.ras_to_index @ np.array([-26.0, -10.0, 30.0, 1.0]))[:3]
    assert 0.7 < t1[tuple(white_matter.astype(int))] <= 1.0
    assert t1[0, 0, 0] == 0.0
    # Scalp fat is bright: along a ray upward from the vertex the head ends bright, then air.
    column = t1[origin[0], origin[1], origin[2] :]
    assert column.max() > 0.6
    assert column[-1] == 0.0


def test_disease_and_age_shrink_the_hippocampi() -> None:
    left_hippocampus = _box((-34.0, -20.0), (-32.0, -12.0), (-20.0, -6.0))
    template = load_head_template()
    healthy, diseased, older = (
        float(render_t1(left_hippocampus, phenotype, template).mean())
        for phenotype in (_same_subject(70, 0.0), _same_subject(70, 0.9), _same_subject(88, 0.0))
    )
    assert diseased < healthy - 0.03
    assert diseased < older < healthy


def test_disease_enlarges_the_ventricles() -> None:
    healthy, diseased = _same_subject(72, 0.0), _same_subject(72, 1.0)
    assert diseased.ventricular_expansion > healthy.ventricular_expansion + 0.2
    ventricles = _box((-25.0, 25.0), (-30.0, 10.0), (5.0, 35.0))
    assert _dark_fraction(diseased, ventricles) > _dark_fraction(healthy, ventricles) * 1.15


def test_phenotype_rejects_bad_arguments() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match='"sex"'):
        create_brain_phenotype(age_years=70, sex="X", ad_severity=0.0, rng=rng)
    with pytest.raises(ValueError, match='"ad_severity"'):
        create_brain_phenotype(age_years=70, sex="M", ad_severity=1.5, rng=rng)


def test_acquisition_follows_the_protocol_geometry_and_scale() -> None:
    protocol = MRProtocol("oblique_axial", 3.0, 4.0, 1500.0, 1.0, 0.2, 0.03, oblique_tilt_deg=15)
    phenotype = _same_subject(70, 0.0)
    volume = acquire_mr(phenotype, protocol, load_head_template(), np.random.default_rng(3))
    slices, rows, columns = volume.pixels.shape
    assert rows == columns == round(224.0 / 3.0)
    assert slices == round(168.0 / 4.0)
    assert volume.slice_spacing == pytest.approx(4.0)
    # Oblique: the slice normal is tilted about 15 degrees from the scanner's z axis.
    tilt = np.degrees(np.arccos(abs(volume.slice_direction[2])))
    assert 13.0 < tilt < 18.0
    # White matter near the intensity scale, background near the Rician noise floor.
    brain = volume.pixels[slices // 2, rows // 3 : 2 * rows // 3, columns // 3 : 2 * columns // 3]
    assert 700.0 < np.percentile(brain, 90) < 2200.0
    assert np.median(volume.pixels[:, :3, :3]) < 0.1 * 1500.0


def test_same_seed_same_acquisition() -> None:
    protocol = MRProtocol("sagittal", 4.0, 4.0, 1000.0, 1.0, 0.2, 0.03)
    first, second = (
        acquire_mr(_same_subject(70, 0.5), protocol, load_head_template(), np.random.default_rng(5))
        for _ in range(2)
    )
    np.testing.assert_array_equal(first.pixels, second.pixels)
