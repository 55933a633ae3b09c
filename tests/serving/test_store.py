"""The study store: UID-filed layout, atomic durable moves, hostile UIDs refused."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from serving.store import StudyStore, check_uid

STUDY, SERIES, SOP = "1.2.840.1", "1.2.840.1.2", "1.2.840.1.2.3"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[StudyStore]:
    store = StudyStore(tmp_path / "store")
    yield store
    store.close()


def received_file(store: StudyStore, content: bytes) -> Path:
    path = store.new_temp_file()
    path.write_bytes(content)
    return path


def test_put_files_by_uid_and_moves_the_temp_file(store: StudyStore) -> None:
    temp = received_file(store, b"first")
    stored = store.put(
        temp, study_instance_uid=STUDY, series_instance_uid=SERIES, sop_instance_uid=SOP
    )
    assert stored == store.root / STUDY / SERIES / f"{SOP}.dcm"
    assert stored.read_bytes() == b"first"
    assert not temp.exists()
    assert store.instance_path(STUDY, SERIES, SOP) == stored
    assert store.instance_path(STUDY, SERIES, "1.2.3.4") is None
    assert store.study_files(STUDY) == [stored]
    assert temp.parent == store.temp_dir()
    assert store.temp_dir().stat().st_dev == store.root.stat().st_dev


def test_put_replaces_atomically_and_syncs_file_then_folder(
    store: StudyStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    uids: dict[str, Any] = {
        "study_instance_uid": STUDY,
        "series_instance_uid": SERIES,
        "sop_instance_uid": SOP,
    }
    store.put(received_file(store, b"old"), **uids)
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(descriptor: int) -> None:
        events.append("fsync " + Path(os.readlink(f"/proc/self/fd/{descriptor}")).name)
        real_fsync(descriptor)

    def replace(source: str | os.PathLike[str], target: str | os.PathLike[str]) -> None:
        events.append("replace")
        real_replace(source, target)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    temp = received_file(store, b"new")
    stored = store.put(temp, **uids)
    assert stored.read_bytes() == b"new"
    # The data reach the disk before the name points at them; then the folder entry.
    assert events == [f"fsync {temp.name}", "replace", f"fsync {SERIES}"]


def test_a_flush_started_early_is_waited_for_not_repeated(
    store: StudyStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    uids: dict[str, Any] = {
        "study_instance_uid": STUDY,
        "series_instance_uid": SERIES,
        "sop_instance_uid": SOP,
    }
    store.put(received_file(store, b"old"), **uids)  # the folders exist from here on
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace
    release = threading.Event()

    def fsync(descriptor: int) -> None:
        name = Path(os.readlink(f"/proc/self/fd/{descriptor}")).name
        if name.endswith(".part"):
            release.wait(5)  # a slow disk: put() must wait for this flush
        events.append("fsync " + name)
        real_fsync(descriptor)

    def replace(source: str | os.PathLike[str], target: str | os.PathLike[str]) -> None:
        events.append("replace")
        real_replace(source, target)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    temp = received_file(store, b"new")
    synced = store.sync_soon(temp)
    threading.Timer(0.2, release.set).start()
    stored = store.put(temp, **uids, synced=synced)
    assert stored.read_bytes() == b"new"
    assert events == [f"fsync {temp.name}", "replace", f"fsync {SERIES}"]


def test_a_failed_early_flush_leaves_the_store_unchanged(
    store: StudyStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_fsync = os.fsync

    def fsync(descriptor: int) -> None:
        if os.readlink(f"/proc/self/fd/{descriptor}").endswith(".part"):
            raise OSError(5, "Input/output error")
        real_fsync(descriptor)

    monkeypatch.setattr(os, "fsync", fsync)
    temp = received_file(store, b"new")
    synced = store.sync_soon(temp)
    with pytest.raises(OSError, match="Input/output error"):
        store.put(
            temp,
            study_instance_uid=STUDY,
            series_instance_uid=SERIES,
            sop_instance_uid=SOP,
            synced=synced,
        )
    assert store.instance_path(STUDY, SERIES, SOP) is None
    assert temp.exists()


def test_a_new_study_folder_is_made_durable_in_its_parent(
    store: StudyStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(descriptor: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{descriptor}"))
        real_fsync(descriptor)

    monkeypatch.setattr(os, "fsync", fsync)
    store.put(
        received_file(store, b"x"),
        study_instance_uid=STUDY,
        series_instance_uid=SERIES,
        sop_instance_uid=SOP,
    )
    folders = [Path(path) for path in synced if not path.endswith(".part")]
    assert folders == [store.root, store.root / STUDY, store.root / STUDY / SERIES]


@pytest.mark.parametrize(
    "uid",
    ["..", "../../etc", "/etc/passwd", "1.2/../3", "1.2.", ".1.2", "1..2", "", "1.2.3a", "1" * 65],
)
def test_hostile_uids_never_become_paths(store: StudyStore, uid: str) -> None:
    temp = received_file(store, b"x")
    with pytest.raises(ValueError, match="uid"):
        store.put(temp, study_instance_uid=uid, series_instance_uid=SERIES, sop_instance_uid=SOP)
    with pytest.raises(ValueError, match="sop_instance_uid"):
        store.put(temp, study_instance_uid=STUDY, series_instance_uid=SERIES, sop_instance_uid=uid)
    assert store.instance_path(uid, SERIES, SOP) is None
    assert temp.exists()  # nothing moved
    assert sorted(path.name for path in store.root.iterdir()) == [".incoming", ".locks"]


def test_check_uid_accepts_a_64_character_uid() -> None:
    uid = "1." + "2" * 62
    assert check_uid(uid, "uid") == uid


def test_stale_temp_files_are_removed(store: StudyStore) -> None:
    old, fresh = received_file(store, b"old"), received_file(store, b"fresh")
    an_hour_ago = time.time() - 3600
    os.utime(old, (an_hour_ago, an_hour_ago))
    assert store.remove_stale_temp_files(older_than_s=600) == 1
    assert not old.exists() and fresh.exists()


def test_instance_lock_excludes_other_holders_of_the_same_uid(store: StudyStore) -> None:
    order: list[str] = []
    entered = threading.Event()

    def second() -> None:
        entered.wait(5)
        with store.instance_lock(SOP):
            order.append("second")

    thread = threading.Thread(target=second)
    thread.start()
    with store.instance_lock(SOP):
        entered.set()
        time.sleep(0.2)
        order.append("first")
    thread.join(5)
    assert order == ["first", "second"]


def test_a_closed_store_still_flushes_before_moving(store: StudyStore) -> None:
    store.close()
    temp = received_file(store, b"late")
    synced = store.sync_soon(temp)
    assert synced.done() and synced.exception() is None
    stored = store.put(
        temp,
        study_instance_uid=STUDY,
        series_instance_uid=SERIES,
        sop_instance_uid=SOP,
        synced=synced,
    )
    assert stored.read_bytes() == b"late"
