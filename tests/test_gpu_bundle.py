"""The GPU benchmark runs on a bare PyTorch machine with what the bundle carries (`make gpu-bundle`):
here, a Python that sees only torch, torch's own dependencies and the bundle's packages runs
`bench/gpu.py --device cpu --quick` to completion."""

import json
import os
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from conftest import REPO

sys.path.insert(0, str(REPO))
from bench.bundle import PACKAGES, fits, normalise, pins  # noqa: E402

# What `pip install torch` brings (its requirements and their CUDA libraries): a bare machine's.
TORCH_AND_ITS_OWN = ("torch", "filelock", "typing-extensions", "setuptools", "sympy", "mpmath", "networkx", "jinja2",
                     "markupsafe", "fsspec", "triton", "cuda-toolkit", "cuda-bindings", "cuda-pathfinder")


def bare_site(directory: Path) -> Path:
    """A site folder holding links to the files of only those distributions."""
    wanted = {normalise(n) for n in PACKAGES + TORCH_AND_ITS_OWN}
    directory.mkdir()
    for dist in metadata.distributions():
        name = normalise(dist.metadata["Name"])
        if name not in wanted and not name.startswith("nvidia-"):
            continue
        for top in {Path(str(f)).parts[0] for f in dist.files or []} - {"..", "__pycache__"}:
            link, target = directory / top, Path(dist.locate_file(top))
            if target.exists() and not link.exists():
                link.symlink_to(target)
    return directory


@pytest.mark.slow  # a process of its own that loads the tiny models (about 15 s)
def test_the_benchmark_runs_with_only_torch_and_the_bundles_packages(tmp_path):
    site = bare_site(tmp_path / "site")
    # -S: not this virtualenv's site-packages; the sources from the repository, as the bundle's src/
    env = {**os.environ, "PYTHONPATH": f"{site}{os.pathsep}{REPO}"}
    run = subprocess.run([sys.executable, "-S", str(REPO / "bench" / "gpu.py"), "--device", "cpu", "--quick",
                          "--concurrency", "1", "--out", str(tmp_path / "out"), "--models-dir", str(tmp_path / "m")],
                         env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    (result,) = (tmp_path / "out").glob("*-gpu-quick.json")
    result = json.loads(result.read_text())
    assert {r["mode"] for r in result["cases"]} == {"batched", "unbatched"}
    assert result["engine_vs_f5"][0]["engine_vs_f5"] > 0
    assert set(result["stood_in"]) >= {"scipy", "matplotlib", "transformers"}  # none of them travels


def test_every_bundled_package_is_pinned_and_wheels_are_checked_for_the_target():
    versions = pins()
    assert all(normalise(name) in versions for name in PACKAGES)
    assert fits("numpy-2.4.6-cp312-cp312-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl", "3.12")
    assert fits("rjieba-0.2.2-cp39-abi3-manylinux_2_17_x86_64.manylinux2014_x86_64.whl", "3.12")
    assert fits("encodec-0.1.1-py3-none-any.whl", "3.12")
    assert not fits("numpy-2.4.6-cp311-cp311-manylinux_2_28_x86_64.whl", "3.12")
    assert not fits("pkg-1.0-cp312-cp312-macosx_11_0_arm64.whl", "3.12")
    assert not re.search(r"\bscipy\b", " ".join(PACKAGES))  # 34 MB: stood in for (bench/bare.py)
