"""The handle adapters forward the pipeline protocols to deployments, one request per study."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imaging.errors import DicomReadError
from serving.deployments.remote import RemoteCaseFinder, RemoteCaseSearch, RemoteClassifier


@dataclass
class Response:
    value: Any

    def result(self) -> Any:
        return self.value


@dataclass
class Method:
    """``handle.<name>`` with ``.remote(...)``; answers through ``reply`` and logs calls."""

    reply: Any
    calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = field(default_factory=list)

    def remote(self, *args: Any, **kwargs: Any) -> Response:
        self.calls.append((args, kwargs))
        return Response(self.reply(*args, **kwargs))


class FakeHandle:
    def __init__(self, **methods: Method) -> None:
        for name, method in methods.items():
            setattr(self, name, method)


def test_remote_classifier_sends_each_study_by_path_and_keeps_errors_per_study() -> None:
    failure = DicomReadError("/store/bad", "truncated")

    def classify(request: tuple[str, str | None]) -> Any:
        path, folder = request
        return failure if path.endswith("bad") else {"label": "AD", "path": path, "dir": folder}

    describe = Method(
        lambda: {"modality": "MR", "name": "m", "version": "1", "class_names": ["CN", "AD"]}
    )
    handle = FakeHandle(describe=describe, classify=Method(classify))
    classifier = RemoteClassifier(handle)  # type: ignore[arg-type]
    assert (classifier.modality, classifier.name, classifier.version) == ("MR", "m", "1")
    assert classifier.class_names == ("CN", "AD")

    results = classifier.classify_paths(
        [Path("/store/a"), Path("/store/bad")], explain_dirs=[Path("/heat/a"), None]
    )
    assert results[0] == {"label": "AD", "path": "/store/a", "dir": "/heat/a"}
    assert results[1] is failure
    # One request per study (the deployment batches them), paths as strings.
    assert [call[0] for call in handle.classify.calls] == [
        (("/store/a", "/heat/a"),),
        (("/store/bad", None),),
    ]


def test_remote_finder_and_search_forward_their_arguments() -> None:
    find = Method(lambda path, modality, prediction: ("found", path, modality, prediction))
    finder = RemoteCaseFinder(FakeHandle(version=Method(lambda: "clip 1"), find=find))  # type: ignore[arg-type]
    assert finder.version == "clip 1"
    assert finder.find(Path("/store/s"), "US", {"label": "reduced_ef"}) == (
        "found", "/store/s", "US", {"label": "reduced_ef"},
    )  # fmt: skip

    search_text = Method(lambda text, **kwargs: [{"text": text, **kwargs}])
    search = RemoteCaseSearch(FakeHandle(search_text=search_text))  # type: ignore[arg-type]
    hits = search.search_text("dilated ventricle", k=5, modality="US", label=None, site="S1")
    assert hits == [
        {"text": "dilated ventricle", "k": 5, "modality": "US", "label": None, "site": "S1"}
    ]
