"""``mmdx synth``: the synthetic sample archive."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    pass

from serving.commands.progress import progress_bar


def synth(
    out: Annotated[Path, typer.Option("--out", help="Directory to write the archive into.")],
    mri: Annotated[int, typer.Option(min=0, help="Number of MRI studies.")] = 200,
    echo: Annotated[int, typer.Option(min=0, help="Number of echo studies.")] = 200,
    sites: Annotated[int, typer.Option(min=1, help="Number of imaging sites.")] = 4,
    seed: Annotated[int, typer.Option(help="Seed; the same seed gives the same archive.")] = 0,
    workers: Annotated[
        int | None, typer.Option(min=0, help="Processes (0: one per core; default from settings).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON summary only.")] = False,
) -> None:
    """Write a synthetic sample archive: DICOM, NIfTI, EchoNet layout, reports, manifest."""
    from rich.console import Console

    from imaging.synthetic.archive import ArchiveSpec, generate_archive
    from serving.settings import get_settings

    spec = ArchiveSpec(
        out_dir=out,
        mri_studies=mri,
        echo_studies=echo,
        sites=sites,
        seed=seed,
        workers=get_settings().synth.workers if workers is None else workers,
    )
    console = Console(stderr=True)
    started = time.perf_counter()
    with progress_bar(console, disable=as_json) as progress:
        task = progress.add_task("synthesising studies", total=mri + echo)
        rows = generate_archive(spec, on_study_done=lambda _row: progress.advance(task))
    summary = summarise_archive(rows, out, time.perf_counter() - started)
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    console.print(f"[bold]Synthetic sample archive[/bold] in {out} ({summary['seconds']:.1f} s)")
    console.print("All identities are invented; no real patient data. Not for diagnostic use.")
    for modality, counts in summary["labels"].items():
        console.print(f"  {modality}: {summary['studies'][modality]} studies, labels {counts}")
    console.print(f"  patients: {summary['patients']}, sites: {summary['sites']}")
    console.print(f"  DICOM files: {summary['dicom_files']}, manifest: {summary['manifest']}")


def summarise_archive(rows: list[dict[str, str]], out: Path, seconds: float) -> dict[str, Any]:
    """Counts a person or a script checks after ``mmdx synth``."""
    labels: dict[str, dict[str, int]] = {}
    for modality in sorted({row["modality"] for row in rows}):
        counter = Counter(row["label"] for row in rows if row["modality"] == modality)
        labels[modality] = dict(sorted(counter.items()))
    return {
        "out": str(out),
        "seconds": round(seconds, 2),
        "studies": dict(Counter(row["modality"] for row in rows)),
        "labels": labels,
        "patients": len({row["patient_id"] for row in rows}),
        "sites": dict(sorted(Counter(row["site_id"] for row in rows).items())),
        "dicom_files": sum(1 for path in (out / "dicom").rglob("*.dcm")) if rows else 0,
        "manifest": str(out / "manifest.csv"),
    }
