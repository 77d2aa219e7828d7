"""Shared helpers for bench/ scripts: locate ../shared/data, describe the machine, write BENCHMARKS.md."""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from ptz_pipeline.datasets import REPO_ROOT, SHARED_DATA

BENCHMARKS_MD = REPO_ROOT / "BENCHMARKS.md"


def shared_data() -> Path:
    """../shared/data beside the checkout; exits with a clear message when it is absent."""
    if not SHARED_DATA.is_dir():
        sys.exit(f"external data not found at {SHARED_DATA} (expected ../shared/data beside the checkout)")
    return SHARED_DATA


def machine_description() -> str:
    """One line: CPU model, logical cores, Python, torch version and device."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            m = re.search(r"model name\s*:\s*(.+)", f.read())
            cpu = m.group(1).strip() if m else cpu
    except OSError:
        pass
    parts = [cpu, f"{os.cpu_count()} logical cores", f"Python {platform.python_version()}"]
    try:
        import torch

        dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU only"
        parts.append(f"torch {torch.__version__} ({dev}, {torch.get_num_threads()} threads)")
    except ImportError:
        pass
    return ", ".join(parts)


def markdown_table(headers: list[str], rows: list[list[object]]) -> str:
    """A GitHub-markdown table; floats are printed with 4 significant digits."""

    def cell(v: object) -> str:
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def write_section(name: str, command: str, body: str) -> None:
    """Replace (or append) the section ``name`` of BENCHMARKS.md with the command, machine and ``body``."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        commit = ""
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    start, end = f"<!-- section:{name} -->", f"<!-- /section:{name} -->"
    section = "\n".join(
        [
            start,
            f"## {name}",
            "",
            f"- command: `{command}`",
            f"- machine: {machine_description()}",
            f"- measured: {stamp}" + (f" at commit {commit}" if commit else ""),
            "",
            body.strip(),
            end,
        ]
    )
    text = BENCHMARKS_MD.read_text() if BENCHMARKS_MD.exists() else "# Benchmarks\n"
    pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.S)
    text = pattern.sub(lambda _: section, text) if pattern.search(text) else text.rstrip() + "\n\n" + section
    BENCHMARKS_MD.write_text(text.rstrip() + "\n")
    print(f"wrote section '{name}' of {BENCHMARKS_MD}")
