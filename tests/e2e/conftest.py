"""Fixtures for the end-to-end tier: a real llama-server (SmolLM2-135M) and the real signet
binary in front of it, each on a free port, torn down at the end of the session."""

import json
import os
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SIGNET = Path(os.environ.get("SIGNET_BIN", REPO / "target" / "debug" / "signet"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, process: subprocess.Popen, deadline_s: float = 60.0) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args[0]} exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not become healthy")


def config_text(port: int, upstream: str, workdir: Path, name: str, gpu: str) -> str:
    """The configuration tests and scripts share (conf/template.yaml.in), filled in."""
    template = (REPO / "conf" / "template.yaml.in").read_text()
    for key, value in {"THREADS": "2", "DIR": str(workdir), "NAME": name, "PORT": str(port),
                       "UPSTREAM": upstream, "GPU": gpu}.items():
        template = template.replace(f"@{key}@", value)
    return template


def start(args, log_path: Path, env=None) -> subprocess.Popen:
    log = open(log_path, "wb")
    return subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env)


@pytest.fixture(scope="session")
def workdir():
    with tempfile.TemporaryDirectory(prefix="signet-e2e-") as d:
        yield Path(d)


# The model servers the tier runs against: llama-server always, vLLM on CPU when
# SIGNET_E2E_VLLM=1 (scripts/upstreams/vllm.sh install; ~15 minutes and 6 GB the first time).
UPSTREAMS = ["llama"] + (["vllm"] if os.environ.get("SIGNET_E2E_VLLM") == "1" else [])


@pytest.fixture(scope="session", params=UPSTREAMS)
def upstream_kind(request):
    return request.param


@pytest.fixture(scope="session")
def llama(workdir, upstream_kind):
    """The model server's base URL (llama-server or vLLM, serving SmolLM2 as "smollm2")."""
    port = free_port()
    if upstream_kind == "llama":
        paths = subprocess.run(
            [REPO / "scripts" / "upstreams" / "install.sh"], check=True, capture_output=True, text=True
        ).stdout.split()
        server, model = paths[-2], paths[-1]
        args = [server, "-m", model, "--host", "127.0.0.1", "--port", str(port), "-t", "2", "-c", "4096",
                "--parallel", "4", "-a", "smollm2", "--no-webui"]
        ready_within = 120
    else:
        args = [REPO / "scripts" / "upstreams" / "vllm.sh", "run", str(port)]
        ready_within = 600
    process = start(args, workdir / f"{upstream_kind}.log")
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(f"{url}/health", process, ready_within)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture(scope="session")
def signet(llama, workdir):
    """signet's base URL, in front of llama-server, dev attestation."""
    port = free_port()
    config = workdir / f"signet-{port}.yaml"
    config.write_text(config_text(port, llama, workdir, "signet", "dev"))
    process = start([SIGNET, "serve", "-c", config], workdir / "signet.log")
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(f"{url}/health", process)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture(scope="session")
def attested_address(signet) -> str:
    with urllib.request.urlopen(f"{signet}/v1/attestation/report") as answer:
        return json.load(answer)["signing_address"]


@pytest.fixture(scope="session")
def mock_signet(workdir):
    """signet in front of signet's mock upstream, for the prompt APIs llama-server does not
    serve as started here (embeddings need a server started for embeddings only)."""
    mock = start(
        [SIGNET.parent / "signet-mock-upstream", "--listen", f"127.0.0.1:{free_port()}"],
        workdir / "mock.log",
    )
    line = ""
    end = time.monotonic() + 30
    while time.monotonic() < end and not line.startswith("LISTENING "):
        text = (workdir / "mock.log").read_text()
        line = text.splitlines()[0] if text else ""
        time.sleep(0.05)
    assert line.startswith("LISTENING "), "the mock upstream did not start"
    upstream = line.split()[1]
    port = free_port()
    config = workdir / f"signet-mock-{port}.yaml"
    config.write_text(config_text(port, f"http://{upstream}", workdir, "signet-mock", "none"))
    process = start([SIGNET, "serve", "-c", config], workdir / "signet-mock.log")
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(f"{url}/health", process)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)
        mock.terminate()
        mock.wait(timeout=10)
