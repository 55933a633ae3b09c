"""Free-text reports consistent with each synthetic study's findings, imperfectly.

A reporting radiologist grades what the image shows with some disagreement
(grades jitter around the truth, measurements carry observer error), phrases
the same finding in several ways and states pertinent negatives. Text and
image therefore carry the same signal, but not identically.
"""

from __future__ import annotations

from datetime import date

import numpy as np

from imaging.synthetic.brain import BrainPhenotype

MTA_THRESHOLDS = (0.12, 0.22, 0.35, 0.5)  # hippocampal loss -> Scheltens MTA score 0..4
GCA_THRESHOLDS = (0.12, 0.22, 0.32)  # cortical thinning -> Pasquier GCA score 0..3
VENTRICLE_WORDS = (
    (0.12, ("normal in size", "not enlarged", "of normal calibre")),
    (0.22, ("mildly prominent", "slightly prominent", "at the upper limit of normal")),
    (0.34, ("moderately enlarged", "moderately dilated", "enlarged, out of proportion to age")),
    (9.99, ("markedly enlarged", "severely dilated", "markedly dilated (ex vacuo)")),
)
EF_CATEGORIES = (  # ASE: lower bound of LVEF (%) and the words used for it
    (53.0, ("normal", "preserved")),
    (41.0, ("mildly reduced", "low-normal to mildly reduced")),
    (30.0, ("moderately reduced", "moderately impaired")),
    (0.0, ("severely reduced", "severely impaired")),
)


def _choose(options: tuple[str, ...], rng: np.random.Generator) -> str:
    return options[int(rng.integers(len(options)))]


def _grade(value: float, thresholds: tuple[float, ...]) -> int:
    return int(np.searchsorted(np.asarray(thresholds), value, side="right"))


def write_mri_report(
    phenotype: BrainPhenotype,
    *,
    age_years: int,
    rng: np.random.Generator,
    comparison_date: date | None = None,
) -> str:
    """A brain MRI report grading atrophy the way a neuroradiologist would."""
    observed_hippocampal = phenotype.hippocampal_loss + rng.normal(0.0, 0.06)
    observed_cortical = phenotype.cortical_thinning + rng.normal(0.0, 0.04)
    observed_ventricles = phenotype.ventricular_expansion + rng.normal(0.0, 0.04)
    mta = _grade(observed_hippocampal, MTA_THRESHOLDS)
    gca = _grade(observed_cortical, GCA_THRESHOLDS)
    ventricles = next(words for limit, words in VENTRICLE_WORDS if observed_ventricles < limit)
    evans_index = 0.24 + 0.22 * phenotype.ventricular_expansion + rng.normal(0.0, 0.01)
    fazekas = int(np.clip(rng.poisson(0.4 + 0.03 * max(age_years - 60, 0)), 0, 3))

    comparison = (
        f"MRI brain of {comparison_date.isoformat()}." if comparison_date else "None available."
    )
    hippocampi = {
        0: "The hippocampi are normal in volume (MTA score 0).",
        1: "The hippocampi are of normal volume for age; minimal widening of the choroid "
        "fissure (MTA score 1).",
        2: "There is mild bilateral hippocampal volume loss with widening of the temporal "
        "horns (MTA score 2).",
        3: "Moderate bilateral hippocampal atrophy with enlarged temporal horns (MTA score 3).",
        4: "Severe bilateral hippocampal atrophy (MTA score 4).",
    }[mta]
    cortex = {
        0: "No global cortical atrophy (GCA 0).",
        1: "Mild global cortical atrophy with opening of the sulci (GCA 1).",
        2: "Moderate cortical atrophy, most pronounced in the parietal and temporal lobes (GCA 2).",
        3: "Severe cortical atrophy with knife-blade gyri in the temporo-parietal regions (GCA 3).",
    }[gca]
    white_matter = (
        "No significant white matter signal abnormality."
        if fazekas == 0
        else f"Periventricular and deep white matter changes, Fazekas grade {fazekas}."
    )
    disproportionate = mta >= 3 or (mta >= 2 and age_years < 75)
    if disproportionate:
        impression = _choose(
            (
                "Medial temporal lobe predominant atrophy, a pattern that supports Alzheimer's "
                "disease in the appropriate clinical context.",
                "Hippocampal and temporo-parietal volume loss disproportionate to age; "
                "features favour Alzheimer's disease.",
                "Atrophy pattern suggestive of Alzheimer's disease. Correlate with cognitive "
                "testing.",
            ),
            rng,
        )
    else:
        impression = _choose(
            (
                "Age-appropriate volume loss. No disproportionate medial temporal atrophy.",
                "No imaging features to suggest a neurodegenerative process beyond normal ageing.",
                "Brain volume within the expected range for age; no hippocampal atrophy of note.",
            ),
            rng,
        )
    findings = " ".join(
        (
            f"The lateral ventricles are {_choose(ventricles, rng)} (Evans index "
            f"{evans_index:.2f}).",
            hippocampi,
            cortex,
            white_matter,
            _choose(
                (
                    "No acute infarct, haemorrhage or mass lesion.",
                    "No restricted diffusion, no intracranial haemorrhage, no mass effect.",
                    "There is no evidence of acute ischaemia or space-occupying lesion.",
                ),
                rng,
            ),
        )
    )
    return (
        "EXAMINATION: MRI brain, 3D T1-weighted volumetric sequence.\n"
        "CLINICAL HISTORY: Cognitive complaints; assess for neurodegenerative change.\n"
        f"COMPARISON: {comparison}\n"
        f"FINDINGS: {findings}\n"
        f"IMPRESSION: {impression}\n"
    )


def write_echo_report(
    *,
    ejection_fraction_percent: float,
    edv_ml: float,
    esv_ml: float,
    heart_rate_bpm: float,
    rng: np.random.Generator,
) -> str:
    """A transthoracic echo report with a measured (observer-error) ejection fraction."""
    measured_ef = float(np.clip(ejection_fraction_percent + rng.normal(0.0, 4.0), 5.0, 85.0))
    measured_edv = edv_ml * rng.normal(1.0, 0.08)
    measured_esv = measured_edv * (1.0 - measured_ef / 100.0)
    category = next(words for lower, words in EF_CATEGORIES if measured_ef >= lower)
    dilated = measured_edv > 160.0
    if measured_ef >= 53.0:
        wall_motion = "No regional wall motion abnormality."
    elif rng.random() < 0.6:
        wall_motion = "Global hypokinesis of the left ventricle."
    else:
        wall_motion = (
            "Regional wall motion abnormality: hypokinesis of the mid and apical anterior wall "
            "and apex, in keeping with the LAD territory."
        )
    size_sentence = (
        "The left ventricle is dilated." if dilated else "Left ventricular cavity size is normal."
    )
    ef_sentence = _choose(
        (
            f"Left ventricular systolic function is {_choose(category, rng)}, with a biplane "
            f"ejection fraction of {measured_ef:.0f}%.",
            f"LVEF (Simpson's biplane) {measured_ef:.0f}%: {_choose(category, rng)} systolic "
            "function.",
            f"Estimated ejection fraction {measured_ef:.0f}%, consistent with "
            f"{_choose(category, rng)} LV systolic function.",
        ),
        rng,
    )
    mitral = _choose(("No significant mitral regurgitation.", "Trace mitral regurgitation."), rng)
    if measured_ef < 40.0 and dilated and rng.random() < 0.5:
        mitral = "Moderate functional mitral regurgitation."
    findings = " ".join(
        (
            size_sentence,
            f"End-diastolic volume {measured_edv:.0f} mL, end-systolic volume "
            f"{measured_esv:.0f} mL.",
            ef_sentence,
            wall_motion,
            "Right ventricular size and function are normal.",
            mitral,
            _choose(("No pericardial effusion.", "There is no pericardial effusion."), rng),
        )
    )
    if measured_ef < 40.0:
        impression = f"Reduced left ventricular ejection fraction ({measured_ef:.0f}%)."
    elif measured_ef < 53.0:
        impression = f"Mildly reduced LV systolic function (EF {measured_ef:.0f}%)."
    else:
        impression = "Normal left ventricular size and systolic function."
    return (
        "EXAMINATION: Transthoracic echocardiogram, apical four-chamber view.\n"
        f"HEART RATE: {heart_rate_bpm:.0f} bpm.\n"
        f"FINDINGS: {findings}\n"
        f"IMPRESSION: {impression}\n"
    )
