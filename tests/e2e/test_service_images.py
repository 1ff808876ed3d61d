"""Each service from its own dependency set, as its image installs it.

For each service a virtualenv gets exactly what its Dockerfile installs: the hashed lock
``deploy/images/<service>/requirements.txt`` (``--require-hashes``, wheels only), then the wheels
of the library and the service built with the hashed build backend, without dependencies. Then:
the set is complete (``pip check``), every module of the service imports, nothing of another
service, the development package or the test tools is there, and the three services, each on its
own interpreter, take an upload to a user's socket against the suite's Kafka and Redis.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from circadia_dev.devstack.stack import LocalStack
from circadia_dev.paths import PROJECT_ROOT
from tests.e2e.conftest import new_stack, next_prediction, open_socket, post, upload_body

pytestmark = pytest.mark.integration

IMAGES = PROJECT_ROOT / "deploy" / "images"
PYTHON = os.environ.get("PYTHON", "python3.11")
SERVICES = {"ingest-gateway": "ingest_gateway", "prediction-worker": "prediction_worker",
            "fanout-gateway": "fanout_gateway"}
# what each set must not hold: the other services' own dependencies, and development tools
ABSENT = {
    "ingest-gateway": {"faust-streaming", "numpy", "h5py", "websockets", "orjson", "purgatory"},
    "prediction-worker": {"starlette", "uvicorn", "limits", "websockets", "redis", "pyjwt"},
    "fanout-gateway": {"faust-streaming", "numpy", "h5py", "starlette", "uvicorn", "limits"},
}
DEVELOPMENT = {"circadia-dev", "pytest", "playwright", "hypothesis", "testcontainers", "coverage", "pip-tools"}


def run(*command: str | Path, cwd: Path = PROJECT_ROOT) -> str:
    result = subprocess.run([str(part) for part in command], cwd=cwd, capture_output=True, text=True,
                            env={key: value for key, value in os.environ.items() if key != "PYTHONPATH"})
    assert result.returncode == 0, f"{' '.join(map(str, command))} failed:\n{result.stdout}{result.stderr}"
    return result.stdout


def venv(path: Path) -> Path:
    run(PYTHON, "-m", "venv", path)
    return path / "bin" / "python"


@pytest.fixture(scope="module")
def interpreters(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The Python of each service's own virtualenv, installed as deploy/images/<service>/Dockerfile does."""
    root = tmp_path_factory.mktemp("images")
    build = venv(root / "build")
    run(build, "-m", "pip", "install", "--quiet", "--require-hashes", "-r", IMAGES / "build-requirements.txt")
    # the sources as the image's build context has them (.dockerignore), so no build output lands in the checkout
    sources = [PROJECT_ROOT / "libs" / "circadia", *(PROJECT_ROOT / "services" / p for p in SERVICES.values())]
    ignored = shutil.ignore_patterns("__pycache__", "*.egg-info", "build", "node_modules")
    for source in sources:
        shutil.copytree(source, root / "src" / source.name, ignore=ignored)
    wheels = root / "wheels"
    run(build, "-m", "pip", "wheel", "--quiet", "--no-build-isolation", "--no-deps", "-w", wheels,
        *(root / "src" / source.name for source in sources))

    def install(service: str) -> Path:
        python = venv(root / service)
        run(python, "-m", "pip", "install", "--quiet", "--require-hashes", "--only-binary=:all:",
            "-r", IMAGES / service / "requirements.txt")
        ours = [next(wheels.glob("circadia-0.1.0-*.whl")),
                next(wheels.glob(f"circadia_{service.replace('-', '_')}-0.1.0-*.whl"))]
        run(python, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", *ours)
        return python

    with ThreadPoolExecutor(len(SERVICES)) as pool:
        return dict(zip(SERVICES, pool.map(install, SERVICES), strict=True))


def installed(python: Path) -> set[str]:
    listing = run(python, "-m", "pip", "list", "--format=freeze")
    return {line.split("==")[0].lower() for line in listing.splitlines()}


@pytest.mark.parametrize("service", SERVICES)
def test_each_set_is_complete_and_its_own(interpreters: dict[str, Path], service: str) -> None:
    python = interpreters[service]
    run(python, "-m", "pip", "check")
    names = installed(python)
    assert {"circadia", f"circadia-{service}"} <= names
    assert names & (ABSENT[service] | DEVELOPMENT) == set()
    assert not names & {f"circadia-{other}" for other in SERVICES if other != service}


@pytest.mark.parametrize("service", SERVICES)
def test_every_module_of_the_service_imports_from_its_set(interpreters: dict[str, Path], service: str) -> None:
    package = SERVICES[service]
    script = f"""
import importlib, pkgutil, {package}, circadia
for module in pkgutil.walk_packages({package}.__path__, "{package}."):
    importlib.import_module(module.name)
for module in pkgutil.walk_packages(circadia.__path__, "circadia."):
    if module.name not in ("circadia.http", "circadia.ratelimit", "circadia.idempotency", "circadia.redis_client",
                           "circadia.auth"):
        importlib.import_module(module.name)  # the library's core needs no extra
print({package}.__file__)
"""
    where = run(interpreters[service], "-c", script, cwd=Path("/")).strip()
    assert where.startswith(str(interpreters[service].parents[1])), f"{package} imported from {where}"
    probe = subprocess.run([interpreters[service], "-c", "import circadia_dev"], capture_output=True, cwd="/")
    assert probe.returncode != 0, "the development package is importable from a service's set"


def test_operator_commands_ship_with_every_service(interpreters: dict[str, Path]) -> None:
    for service, python in interpreters.items():
        assert "dlq" in run(python.with_name("circadia-ops"), "--help"), service
    assert "--partition" in run(interpreters["prediction-worker"], "-m", "prediction_worker", "rewind", "--help")


@pytest.mark.parametrize("service", SERVICES)
def test_each_service_checks_its_configuration_from_its_set(interpreters: dict[str, Path], service: str,
                                                            tmp_path: Path) -> None:
    env = {"PATH": os.environ["PATH"], "CIRCADIA_SCHEMAS_DIR": str(PROJECT_ROOT / "schemas"),
           "CIRCADIA_SECRETS_DIR": str(tmp_path), "CIRCADIA_ENV": "production",
           "CIRCADIA_FIREBASE_PROJECT_ID": "circadia-prod"}
    result = subprocess.run([interpreters[service], "-m", SERVICES[service], "check-config"], env=env,
                            capture_output=True, text=True, cwd="/")
    assert result.returncode == 1, result.stdout + result.stderr  # production without its settings refuses
    assert "PROBLEM" in result.stdout and "refuses to start" in result.stdout


@pytest.fixture(scope="module")
def image_stack(interpreters: dict[str, Path], kafka_bootstrap: str, redis_url: str,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    import dataclasses

    stack = new_stack(tmp_path_factory.mktemp("image-stack"), kafka_bootstrap, redis_url)
    stack = dataclasses.replace(
        stack, interpreters=tuple((service, str(python)) for service, python in interpreters.items()),
        overrides=(*stack.overrides, ("CIRCADIA_SCHEMAS_DIR", str(PROJECT_ROOT / "schemas"))))
    try:
        stack.up(report=lambda line: None)
        yield stack
    finally:
        stack.down()


def command_of(stack: LocalStack, service: str) -> list[str]:
    pid = stack.process(service).pid()
    assert pid is not None, f"{service} is not running"
    return Path(f"/proc/{pid}/cmdline").read_text().rstrip("\0").split("\0")


async def test_the_services_on_their_own_sets_take_an_upload_to_the_socket(image_stack: LocalStack) -> None:
    for service, python in image_stack.interpreters:
        assert command_of(image_stack, service)[0] == python, service
    ws = await open_socket(image_stack, "image-user")
    try:
        answer = await post(image_stack, "image-user", upload_body([10, 20, 30]))
        assert answer.status_code == 202, answer.text
        prediction = await next_prediction(ws, timeout=60)
        assert prediction["prediction"]["source_upload_ids"] == [answer.json()["upload_id"]]
    finally:
        await ws.close()
    async with httpx.AsyncClient(timeout=5) as client:
        page = await client.get(f"http://127.0.0.1:{image_stack.ports.fanout}/app/vendor/uPlot.iife.min.js")
    assert page.status_code == 200 and len(page.content) > 10_000  # the page's vendored files are in the wheel


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
