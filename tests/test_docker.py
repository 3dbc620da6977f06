"""docker/ checked statically (no Docker engine here): the compose file and the worker image."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

DOCKER = Path(__file__).resolve().parents[1] / "docker"
ROOT = DOCKER.parent


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's variable interpolation of one value: ``$$``, ``${VAR}``, ``${VAR:-default}`` (nested), ``${VAR:?err}``.

    What `docker compose` does to the file before it starts anything (no Docker engine here).
    """
    out, i = [], 0
    while i < len(value):
        if value.startswith("$$", i):
            out.append("$")
            i += 2
        elif value.startswith("${", i):
            depth, j = 1, i + 2
            while depth:
                if value.startswith("${", j):
                    depth, j = depth + 1, j + 2
                else:
                    depth, j = depth - (value[j] == "}"), j + 1
            body = value[i + 2 : j - 1]
            name, op, rest = re.match(r"([A-Za-z_][A-Za-z0-9_]*)(:-|:\?|)?(.*)$", body, re.S).groups()
            if op == ":-":
                out.append(env[name] if env.get(name) else interpolate(rest, env))
            elif op == ":?":
                if not env.get(name):
                    raise KeyError(f"{name}: {rest}")
                out.append(env[name])
            else:
                out.append(env.get(name, ""))
            i = j
        else:
            out.append(value[i])
            i += 1
    return "".join(out)


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
    assert env["PREFECT_SERVER_DATABASE_DRIVER"] == "postgresql+asyncpg"
    assert env["PREFECT_SERVER_DATABASE_HOST"] == "postgres"
    # no URL is pasted together from a secret in the file (a password with @ or / would break it)
    assert not any("CONNECTION_URL" in key for key in env)
    assert re.fullmatch(r"\$\{POSTGRES_PASSWORD:\?.+\}", env["PREFECT_SERVER_DATABASE_PASSWORD"])
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

    cmd = [interpolate(a, {}) for a in compose["services"]["worker"]["command"]]
    assert cmd[0] == "depthmine"
    args = build_parser().parse_args(cmd[1:])
    assert args.command == "serve" and args.cron == "0 3 * * *"


def test_the_gpu_worker_serves_the_rebuild_on_the_gpu(compose):
    """The compose worker reserves a GPU, so its rebuild must label with a network on it, not the CPU default."""
    from flows.cli import build_parser
    from pipeline.flow import BACKENDS

    worker = compose["services"]["worker"]
    args = build_parser().parse_args([interpolate(a, {}) for a in worker["command"]][1:])
    assert args.device == "cuda"
    assert BACKENDS.is_family(args.flow) and args.flow.startswith("ptlflow:")
    # the checkpoint is read from a folder the worker mounts
    mounts = [interpolate(m, {}).split(":")[1] for m in worker["volumes"]]
    assert any(args.ckpt.startswith(m.rstrip("/") + "/") for m in mounts), (args.ckpt, mounts)
    # settable without editing the file
    args = build_parser().parse_args(
        [
            interpolate(a, {"DEPTHMINE_DEVICE": "cuda:1", "DEPTHMINE_FLOW": "ptlflow:sea_raft"})
            for a in worker["command"]
        ][1:]
    )
    assert (args.device, args.flow) == ("cuda:1", "ptlflow:sea_raft")


def test_the_image_default_command_is_the_same_gpu_rebuild(compose):
    from flows.cli import build_parser

    text = (DOCKER / "Dockerfile.worker").read_text()
    cmd = json.loads(re.search(r"^CMD\s+(\[.*?\])\s*$", text.replace("\\\n", " "), re.M | re.S).group(1))
    image, served = (
        build_parser().parse_args(c[1:])
        for c in (cmd, [interpolate(a, {}) for a in compose["services"]["worker"]["command"]])
    )
    assert image.command == "serve" and image.device == "cuda"
    assert (image.flow, image.ckpt, image.device, image.catalog, image.out) == (
        served.flow,
        served.ckpt,
        served.device,
        served.catalog,
        served.out,
    )


def test_the_compose_worker_command_passes_serves_checks(compose, tmp_path):
    """The worker's exact command, with /data/ moved under tmp_path, gets through `serve --dry-run`."""
    cmd = [interpolate(a, {}) for a in compose["services"]["worker"]["command"]]
    cmd = [a.replace("/data/", f"{tmp_path}/data/") for a in cmd]
    args = dict(zip(cmd, cmd[1:]))
    Path(args["--catalog"]).parent.mkdir(parents=True)
    Path(args["--catalog"]).write_text(yaml.safe_dump({"movies": [{"path": "movies/a.mkv", "split": "train"}]}))
    Path(args["--ckpt"]).parent.mkdir(parents=True)
    Path(args["--ckpt"]).write_bytes(b"weights")
    env = dict(os.environ, PREFECT_API_URL="http://127.0.0.1:9/api")  # nothing may be contacted
    proc = subprocess.run(
        [sys.executable, "-m", "flows", *cmd[1:], "--dry-run"], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "device=cuda" in proc.stdout and f"flow={args['--flow']}" in proc.stdout


def test_dockerfile_uses_a_cuda_base_and_installs_the_project():
    text = (DOCKER / "Dockerfile.worker").read_text()
    base = re.search(r"^FROM\s+(\S+)", text, re.M).group(1)
    assert base.startswith("nvidia/cuda:") and ("-base-" in base or "-runtime-" in base)
    assert re.search(r"pip install .*'\.\[export\]'", text)
    assert "opencv-contrib-python" in text
    # every path the image copies exists in the repository
    for src in re.findall(r"^COPY\s+(.+?)\s+\S+$", text, re.M):
        for part in src.split():
            assert (DOCKER.parent / part).exists(), f"Dockerfile copies missing {part}"


PASSWORD = "p@ss:w/rd%20#?&$x"  # every character a URL gives a meaning to


def _server_settings(compose, env: dict[str, str]) -> dict:
    """Prefect's resolved settings in a process started with the server service's environment."""
    server_env = {k: interpolate(str(v), env) for k, v in compose["services"]["server"]["environment"].items()}
    probe = (
        "import json; from prefect.settings import get_current_settings as g; from sqlalchemy import make_url; "
        "s = g(); u = make_url(s.server.database.connection_url.get_secret_value()); "
        "print(json.dumps({'driver': u.drivername, 'user': u.username, 'password': u.password, 'host': u.host, "
        "'port': u.port, 'database': u.database, 'ui_api_url': s.server.ui.api_url}))"
    )
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    proc = subprocess.run(
        [sys.executable, "-c", probe], env={**clean, **server_env}, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_a_database_password_with_url_characters_reaches_postgres_intact(compose):
    """Prefect builds the connection URL from the compose settings; the password comes back out unchanged."""
    got = _server_settings(compose, {"POSTGRES_PASSWORD": PASSWORD, "PREFECT_API_AUTH_STRING": "admin:a:b@c"})
    assert got["password"] == PASSWORD
    assert (got["driver"], got["user"], got["host"], got["port"], got["database"]) == (
        "postgresql+asyncpg",
        compose["services"]["postgres"]["environment"]["POSTGRES_USER"],
        "postgres",
        5432,
        compose["services"]["postgres"]["environment"]["POSTGRES_DB"],
    )


def test_the_ui_api_url_follows_the_published_port(compose):
    env = {"POSTGRES_PASSWORD": "x", "PREFECT_API_AUTH_STRING": "admin:x"}
    assert _server_settings(compose, env)["ui_api_url"] == "http://localhost:4200/api"
    assert _server_settings(compose, dict(env, PREFECT_PORT="8080"))["ui_api_url"] == "http://localhost:8080/api"
    assert compose["services"]["server"]["ports"] == ["${PREFECT_PORT:-4200}:4200"]
    custom = dict(env, PREFECT_UI_API_URL="https://prefect.example.org/api")
    assert _server_settings(compose, custom)["ui_api_url"] == "https://prefect.example.org/api"


def _pins(text: str) -> dict[str, str]:
    return dict(re.findall(r"\b(torch|torchvision|prefect|opencv-contrib-python)==([0-9][^\s'\"\\]*)", text))


def test_the_image_installs_the_projects_torch_pins_for_its_cuda_base():
    """torch/torchvision are the Makefile's pins, and the base image's CUDA is the one those wheels are built for."""
    from importlib import metadata

    dockerfile = (DOCKER / "Dockerfile.worker").read_text()
    makefile = (ROOT / "Makefile").read_text()
    image, project = _pins(dockerfile), _pins(makefile)
    assert image["torch"] == project["torch"] and image["torchvision"] == project["torchvision"]
    assert image["opencv-contrib-python"] == project["opencv-contrib-python"]
    base_cuda = re.search(r"^FROM\s+nvidia/cuda:(\d+)\.(\d+)\.\d+-", dockerfile, re.M).groups()
    # a wheel index named for a CUDA version (…/whl/cu130) must be the base image's
    for index in re.findall(r"--(?:extra-)?index-url\s+\S*/whl/cu(\d+)", dockerfile):
        assert index == "".join(base_cuda), f"torch wheel index cu{index} on a CUDA {'.'.join(base_cuda)} base"
    # the torch wheel of that pin, as installed here from the same index, says which CUDA it needs
    if metadata.version("torch").split("+")[0] != image["torch"]:
        pytest.skip(f"torch {metadata.version('torch')} installed, not the pinned {image['torch']}")
    toolkit = [r for r in metadata.requires("torch") or [] if r.startswith("cuda-toolkit")]
    if not toolkit:
        pytest.skip("the installed torch is a CPU-only build: its CUDA cannot be read here")
    wheel_cuda = re.search(r"==(\d+)\.(\d+)", toolkit[0]).groups()
    assert wheel_cuda == base_cuda, (
        f"torch {image['torch']} needs CUDA {'.'.join(wheel_cuda)}, base has {'.'.join(base_cuda)}"
    )


def test_server_worker_and_prefect_yaml_use_one_prefect_version(compose):
    from importlib import metadata

    image = _pins((DOCKER / "Dockerfile.worker").read_text())["prefect"]
    server_tag = re.fullmatch(r"prefecthq/prefect:(.+)-python3\.11", compose["services"]["server"]["image"]).group(1)
    declared = yaml.safe_load((ROOT / "prefect.yaml").read_text())["prefect-version"]
    assert image == server_tag == declared == metadata.version("prefect")
