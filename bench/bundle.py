"""The GPU bundle: what a bare PyTorch machine lacks to run `bench/gpu.py`, installed there without network.

    python bench/bundle.py --python-version 3.12 --out gpu-bundle     # `make gpu-bundle`

Writes to OUT:
* wheels/: the packages below at constraints.txt's versions, for manylinux x86-64 and that CPython
  (binary wheels only; the few pure-Python packages published only as sources are built here into
  py3-none-any wheels), plus pip itself, so the machine needs no pip of its own;
* src/: our sources, `speech_service` and `bench`;
* run.sh (bench/run_bundle.sh): installs the wheels with `pip install --no-index --no-deps --target`
  into a scratch folder (the machine's torch is used as it is; its torchaudio and numpy too when it
  has them) and runs bench/gpu.py end to end, writing the result files to the folder it is given.
Fails if the bundle is over 64 MiB (what travels with the working tree to a GPU machine).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LIMIT_BYTES = 64 * 2**20
PLATFORMS = ("manylinux2014_x86_64", "manylinux_2_28_x86_64")
# What the engine, its config and text pipeline, f5-tts's model code and Vocos import, beyond torch and
# torch's own dependencies (filelock, fsspec, jinja2, networkx, sympy, typing-extensions, triton, CUDA).
PACKAGES = (
    "numpy", "PyYAML", "packaging", "tqdm",
    "pydantic", "pydantic_core", "annotated-types", "typing-inspection",  # speech_service.config
    "soundfile", "cffi", "pycparser",  # speech_service.audio
    "num2words", "cn2an", "proces", "pypinyin", "rjieba",  # the text pipeline and f5-tts's tokenizer
    "f5-tts", "omegaconf", "antlr4-python3-runtime", "torchdiffeq", "safetensors", "torchaudio",
    "x-transformers", "einops", "einx", "frozendict", "loguru", "torch-einops-utils",  # f5-tts's DiT
    "vocos", "encodec", "huggingface_hub", "httpx", "httpcore", "h11", "anyio", "idna", "certifi",  # Vocos
    "pydub",  # f5-tts's utils_infer, for the engine's ratio against it (bench/f5_reference.py)
)
BUILT_HERE = ("antlr4-python3-runtime", "encodec")  # no wheels published; pure Python
SOURCES = ("speech_service", "bench")


def pins(constraints: Path = REPO / "constraints.txt") -> dict[str, str]:
    """constraints.txt's `name==version` lines, by normalised name."""
    found = {}
    for line in constraints.read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==", 1)
            found[normalise(name)] = version.strip()
    return found


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", *args, "--quiet", "--disable-pip-version-check"], check=True)


def download(requirements: list[str], python_version: str, wheels: Path) -> None:
    """Binary wheels for the target in one pip call; the packages published only as sources
    (`BUILT_HERE`) are built here into wheels, which must be pure Python."""
    built_here = [r for r in requirements if normalise(r.split("==")[0]) in BUILT_HERE]
    target = ["--only-binary", ":all:", "--python-version", python_version, "--implementation", "cp",
              *[arg for platform in PLATFORMS for arg in ("--platform", platform)]]
    pip("download", "--no-deps", *target, "--dest", str(wheels), *[r for r in requirements if r not in built_here])
    pip("wheel", "--no-deps", "--wheel-dir", str(wheels), *built_here)
    impure = [w.name for w in wheels.glob("*.whl") if not fits(w.name, python_version)]
    if impure:
        raise SystemExit(f"wheels that do not fit CPython {python_version} on manylinux x86-64: {impure}")


def fits(wheel: str, python_version: str) -> bool:
    """Whether a wheel installs on that CPython on manylinux x86-64 (pip picked the downloads so; this
    guards the wheels built here)."""
    pythons, abi, platforms = wheel[:-4].split("-")[-3:]
    cp = "cp" + python_version.replace(".", "")
    python_ok = any(p in (cp, "py3") or (abi == "abi3" and p.startswith("cp3")) for p in pythons.split("."))
    return python_ok and all(p == "any" or p.startswith("manylinux") and p.endswith("x86_64")
                             for p in platforms.split("."))


def copy_sources(src: Path) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "results")
    for name in SOURCES:
        shutil.copytree(REPO / name, src / name, ignore=ignore)


def build(python_version: str, out: Path) -> int:
    if out.exists():
        shutil.rmtree(out)
    wheels = out / "wheels"
    wheels.mkdir(parents=True)
    versions = pins()
    download([f"{name}=={versions[normalise(name)]}" for name in PACKAGES] + ["pip"], python_version, wheels)
    copy_sources(out / "src")
    shutil.copy2(REPO / "bench" / "run_bundle.sh", out / "run.sh")
    (out / "python-version").write_text(python_version + "\n")  # run.sh refuses another Python
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    for wheel in wheels.glob("*.whl"):
        zipfile.ZipFile(wheel).testzip()
    return size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--python-version", default="3.12", help="the GPU machine's Python, e.g. 3.12")
    parser.add_argument("--out", type=Path, default=REPO / "gpu-bundle")
    args = parser.parse_args()
    size = build(args.python_version, args.out)
    print(f"{args.out}: {size / 2**20:.1f} MiB for CPython {args.python_version}")
    if size > LIMIT_BYTES:
        raise SystemExit(f"over {LIMIT_BYTES / 2**20:.0f} MiB: it would not travel to a GPU machine")


if __name__ == "__main__":
    main()
