"""The naive serial loop: each study read, preprocessed and predicted alone, as ``mmdx predict``.

:func:`predict_serially` is the reference the screen is checked against (``mmdx evaluate
--bundle`` and the screening bench): one :func:`imaging.predict.predict_path` call per
study, no batching, no parallelism, giving rows of the screen's results schema.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from serving.screening.inputs import StudyTask, describe_error
from serving.screening.stages import failed_row, result_row

if TYPE_CHECKING:
    from serving.screening.bundles import ScreenModel


def predict_serially(
    tasks: Sequence[StudyTask],
    models: Mapping[str, ScreenModel],
    *,
    roots: Sequence[str] = (),
    on_study: Callable[[dict[str, Any]], None] | None = None,
) -> Iterator[dict[str, Any]]:
    """Result rows of ``tasks``, one study at a time, in order.

    Args:
        tasks: The studies (discovery failures come back as failed rows).
        models: The model of each modality.
        roots: Folder prefixes cut from the paths that errors name.
        on_study: Called with each row as it is made (progress).
    """
    from imaging.errors import ImagingError
    from imaging.predict import predict_path
    from serving.pipeline.classification import StudyClassifier

    classifiers = {modality: StudyClassifier(model.path) for modality, model in models.items()}
    for task in tasks:
        row = task.as_row()
        classifier = classifiers.get(str(task.modality))
        if task.failed:
            out = failed_row(row, str(task.error), "discover")
        elif classifier is None:
            out = failed_row(row, f"PredictionInputError: no model for {task.modality}", "discover")
        else:
            try:
                result = predict_path(str(task.path), classifier.bundle, explain=False)
            except ImagingError as exc:
                out = failed_row(row, describe_error(exc, roots), "decode")
            except Exception as exc:  # one bad study must not stop the loop
                out = failed_row(row, describe_error(exc, roots), "infer")
            else:
                timing = result["timing_ms"]
                out = result_row(
                    row,
                    result,
                    classifier,
                    decode_ms=timing["decode"] + timing["preprocess"],
                    infer_ms=timing["inference"],
                )
        if on_study is not None:
            on_study(out)
        yield out
