"""Lock each service's own dependency set, with hashes, for its image.

For every service it compiles the service's pyproject dependencies, with the library extras the
service asks for, into ``deploy/images/<service>/requirements.txt``: every package pinned to the
version in constraints.txt (the checkout's lock) and every file's sha256, so ``pip install
--require-hashes`` installs exactly what was tested. The project's own packages are not in it; an
image installs their wheels with ``--no-deps`` after the lock. Run by ``make lock``.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LIBRARY = "libs/circadia"
SERVICES = {"ingest-gateway": "services/ingest_gateway",
            "prediction-worker": "services/prediction_worker",
            "fanout-gateway": "services/fanout_gateway"}
# the image's target: CPython 3.11 on glibc x86_64 (python:3.11-slim-bookworm)
PLATFORM = ["--python-version", "3.11", "--python-platform", "x86_64-manylinux_2_28"]


def library_extras(package: str) -> str:
    """The ``[extras]`` of the service's requirement on the library, as written."""
    project = tomllib.loads((ROOT / package / "pyproject.toml").read_text())["project"]
    for requirement in project["dependencies"]:
        match = re.fullmatch(r"circadia(\[[a-z,]+\])?==.*", requirement)
        if match:
            return match.group(1) or ""
    raise SystemExit(f"{package} does not depend on the circadia library")


def lock(service: str, package: str, uv: str) -> Path:
    project = tomllib.loads((ROOT / package / "pyproject.toml").read_text())["project"]
    out = ROOT / "deploy" / "images" / service / "requirements.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    sources = f"./{LIBRARY}{library_extras(package)}\n./{package}\n"
    subprocess.run([uv, "pip", "compile", "--quiet", "--generate-hashes", *PLATFORM, "-c", "constraints.txt",
                    "--no-emit-package", "circadia", "--no-emit-package", project["name"],
                    "--custom-compile-command", "make lock", "-o", str(out), "-"],
                   input=sources, text=True, cwd=ROOT, check=True)
    return out


def lock_build_backend(uv: str) -> Path:
    """setuptools and wheel, hashed, for building the project's own wheels without build isolation
    (an isolated build would fetch the backend unpinned)."""
    out = ROOT / "deploy" / "images" / "build-requirements.txt"
    subprocess.run([uv, "pip", "compile", "--quiet", "--generate-hashes", *PLATFORM,
                    "--custom-compile-command", "make lock", "-o", str(out), "-"],
                   input="setuptools>=69\nwheel\n", text=True, cwd=ROOT, check=True)
    return out


def main() -> int:
    uv = str(Path(sys.executable).with_name("uv"))
    lock_build_backend(uv)
    for service, package in SERVICES.items():
        out = lock(service, package, uv)
        count = sum(1 for line in out.read_text().splitlines() if re.match(r"^[A-Za-z0-9]", line))
        print(f"{out.relative_to(ROOT)}: {count} packages")
    return 0


if __name__ == "__main__":
    sys.exit(main())
