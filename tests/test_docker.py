"""docker/ checked statically (no Docker engine here): the compose file and the worker image."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

DOCKER = Path(__file__).resolve().parents[1] / "docker"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


def test_compose_has_postgres_server_worker_and_dataset_volume(compose):
    assert {"postgres", "server", "worker"} <= set(compose["services"])
    assert "dataset" in compose["volumes"]
    worker_mounts = compose["services"]["worker"]["volumes"]
    assert any(m.startswith("dataset:") for m in worker_mounts)


def test_server_uses_postgres_and_api_auth_from_environment(compose):
    env = compose["services"]["server"]["environment"]
    assert env["PREFECT_API_DATABASE_CONNECTION_URL"].startswith("postgresql+asyncpg://")
    assert "@postgres:" in env["PREFECT_API_DATABASE_CONNECTION_URL"]
    # the secret comes from the environment (and is required), never from the file
    assert re.fullmatch(r"\$\{PREFECT_API_AUTH_STRING:\?.+\}", env["PREFECT_SERVER_API_AUTH_STRING"])
    assert "server" in compose["services"]["server"]["command"]
    assert compose["services"]["server"]["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_worker_reserves_gpu_and_shared_memory(compose):
    worker = compose["services"]["worker"]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in devices)
    shm = worker["shm_size"]
    assert re.fullmatch(r"\d+gb", shm) and int(shm[:-2]) >= 8
    assert worker["environment"]["PREFECT_API_URL"] == "http://server:4200/api"
    assert worker["environment"]["PREFECT_API_AUTH_STRING"].startswith("${PREFECT_API_AUTH_STRING")
    assert worker["build"]["dockerfile"] == "docker/Dockerfile.worker"
    assert (DOCKER.parent / worker["build"]["context"].lstrip("./")).resolve() == DOCKER.parent.resolve() or worker[
        "build"
    ]["context"] == ".."


def test_worker_command_is_a_real_cli_invocation(compose):
    from flows.cli import build_parser

    cmd = compose["services"]["worker"]["command"]
    assert cmd[0] == "depthmine"
    argv = [re.sub(r"\$\{DEPTHMINE_CRON:-(.+)\}", r"\1", a) for a in cmd[1:]]
    args = build_parser().parse_args(argv)
    assert args.command == "serve" and args.cron == "0 3 * * *"


def test_dockerfile_uses_cuda_runtime_and_installs_the_project():
    text = (DOCKER / "Dockerfile.worker").read_text()
    base = re.search(r"^FROM\s+(\S+)", text, re.M).group(1)
    assert base.startswith("nvidia/cuda:") and "runtime" in base
    assert re.search(r"pip install .*'\.\[export\]'", text)
    assert "opencv-contrib-python" in text
    # every path the image copies exists in the repository
    for src in re.findall(r"^COPY\s+(.+?)\s+\S+$", text, re.M):
        for part in src.split():
            assert (DOCKER.parent / part).exists(), f"Dockerfile copies missing {part}"
