"""Run a benchmark against fastconv from another source tree (a checkout or a
``git worktree`` of an earlier commit): ``use_tree(path)`` before importing fastconv."""
import importlib.util
import os
import sys


def use_tree(tree):
    """Import fastconv and its kernels (the repository's kernels/) from ``tree``."""
    tree = os.path.abspath(tree)

    class Tree:
        def find_spec(self, name, path, target=None):
            where = {"fastconv": tree + "/fastconv", "fastconv.kernels": tree + "/kernels"}
            if name not in where:
                return None
            return importlib.util.spec_from_file_location(
                name, where[name] + "/__init__.py", submodule_search_locations=[where[name]])
    sys.meta_path.insert(0, Tree())
