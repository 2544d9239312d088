"""The floor version of every runtime dependency of idp, together in a virtualenv of its own.

pyproject.toml promises that idp works with any version at or above each dependency's floor
(``name>=X``). Only the newest versions are installed in ``.venv``, so nothing else checks that
promise: this module turns every ``>=X`` into ``==X``, lets pip resolve the rest of the tree around
those pins (which fails when two floors cannot be installed together), and hands back the
virtualenv for a test run in a process of its own. docs/security.md ("Dependencies") says why each
floor is where it is.

The virtualenv holds the dependencies only, never idp: the checkout under test reaches it through
``PYTHONPATH`` (``FloorVenv.env``) and a generic ``idp`` command, so one virtualenv serves every
checkout on the machine. It is kept in the machine's cache (``$IDP_FLOORS_CACHE``, or
``$XDG_CACHE_HOME/idp-floors``, or ``~/.cache/idp-floors``) under a name made of the SHA-256 of
pyproject.toml's dependencies (and the Python version): a fresh clone with the same dependencies
reuses it, a changed one builds a new one.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import Requirement

REPOSITORY = Path(__file__).resolve().parents[2]
#: Test extras the floor run does not need: the browser driver (the floor run has no browser
#: tests, and its wheel is large), the linters (they check the code, not the dependencies) and
#: schemathesis (the floor run has not the fuzzing of the admin API, which tests idp's own logic).
TEST_EXTRAS_NOT_NEEDED = frozenset({"playwright", "ruff", "mypy", "schemathesis"})
#: Generous: a cold build downloads and installs every wheel (about a minute on CI).
INSTALL_TIMEOUT = 900.0
#: How many floor virtualenvs (different dependency sets) the machine's cache keeps.
KEEP_VENVS = 3
#: Written last into a finished virtualenv; a directory without it is a build that was cut short.
COMPLETE_MARKER = "floors-complete.txt"


class FloorError(AssertionError):
    """A floor is missing or malformed, or the floor versions cannot be installed together."""


@dataclass(frozen=True)
class FloorVenv:
    path: Path
    #: ``name[extras]==X`` for every runtime dependency, as installed.
    pins: tuple[str, ...]

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"

    def env(self, repository: Path, base: dict[str, str]) -> dict[str, str]:
        """``base`` with ``repository`` first on the path of this process and of every ``idp``
        it starts (the live-server tests run ``bin/idp`` beside the interpreter)."""
        return {**base, "PYTHONPATH": str(repository), "VIRTUAL_ENV": str(self.path)}


def floors_cache() -> Path:
    explicit = os.environ.get("IDP_FLOORS_CACHE")
    if explicit:
        return Path(explicit)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "idp-floors"


def _project(pyproject: Path) -> dict[str, object]:
    project = tomllib.loads(pyproject.read_text())["project"]
    assert isinstance(project, dict)
    return project


def floor_pins(pyproject: Path) -> tuple[str, ...]:
    """``name[extras]==X`` for each runtime dependency ``name[extras]>=X`` of ``pyproject``.

    Every runtime dependency must have exactly one ``>=`` floor: a dependency without one would
    allow any version, including those with published advisories."""
    pins = []
    for line in _project(pyproject)["dependencies"]:  # type: ignore[attr-defined]
        requirement = Requirement(line)
        floors = [spec.version for spec in requirement.specifier if spec.operator == ">="]
        if len(floors) != 1:
            raise FloorError(f"{line!r} needs exactly one '>=' floor")
        extras = f"[{','.join(sorted(requirement.extras))}]" if requirement.extras else ""
        marker = f"; {requirement.marker}" if requirement.marker else ""
        pins.append(f"{requirement.name}{extras}=={floors[0]}{marker}")
    return tuple(pins)


def test_tools(pyproject: Path) -> tuple[str, ...]:
    """The ``test`` extra without what the floor run does not need."""
    extras = _project(pyproject)["optional-dependencies"]
    assert isinstance(extras, dict)
    return tuple(
        line for line in extras["test"] if Requirement(line).name not in TEST_EXTRAS_NOT_NEEDED
    )


def cache_key(pyproject: Path) -> str:
    """Changes with what the virtualenv holds (the pins and the test tools), not with the rest of
    pyproject.toml (a lint setting or a marker must not cost a rebuild)."""
    digest = hashlib.sha256("\n".join(floor_pins(pyproject) + test_tools(pyproject)).encode())
    digest.update(f"{sys.version_info.major}.{sys.version_info.minor}".encode())
    return digest.hexdigest()[:16]


@contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """One build at a time per machine (two test runs must not interleave pip in one virtualenv)."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _pip(python: Path, *args: str) -> None:
    command = [str(python), "-m", "pip", "--disable-pip-version-check", "--no-input", *args]
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT,
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
        check=False,
    )
    if result.returncode != 0:
        # pip's warnings about this machine's index locations would bury the resolver's message.
        output = "\n".join(
            line
            for line in (result.stdout + result.stderr).splitlines()
            if not line.startswith("WARNING: Location")
        )
        raise FloorError(f"{' '.join(command)} failed ({result.returncode}):\n{output}")


def floor_venv(repository: Path = REPOSITORY) -> FloorVenv:
    """The virtualenv with the floor versions (built on first use for this pyproject.toml)."""
    pyproject = repository / "pyproject.toml"
    pins = floor_pins(pyproject)
    floors_dir = floors_cache()
    venv = floors_dir / f"venv-{cache_key(pyproject)}"
    with _exclusive(floors_dir / ".lock"):
        if not (venv / COMPLETE_MARKER).is_file():
            shutil.rmtree(venv, ignore_errors=True)
            _build(venv, pins, test_tools(pyproject))
        (venv / COMPLETE_MARKER).touch()  # last used: what the clean-up below keeps
        # Other checkouts on the machine may test other dependency sets: keep the few newest.
        built = sorted(
            floors_dir.glob(f"venv-*/{COMPLETE_MARKER}"), key=lambda m: m.stat().st_mtime
        )
        for marker in built[:-KEEP_VENVS]:
            shutil.rmtree(marker.parent)
    return FloorVenv(venv, pins)


def _build(venv: Path, pins: tuple[str, ...], tests: tuple[str, ...]) -> None:
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    requirements = venv / "floors.txt"
    requirements.write_text("".join(f"{pin}\n" for pin in pins))
    constraints = venv / "floors-constraints.txt"  # pip allows no extras in constraints
    constraints.write_text("".join(f"{Requirement(pin).name}=={_version(pin)}\n" for pin in pins))
    # One resolution for all the pins: pip refuses when two floors need incompatible versions
    # of something, which is how "they install together" is proved. Dependencies of the pinned
    # packages resolve to whatever their own ranges allow.
    _pip(python, "install", "-r", str(requirements))
    # The test tools, constrained so that they cannot move a pinned package.
    _pip(python, "install", "-c", str(constraints), *tests)
    _pip(python, "check")
    # The `idp` command the live-server tests run beside the interpreter; it imports idp from
    # whatever checkout PYTHONPATH names (FloorVenv.env), as the console script of an install would.
    command = venv / "bin" / "idp"
    command.write_text(f"#!{python}\nimport sys\nfrom idp.cli import main\nsys.exit(main())\n")
    command.chmod(0o755)
    (venv / COMPLETE_MARKER).write_text("".join(f"{pin}\n" for pin in pins))


def _version(pin: str) -> str:
    (version,) = (spec.version for spec in Requirement(pin).specifier)
    return version


def pinned_versions(pins: tuple[str, ...]) -> dict[str, str]:
    """``{name: version}`` of ``name[extras]==version`` pins."""
    return {Requirement(pin).name: _version(pin) for pin in pins}


def installed_versions(venv: FloorVenv, names: list[str]) -> dict[str, str]:
    """What the floor virtualenv actually has, asked of its own interpreter."""
    script = (
        "import sys, importlib.metadata as m\n"
        "for name in sys.argv[1:]: print(name, m.version(name))\n"
    )
    result = subprocess.run(
        [str(venv.python), "-c", script, *names],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return dict(line.split(" ", 1) for line in result.stdout.splitlines())
