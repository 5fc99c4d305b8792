import threading

import pytest

from plada_core.io import releases, storage


def test_latest_moves_only_to_released_versions(tmp_path):
    root = str(tmp_path)
    assert releases.read_latest(root, "t") is None
    with pytest.raises(RuntimeError, match="not released"):
        releases.promote(root, "t", "v1")
    releases.write_release(root, "t", "v1", {"payload_url": "p1"})
    assert releases.promote(root, "t", "v1")["payload_url"] == "p1"
    assert releases.read_latest(root, "t")["version"] == "v1"


@pytest.mark.parametrize("bad", ["", "a b", "../x", "x/y", ".hidden"])
def test_names_that_are_not_path_segments_are_refused(tmp_path, bad):
    with pytest.raises(ValueError, match="not a valid name"):
        releases.version_url(str(tmp_path), "task", bad)


def test_lock_excludes_a_second_holder_and_is_released(tmp_path):
    root = str(tmp_path)
    with releases.task_lock(root, "t", owner="first"):
        with pytest.raises(releases.LockHeld, match="held by .*first"):
            with releases.task_lock(root, "t", owner="second"):
                pass
    with releases.task_lock(root, "t", owner="third"):
        pass
    assert not storage.exists(storage.join(root, "tasks", "t", ".lock"))


def test_concurrent_holders_never_overlap(tmp_path):
    root, inside, overlaps = str(tmp_path), [], []

    def worker(name):
        with releases.task_lock(root, "t", owner=name, wait_s=30, poll_s=0.01):
            inside.append(name)
            if len(inside) > 1:
                overlaps.append(list(inside))
            threading.Event().wait(0.05)
            inside.remove(name)

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert overlaps == []
