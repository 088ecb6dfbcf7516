"""HDF5 dumps: round trip, provenance, byte-identical rewrites, clear errors, atomic writes."""
import h5py
import numpy as np
import pytest

from advpipe.io.atomic import atomic_path
from advpipe.io.h5 import DumpError, provenance, read_attrs, read_dump, write_dump


def test_round_trip_and_provenance(tmp_path):
    arrays = {"index": np.arange(5), "features": np.random.default_rng(0).normal(size=(5, 3000)).astype("f4")}
    attrs = provenance({"a": 1}, seed=7)
    write_dump(tmp_path / "d.h5", arrays, attrs)
    back = read_dump(tmp_path / "d.h5")
    np.testing.assert_array_equal(back["features"], arrays["features"])
    meta = read_attrs(tmp_path / "d.h5")
    assert meta["seed"] == 7 and meta["config"] == '{"a": 1}' and len(meta["config_sha256"]) == 64
    assert "advpipe_version" in meta and "git_commit" in meta


def test_same_content_same_bytes(tmp_path):
    arrays = {"index": np.arange(100), "x": np.ones((100, 50), "f4")}
    write_dump(tmp_path / "a.h5", arrays, provenance({}, 0))
    write_dump(tmp_path / "b.h5", arrays, provenance({}, 0))
    assert (tmp_path / "a.h5").read_bytes() == (tmp_path / "b.h5").read_bytes()


def test_misaligned_arrays_refused(tmp_path):
    with pytest.raises(ValueError, match="aligned"):
        write_dump(tmp_path / "x.h5", {"a": np.zeros(3), "b": np.zeros(4)}, {})
    assert not (tmp_path / "x.h5").exists()


def test_errors_name_the_file(tmp_path):
    with pytest.raises(DumpError, match="nope.h5: file does not exist"):
        read_dump(tmp_path / "nope.h5")
    write_dump(tmp_path / "d.h5", {"index": np.arange(3)}, {})
    with pytest.raises(DumpError, match=r"d.h5: missing dataset\(s\) \['features'\]"):
        read_dump(tmp_path / "d.h5", ["features"])
    data = (tmp_path / "d.h5").read_bytes()
    (tmp_path / "t.h5").write_bytes(data[: len(data) // 3])
    with pytest.raises(DumpError, match="t.h5"):
        read_dump(tmp_path / "t.h5")


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.h5"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            with h5py.File(tmp, "w") as f:
                f["x"] = np.zeros(3)
            raise RuntimeError("killed mid-write")
    assert list(tmp_path.iterdir()) == []
