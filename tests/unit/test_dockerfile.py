"""The container image's invariants, read from the Dockerfile's instructions (docs/operations.md,
"The container image"). tests/container builds and runs the image itself; these checks answer in
a fraction of a second and also where no container can run.

Each rule is a named test: a slim Python base, a non-root user, the instance files on a declared
volume, the production server as the command, a health check on the port the command serves, no
secret baked into the image or its build context, and files taken from the build stage in a way
every builder honours."""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
SECRET_NAME = re.compile(r"(?i)(secret|password|passwd|token|api_?key|private)")


@dataclass(frozen=True)
class Instruction:
    keyword: str
    arguments: str

    def exec_form(self) -> list[str]:
        """The JSON array form (``CMD ["idp", ...]``); fails on the shell form."""
        value = json.loads(self.arguments)
        assert isinstance(value, list), self
        return [str(v) for v in value]


def parse(text: str) -> list[Instruction]:
    """Dockerfile syntax: ``#`` comment lines (also inside a continued instruction), ``\\`` at
    the end of a line continues it, a parser directive on the first line is a comment."""
    instructions: list[Instruction] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1].rstrip() + " "
            continue
        keyword, _, arguments = (pending + line).partition(" ")
        instructions.append(Instruction(keyword.upper(), arguments.strip()))
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued instruction"
    return instructions


@pytest.fixture(scope="module")
def instructions() -> list[Instruction]:
    return parse(DOCKERFILE.read_text())


def _runtime_stage(instructions: list[Instruction]) -> list[Instruction]:
    starts = [i for i, ins in enumerate(instructions) if ins.keyword == "FROM"]
    return instructions[starts[-1] :]


def _all(instructions: list[Instruction], keyword: str) -> list[Instruction]:
    return [i for i in instructions if i.keyword == keyword]


def test_the_parser_reads_continuations_and_comments() -> None:
    parsed = parse('# syntax=docker/dockerfile:1\nFROM a\nRUN one \\\n  # note\n  two\nCMD ["x"]\n')
    assert parsed == [Instruction("FROM", "a"), Instruction("RUN", "one two"),
                      Instruction("CMD", '["x"]')]  # fmt: skip


def test_every_stage_is_on_a_slim_python_base_matching_requires_python(
    instructions: list[Instruction],
) -> None:
    required = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    minimum = tuple(int(x) for x in required.removeprefix(">=").split("."))
    bases = [i.arguments.split()[0] for i in _all(instructions, "FROM")]
    assert len(bases) >= 2  # a build stage, so the runtime image carries no build tools
    for base in bases:
        match = re.fullmatch(r"python:(\d+)\.(\d+)(?:\.\d+)?-slim(?:-\w+)?", base)
        assert match, f"{base} is not a slim Python image"
        assert (int(match.group(1)), int(match.group(2))) >= minimum


def test_the_runtime_runs_as_a_non_root_user(instructions: list[Instruction]) -> None:
    runtime = _runtime_stage(instructions)
    users = _all(runtime, "USER")
    assert users, "no USER: the container would run as root"
    user = users[-1].arguments.split(":")[0]
    assert user not in ("root", "0")
    # The user is created in the image, and USER comes before the command.
    assert any(f" {user}" in i.arguments and "useradd" in i.arguments for i in _all(runtime, "RUN"))
    assert runtime.index(users[-1]) < runtime.index(_all(runtime, "CMD")[-1])


def test_the_instance_files_are_on_a_declared_volume(instructions: list[Instruction]) -> None:
    runtime = _runtime_stage(instructions)
    volumes = " ".join(i.arguments for i in _all(runtime, "VOLUME"))
    instance = [i.arguments for i in _all(runtime, "ENV") if "IDP_INSTANCE_PATH=" in i.arguments]
    assert instance, "IDP_INSTANCE_PATH is not set: instance files would go under site-packages"
    path = re.search(r"IDP_INSTANCE_PATH=(\S+)", instance[-1])
    assert path is not None
    assert path.group(1) in volumes.replace('"', "").replace("[", " ").replace("]", " ").split(), (
        f"no VOLUME {path.group(1)}: the instance files would stay in the container's layer"
    )


def test_the_runtime_takes_the_build_stage_files_with_copy_from(
    instructions: list[Instruction],
) -> None:
    """buildah gives a RUN --mount=type=bind,from=STAGE nothing when STAGE comes from the layer
    cache, so a second podman build would install nothing; COPY --from works in every builder."""
    runtime = _runtime_stage(instructions)
    for run in _all(runtime, "RUN"):
        assert "from=" not in run.arguments, f"RUN --mount from a stage: {run.arguments[:80]}"
    assert any("--from=build" in i.arguments for i in _all(runtime, "COPY"))


def test_the_command_is_the_production_server(instructions: list[Instruction]) -> None:
    command = _all(_runtime_stage(instructions), "CMD")[-1].exec_form()
    assert not _all(instructions, "ENTRYPOINT")
    assert command[:3] == ["idp", "serve", "--production"]
    # Reachable from outside the container, not only from its own loopback.
    assert command[command.index("--host") + 1] not in ("127.0.0.1", "localhost", "::1")
    # The servers `idp serve` runs come with idp itself (nothing else installed in the image).
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    from idp.serving import SERVERS

    for server in SERVERS:
        assert any(d.startswith(server) for d in dependencies), server


def test_the_health_check_probes_healthz_on_the_served_port(
    instructions: list[Instruction],
) -> None:
    runtime = _runtime_stage(instructions)
    command = _all(runtime, "CMD")[-1].exec_form()
    port = command[command.index("--port") + 1]
    checks = _all(runtime, "HEALTHCHECK")
    assert len(checks) == 1
    options, _, probe = checks[0].arguments.partition("CMD ")
    assert "--interval=" in options
    assert "--timeout=" in options
    probe_command = json.loads(probe)
    assert f"http://127.0.0.1:{port}/healthz" in " ".join(probe_command)
    assert port in [i.arguments for i in _all(runtime, "EXPOSE")]


def test_no_secret_is_baked_into_the_image(instructions: list[Instruction]) -> None:
    for instruction in _all(instructions, "ENV") + _all(instructions, "ARG"):
        names = re.findall(r"(?:^|\s)([A-Za-z_][A-Za-z0-9_]*)=", " " + instruction.arguments)
        if instruction.keyword == "ARG":
            names = [instruction.arguments.split("=")[0]]
        for name in names:
            assert not SECRET_NAME.search(name), f"{instruction.keyword} {name} in the image"
    for instruction in instructions:  # not in a RUN either (it would stay in a layer)
        assert "SECRET_KEY=" not in instruction.arguments, instruction
    # Only the package, its metadata and the example configuration are copied in from the build
    # context (COPY --from takes files from a stage of this Dockerfile, not from the context).
    from_context = [
        i.arguments.split()[:-1] for i in _all(instructions, "COPY") if "--from=" not in i.arguments
    ]
    copied = {s for group in from_context for s in group if not s.startswith("--")}
    assert copied <= {"pyproject.toml", "README.md", "idp/", "config/"}, copied


def test_the_build_context_leaves_out_local_state_and_secrets() -> None:
    ignored = {line.strip() for line in DOCKERIGNORE.read_text().splitlines()}
    for entry in ("instance", ".venv", ".git", ".env", "**/*.db", "**/*.pem", "**/*.key"):
        assert entry in ignored, entry
    for example in (ROOT / "config").glob("*.toml"):
        settings = tomllib.loads(example.read_text())
        secret = str(settings.get("secret_key", ""))
        # The example's key is a placeholder that a production start refuses.
        assert not secret or secret.lower().startswith("change-me"), example
