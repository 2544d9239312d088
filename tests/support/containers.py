"""idp's container image under rootful podman, for tests/container: the image is built by
scripts/container-image.sh (the same script a person runs; docs/operations.md, "Building without
an image registry"), with that script's podman configuration. Containers and volumes get names of
their own and are removed by name; nothing else in podman's (machine-wide) store is touched."""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import os
import re
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from tests.support.live import DISCOVERY_PATH, free_port

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "container-image.sh"
BUILD_TIMEOUT = 1800.0  # a cold build also makes the base from Debian's packages
PODMAN_TIMEOUT = 120.0
START_TIMEOUT = 90.0
#: The image's own contract (docs/operations.md, "The container image").
IMAGE_UID = 10001
IMAGE_PORT = 5000
DATA_VOLUME = "/data"
SECRET_KEY = "container-tests-secret-key-" + "k" * 40
#: scripts/container-image.sh's lock: one build at a time in podman's machine-wide image store.
STORE_LOCK = Path("/run/lock/idp-container-image.lock")
#: What the build context holds (everything else is in .dockerignore).
CONTEXT_FILES = (".dockerignore", "pyproject.toml", "README.md", "idp", "config")


def unavailable_reason() -> str | None:
    """Why this machine cannot run containers at all, or None when it can."""
    if os.geteuid() != 0:
        return "rootful podman needs root, and these tests run as an unprivileged user"
    missing = [tool for tool in ("podman", "runc", "mmdebstrap") if shutil.which(tool) is None]
    if missing:
        return (
            f"{', '.join(missing)} not installed (scripts/test.sh installs them: "
            "apt-get install --no-install-recommends podman runc mmdebstrap)"
        )
    probe = subprocess.run(
        ["unshare", "--pid", "--mount", "--net", "--uts", "--ipc", "--fork", "true"],
        capture_output=True,
        text=True,
        check=False,
    )
    if probe.returncode != 0:
        return f"this kernel gives no namespaces for containers: {probe.stderr.strip()}"
    return None


class PodmanError(AssertionError):
    """A podman command failed; the message has its output."""


@functools.cache
def config_path() -> Path:
    """The podman configuration scripts/container-image.sh writes (runc, rlimits)."""
    return Path(
        subprocess.run(
            [str(SCRIPT), "config"], capture_output=True, text=True, check=True
        ).stdout.strip()
    )


def podman(
    *args: str, check: bool = True, input: str | None = None, timeout: float = PODMAN_TIMEOUT
) -> subprocess.CompletedProcess[str]:
    """``podman ARGS`` with the script's configuration."""
    completed = subprocess.run(
        ["podman", *args],
        input=input,
        env={**os.environ, "CONTAINERS_CONF": str(config_path())},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and completed.returncode != 0:
        raise PodmanError(
            f"`podman {' '.join(args)}` exited with {completed.returncode}\n"
            f"stdout: {completed.stdout[-3000:]}\nstderr: {completed.stderr[-3000:]}"
        )
    return completed


def build_image() -> str:
    """The image of this checkout (built only when no image has its content hash)."""
    completed = subprocess.run(
        [str(SCRIPT), "build"], capture_output=True, text=True, timeout=BUILD_TIMEOUT, check=False
    )
    if completed.returncode != 0:
        raise PodmanError(
            f"scripts/container-image.sh build exited with {completed.returncode}\n"
            f"{completed.stderr[-6000:]}"
        )
    return completed.stdout.strip().splitlines()[-1]


@contextlib.contextmanager
def store_lock() -> Iterator[None]:
    """Holds the script's lock, so that no other checkout builds in the store meanwhile."""
    STORE_LOCK.parent.mkdir(parents=True, exist_ok=True)
    with STORE_LOCK.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def image_ids() -> set[str]:
    """Every image in the store, intermediate ones (the layer cache of ``--layers``) included."""
    return set(podman("images", "--all", "--quiet", "--no-trunc").stdout.split())


def copy_context(destination: Path) -> Path:
    """A copy of the build context (files, modes and times kept, so that the layer cache of an
    unchanged file still matches)."""
    destination.mkdir(parents=True)
    for name in CONTEXT_FILES:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(
                source, destination / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
            )
        else:
            shutil.copy2(source, destination / name)
    return destination


@dataclass(frozen=True)
class BuildStep:
    """One step of a ``podman build``: its stage (1 for the first), its instruction, and whether
    its layer came from the cache."""

    stage: int
    instruction: str
    cached: bool


_STEP = re.compile(r"^\[(\d+)/\d+\] STEP \d+/\d+: (.*)$")


def build_steps(output: str) -> list[BuildStep]:
    """The steps of a multi-stage ``podman build --layers``, from its output."""
    steps: list[BuildStep] = []
    for line in output.splitlines():
        found = _STEP.match(line)
        if found:
            steps.append(BuildStep(int(found[1]), found[2], cached=False))
        elif line.startswith("--> Using cache") and steps:
            last = steps[-1]
            steps[-1] = BuildStep(last.stage, last.instruction, cached=True)
    return steps


def unique_name(what: str) -> str:
    return f"idp-test-{what}-{secrets.token_hex(4)}"


def inspect_image(image: str) -> dict[str, Any]:
    found = json.loads(podman("image", "inspect", image).stdout)
    assert isinstance(found, list), found
    assert len(found) == 1, found
    return dict(found[0])


@dataclass
class Container:
    """A detached container serving idp as ``http://localhost:PORT``."""

    name: str
    port: int
    log_tail_lines: int = 60
    _removed: bool = field(default=False, repr=False)

    @property
    def url(self) -> str:
        return f"http://localhost:{self.port}"

    def logs(self) -> str:
        completed = podman("logs", self.name, check=False)
        lines = (completed.stdout + completed.stderr).splitlines()
        return "\n".join(lines[-self.log_tail_lines :])

    def state(self) -> dict[str, Any]:
        found = json.loads(podman("container", "inspect", self.name).stdout)
        return dict(found[0]["State"])

    def exec(self, *args: str, input: str | None = None) -> str:
        return podman("exec", "-i", self.name, *args, input=input).stdout

    def wait_serving(self) -> None:
        """Until discovery answers 200; fails with the container's log if it exits or never does."""
        deadline = time.monotonic() + START_TIMEOUT
        last = "no answer yet"
        while time.monotonic() < deadline:
            if not self.state().get("Running"):
                raise PodmanError(f"{self.name} exited before serving:\n{self.logs()}")
            try:
                response = requests.get(self.url + DISCOVERY_PATH, timeout=5)
                if response.status_code == 200:
                    return
                last = f"HTTP {response.status_code}"
            except requests.RequestException as error:
                last = f"{type(error).__name__}: {error}"
            time.sleep(0.25)
        raise PodmanError(f"{self.name} did not serve {self.url} ({last}):\n{self.logs()}")

    def serves(self) -> bool:
        try:
            return requests.get(self.url + "/healthz", timeout=5).status_code == 200
        except requests.RequestException:
            return False

    def wait_exit(self, timeout: float = 90.0) -> int:
        """The container's exit status (``podman wait``)."""
        return int(podman("wait", self.name, timeout=timeout).stdout.strip())

    def remove(self) -> None:
        if not self._removed:
            # --volumes: its anonymous volume (VOLUME /data when none was mounted) goes too.
            podman("rm", "--force", "--volumes", "--time", "0", self.name, check=False)
            self._removed = True


def run_container(
    image: str,
    *,
    env: dict[str, str],
    volume: str | None = None,
    host_network: bool = False,
    command: tuple[str, ...] = (),
) -> Container:
    """``podman run --detach``: published on 127.0.0.1 only, or on the host's network (for the
    machine's PostgreSQL on 127.0.0.1), where ``command`` names the port."""
    port = free_port()
    name = unique_name("run")
    args = ["run", "--detach", "--name", name]
    if host_network:
        args += ["--network", "host"]
    else:
        args += ["--publish", f"127.0.0.1:{port}:{IMAGE_PORT}"]
    if volume:
        args += ["--volume", f"{volume}:{DATA_VOLUME}"]
    env = {"IDP_ISSUER": f"http://localhost:{port}", **env}
    for key, value in env.items():
        args += ["--env", f"{key}={value}"]
    args.append(image)
    args += [part.replace("{port}", str(port)) for part in command]
    podman(*args)
    return Container(name=name, port=port)
