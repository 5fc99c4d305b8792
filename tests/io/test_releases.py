import threading

import pytest

from plada_core.io import leases, releases, storage


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
    assert leases.current(storage.join(root, "tasks", "t", ".lease"))["released"]


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


def test_a_client_resolves_the_current_release_from_the_folder_or_its_pointer(storage_root):
    releases.write_release(storage_root, "digits", "v1", {"payload_url": "s3://publisher/elsewhere.plada"})
    releases.promote(storage_root, "digits", "v1")
    folder = storage.join(storage_root, "tasks", "digits")
    for given in (folder, folder + "/", storage.join(folder, "latest.json")):
        current = releases.current_release(given)
        assert (current["task"], current["version"]) == ("digits", "v1")
        assert current["payload_url"] == storage.join(folder, "v1", "payload.plada"), "beside the pointer"
        assert current["latest_url"] == storage.join(folder, "latest.json")
    assert releases.client_version_url("/out", "digits", "v1").endswith("/out/digits/v1")


def test_a_release_url_without_a_pointer_names_the_url_and_the_fix(storage_root):
    with pytest.raises(FileNotFoundError, match=r"no release at .*nothing.*latest.json does not exist.*ROOT/tasks"):
        releases.current_release(storage.join(storage_root, "tasks", "nothing"))


def test_a_forged_pointer_version_is_refused(tmp_path):
    storage.write_json(str(tmp_path / "tasks" / "t" / "latest.json"), {"task": "t", "version": "../../etc"})
    with pytest.raises(ValueError, match="not a valid name"):
        releases.current_release(str(tmp_path / "tasks" / "t"))
