"""The packages' boundaries: what imports what, and what each image is built from."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from circadia_dev.paths import PROJECT_ROOT

SERVICES = {"ingest_gateway": "ingest-gateway", "prediction_worker": "prediction-worker",
            "fanout_gateway": "fanout-gateway"}
PACKAGES = {"circadia": PROJECT_ROOT / "libs" / "circadia", "circadia_dev": PROJECT_ROOT / "libs" / "circadia_dev",
            **{package: PROJECT_ROOT / "services" / package for package in SERVICES}}


def imported_packages(folder: Path) -> dict[str, set[str]]:
    """Top-level names each module imports, at any depth of the file (lazy imports count)."""
    found: dict[str, set[str]] = {}
    for path in folder.rglob("*.py"):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
        found[str(path.relative_to(PROJECT_ROOT))] = names
    return found


def test_no_library_imports_a_service_or_the_development_package() -> None:
    for module, names in imported_packages(PACKAGES["circadia"]).items():
        assert not names & (set(SERVICES) | {"circadia_dev"}), f"{module} imports {names & set(SERVICES)}"


def test_a_service_imports_only_the_library_and_itself() -> None:
    for package in SERVICES:
        others = (set(SERVICES) - {package}) | {"circadia_dev"}
        for module, names in imported_packages(PACKAGES[package]).items():
            assert not names & others, f"{module} imports {names & others}"


def test_the_development_package_runs_the_services_without_importing_them() -> None:
    for module, names in imported_packages(PACKAGES["circadia_dev"]).items():
        assert not names & set(SERVICES), f"{module} imports {names & set(SERVICES)}"


def project(package: str) -> dict:
    return tomllib.loads((PACKAGES[package] / "pyproject.toml").read_text())["project"]


def requirement_name(requirement: str) -> str:
    return re.split(r"[\[=<>!~; ]", requirement, maxsplit=1)[0].lower()


def third_party(names: set[str]) -> set[str]:
    return {name for name in names if name not in sys.stdlib_module_names and name not in PACKAGES}


# import name -> distribution, where they differ
DISTRIBUTIONS = {"jwt": "pyjwt", "faust": "faust-streaming", "prometheus_client": "prometheus-client",
                 "pydantic_settings": "pydantic-settings", "sentry_sdk": "sentry-sdk", "opentelemetry": "opentelemetry",
                 "pydantic_core": "pydantic"}


def declared(package: str) -> set[str]:
    """Distributions a package may import: its own dependencies, with the library's (and the
    extras it asks for) when it depends on the library."""
    meta = project(package)
    names = {requirement_name(r) for r in meta["dependencies"]}
    library = project("circadia")
    if package == "circadia":
        names |= {requirement_name(r) for extra in library["optional-dependencies"].values() for r in extra}
    for requirement in meta["dependencies"]:
        match = re.fullmatch(r"circadia(?:\[([a-z,]+)\])?==.*", requirement)
        if match:
            names |= {requirement_name(r) for r in library["dependencies"]}
            for extra in (match.group(1) or "").split(","):
                names |= {requirement_name(r) for r in library["optional-dependencies"].get(extra, [])}
    return names | {name.split("-")[0] for name in names if name.startswith("opentelemetry")}


@pytest.mark.parametrize("package", ["circadia", *SERVICES])
def test_every_import_is_a_declared_dependency(package: str) -> None:
    allowed = declared(package)
    for module, names in imported_packages(PACKAGES[package]).items():
        for name in third_party(names):
            distribution = DISTRIBUTIONS.get(name, name.replace("_", "-"))
            assert distribution in allowed, f"{module} imports {name}, which {package}'s pyproject does not declare"


def pins_of(path: Path) -> dict[str, str]:
    """name -> version of each ``name==version`` line, names normalised (PEP 503)."""
    return {re.sub(r"[-_.]+", "-", m.group(1)).lower(): m.group(2)
            for m in re.finditer(r"^([A-Za-z0-9_.-]+)==(\S+)", path.read_text(), re.M)}


@pytest.mark.parametrize("package", SERVICES)
def test_each_image_lock_pins_its_set_with_hashes_at_the_checkouts_versions(package: str) -> None:
    service = SERVICES[package]
    text = (PROJECT_ROOT / "deploy" / "images" / service / "requirements.txt").read_text()
    pins = pins_of(PROJECT_ROOT / "deploy" / "images" / service / "requirements.txt")
    entries = re.findall(r"^[A-Za-z0-9_.-]+==\S+((?:\s*\\\n\s+--hash=sha256:[0-9a-f]{64})+)", text, re.M)
    assert len(entries) == len(pins), "every pin carries its hashes (make lock)"
    constraints = pins_of(PROJECT_ROOT / "constraints.txt")
    for name, version in pins.items():
        assert constraints.get(name) == version, f"{service}: {name} {version} vs {constraints.get(name)}"
    needed = declared(package) - {"circadia", "opentelemetry"}
    assert needed <= set(pins), f"{service}'s lock lacks {needed - set(pins)}: run make lock"


@pytest.mark.parametrize("service", SERVICES.values())
def test_each_dockerfile_installs_its_hashed_set_and_runs_unprivileged(service: str) -> None:
    package = service.replace("-", "_")
    text = (PROJECT_ROOT / "deploy" / "images" / service / "Dockerfile").read_text()
    assert text.count("FROM ") >= 2, "multi-stage"
    assert "-r /tmp/requirements.txt" in text and "--require-hashes" in text and "--only-binary=:all:" in text
    assert f"COPY deploy/images/{service}/requirements.txt" in text
    assert "--no-deps --no-index" in text, "the project's own wheels bring no unpinned dependency"
    assert f"COPY services/{package} " in text
    assert not set(SERVICES) - {package} & set(re.findall(r"services/(\w+)", text)), "another service's code"
    assert "libs/circadia_dev" not in text and "constraints.txt" not in text
    final = text.rsplit("\nFROM ", 1)[1]
    assert re.search(r"^USER 10001(:10001)?$", final, re.M), "runs as a non-root user"
    assert f'ENTRYPOINT ["python", "-m", "{package}"]' in final


def test_compose_runs_each_service_from_its_own_image() -> None:
    compose = yaml.safe_load((PROJECT_ROOT / "docker-compose.yml").read_text())["services"]
    for service in SERVICES.values():
        build = compose[service]["build"]
        assert build["dockerfile"] == f"deploy/images/{service}/Dockerfile"
        assert compose[service]["image"].startswith(f"circadia/{service}:")
        assert compose[service]["read_only"] is True
    assert compose["init"]["build"]["dockerfile"] == "deploy/images/dev/Dockerfile"


def test_the_build_context_leaves_out_local_state() -> None:
    ignored = (PROJECT_ROOT / ".dockerignore").read_text().split()
    assert {".git", ".venv", ".local", ".cache", "**/node_modules"} <= set(ignored)
