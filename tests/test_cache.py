"""The kernel cache is dropped when any kernel source changes (Numba alone only
notices a change in the kernel's own file, not in the helpers it inlines)."""
import os

from fastconv.kernels import cpu


def test_stale_cache_is_dropped(tmp_path):
    src, cache = tmp_path / "src", tmp_path / "cache"
    src.mkdir()
    (src / "kernel.py").write_text("x = 1\n")
    (src / "helper.py").write_text("y = 1\n")
    cpu._drop_stale_cache(str(src), str(cache))          # first run: writes the stamp
    stamp = (cache / "fastconv-sources.sha256").read_text()
    for name in ("kernel.f-1.py311.nbi", "kernel.f-1.py311.1.nbc", "keep.txt"):
        (cache / name).write_text("cached")
    cpu._drop_stale_cache(str(src), str(cache))          # unchanged: cache kept
    assert sorted(os.listdir(cache)) == ["fastconv-sources.sha256", "keep.txt",
                                         "kernel.f-1.py311.1.nbc", "kernel.f-1.py311.nbi"]
    (src / "helper.py").write_text("y = 2\n")            # a helper changed: kernels dropped
    cpu._drop_stale_cache(str(src), str(cache))
    assert sorted(os.listdir(cache)) == ["fastconv-sources.sha256", "keep.txt"]
    assert (cache / "fastconv-sources.sha256").read_text() != stamp


def test_cache_stamp_matches_the_installed_sources():
    from numba.core.caching import FunctionCache
    cache_dir = FunctionCache(cpu._cache_probe)._cache_path
    before = open(os.path.join(cache_dir, "fastconv-sources.sha256")).read()
    cpu._drop_stale_cache(os.path.dirname(cpu.__file__), cache_dir)
    assert open(os.path.join(cache_dir, "fastconv-sources.sha256")).read() == before
