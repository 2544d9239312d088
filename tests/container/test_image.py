"""The container image, built from the repository's Dockerfile and run (docs/operations.md, "The
container image"): rootful podman builds it with scripts/container-image.sh (only when the
Dockerfile, the dependencies or the code changed) and runs it the way an operator does. Skipped,
with the reason, only on a machine that cannot run containers at all.

One container on a named volume (SQLite in /data) answers the probes and discovery, runs as the
image's user, passes its own HEALTHCHECK and stops cleanly; a new container on the same volume
finds what `idp` wrote. Two containers on the machine's PostgreSQL (host network) serve the same
users, and SIGTERM with a sign-in in flight lets it finish and exits 0: the sign-in is held by a
lock this test takes on the users table, so it is in flight for as long as the test decides."""

from __future__ import annotations

import re
import secrets
import tarfile
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import create_engine, text

from tests.conftest import throwaway_postgres_database
from tests.support.containers import (
    DATA_VOLUME,
    IMAGE_PORT,
    IMAGE_UID,
    ROOT,
    SECRET_KEY,
    BuildStep,
    Container,
    build_image,
    build_steps,
    copy_context,
    image_ids,
    inspect_image,
    podman,
    run_container,
    store_lock,
    unavailable_reason,
    unique_name,
)
from tests.support.http_flows import Visitor
from tests.support.live import DISCOVERY_PATH

pytestmark = [pytest.mark.container, pytest.mark.minutes(4)]

PASSWORD = "a long container passphrase 42"
BASE = "docker.io/library/python:3.11-slim"
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"


def wait_until(condition: Any, what: str, attempts: int = 600) -> None:
    """Polls ``condition`` (0.1 s apart) until it holds; fails naming ``what`` otherwise."""
    event = threading.Event()
    for _ in range(attempts):
        if condition():
            return
        event.wait(0.1)
    raise AssertionError(f"never happened: {what}")


@pytest.fixture(scope="module")
def image() -> str:
    reason = unavailable_reason()
    if reason:
        pytest.skip(f"this machine cannot run containers: {reason}")
    return build_image()


@pytest.fixture(scope="module")
def image_config(image: str) -> dict[str, Any]:
    return inspect_image(image)


@pytest.fixture(scope="module")
def volume(image: str) -> Iterator[str]:
    name = unique_name("data")
    podman("volume", "create", name)
    try:
        yield name
    finally:
        podman("volume", "rm", "--force", name, check=False)


@pytest.fixture(scope="module")
def on_volume(image: str, volume: str) -> Iterator[Container]:
    """The image as an operator runs it: its own command, a named volume, a secret key."""
    container = run_container(image, env={"IDP_SECRET_KEY": SECRET_KEY}, volume=volume)
    try:
        container.wait_serving()
        yield container
    finally:
        container.remove()


# -- the image ------------------------------------------------------------------------------------
def test_the_image_declares_its_contract(image_config: dict[str, Any]) -> None:
    config = image_config["Config"]
    user = config.get("User", "")
    assert user not in ("", "root", "0"), (
        f"the image's USER is {user!r}: the Dockerfile's USER is missing, so idp runs as root"
    )
    assert DATA_VOLUME in (config.get("Volumes") or {}), (
        f"the image declares no VOLUME {DATA_VOLUME}: a container started without a volume keeps "
        "its instance files in its own writable layer and loses them with it"
    )
    env = config.get("Env", [])
    assert "IDP_INSTANCE_PATH=/data" in env, (
        f"the image does not set IDP_INSTANCE_PATH=/data, so the instance files are not on the "
        f"volume: {env}"
    )
    assert "IDP_PRODUCTION=true" in env, (
        f"the image does not set IDP_PRODUCTION=true (its refusal of the development key): {env}"
    )
    assert f"{IMAGE_PORT}/tcp" in (config.get("ExposedPorts") or {}), (
        f"the image does not EXPOSE {IMAGE_PORT}: {config.get('ExposedPorts')}"
    )
    stop_signal = config.get("StopSignal")
    assert stop_signal in ("SIGTERM", "15", "TERM"), (
        f"the image's STOPSIGNAL is {stop_signal!r}, not SIGTERM: `docker stop` would not let "
        "idp finish the requests in flight"
    )
    check = image_config.get("Healthcheck") or {}
    assert check.get("Test"), (
        "the image has no HEALTHCHECK (the Dockerfile's is removed, or the image was built in the "
        "OCI format, which drops it)"
    )


def test_no_wheel_or_source_is_in_any_layer_of_the_image(
    image: str, image_config: dict[str, Any]
) -> None:
    """The layers the Dockerfile adds to the base carry installed files only: a wheel copied in
    and deleted by a later step would still be in its layer."""
    base_layers = set(inspect_image(BASE)["RootFS"]["Layers"])
    added = [layer for layer in image_config["RootFS"]["Layers"] if layer not in base_layers]
    assert added
    with tempfile.TemporaryDirectory(prefix="idp-image-") as directory:
        saved = Path(directory) / "image"
        podman("save", "--format", "docker-dir", "--output", str(saved), image, timeout=300)
        leftovers = []
        for layer in added:
            with tarfile.open(saved / layer.removeprefix("sha256:")) as tar:
                for member in tar:
                    name = member.name
                    if name.endswith(".whl") or name.startswith(("src/", "wheels/", "install/")):
                        leftovers.append(name)
    assert not leftovers, f"build leftovers in the image's layers: {leftovers[:10]}"


def podman_build(dockerfile: Path, context: Path, tag: str) -> list[BuildStep]:
    """``podman build --layers`` as scripts/container-image.sh runs it; its steps."""
    built = podman(
        "build", "--format", "docker", "--pull=never", "--layers",
        "--volume", f"{CA_BUNDLE}:{CA_BUNDLE}:ro",
        "--tag", tag, "--file", str(dockerfile), str(context),
        check=False, timeout=900,
    )  # fmt: skip
    output = built.stdout + built.stderr
    assert built.returncode == 0, f"the rebuild {tag} failed:\n{output[-4000:]}"
    return build_steps(output)


def described(steps: list[BuildStep]) -> str:
    return "\n".join(
        f"  [{step.stage}] {'cached' if step.cached else 'built '} {step.instruction[:100]}"
        for step in steps
    )


def test_the_image_builds_again_after_a_code_change_and_from_a_cached_build_stage(
    image: str, tmp_path: Path
) -> None:
    """The two rebuilds a developer makes after the first build (here, the `image` fixture's):

    1. after a change to idp's code: the build stage takes every step before the code from the
       layer cache (the dependencies are not installed again), installs idp again, and the image
       runs the changed code;
    2. the same code with a change to the runtime stage only (one more ENV): the whole build stage
       comes from the cache, and the runtime stage still gets idp. A RUN
       --mount=type=bind,from=build gets nothing from a cached stage under buildah.

    The builds hold the script's lock, so the images they leave (their tags and layer cache) are
    theirs alone; they are all removed."""
    probe = secrets.token_hex(8)
    context = copy_context(tmp_path / "context")
    code = context / "idp" / "__init__.py"
    code.write_text(code.read_text() + f'\nREBUILD_PROBE = "{probe}"\n')
    dockerfile = (ROOT / "Dockerfile").read_text().splitlines()
    runtime_from = max(i for i, line in enumerate(dockerfile) if line.startswith("FROM "))
    dockerfile.insert(runtime_from + 1, f"ENV IDP_REBUILD_PROBE={probe}")
    runtime_changed = tmp_path / "Dockerfile"
    runtime_changed.write_text("\n".join(dockerfile) + "\n")
    after_code, after_runtime = (
        f"localhost/idp-rebuild-probe:{probe}-code",
        f"localhost/idp-rebuild-probe:{probe}-runtime",
    )
    runs_the_change = ("python", "-c", f"import idp, sys; sys.exit(idp.REBUILD_PROBE != {probe!r})")
    with store_lock():
        before = image_ids()
        try:
            steps = podman_build(ROOT / "Dockerfile", context, after_code)
            build_stage = [
                s for s in steps if s.stage == 1 and not s.instruction.startswith("FROM")
            ]
            copies_code = [
                i
                for i, step in enumerate(build_stage)
                if step.instruction.startswith("COPY ")
                and any(part.rstrip("/") == "idp" for part in step.instruction.split()[1:-1])
            ]
            assert copies_code, f"no step of the build stage copies idp/:\n{described(steps)}"
            assert not build_stage[copies_code[0]].cached, (
                f"after a change to idp/__init__.py, the step copying idp/ came from the layer "
                f"cache:\n{described(steps)}"
            )
            assert all(step.cached for step in build_stage[: copies_code[0]]), (
                "after a change to idp's code alone, steps of the build stage before the code did "
                "not come from the layer cache (the dependencies are installed again on every "
                f"change to the code):\n{described(steps)}"
            )
            changed = podman("run", "--rm", after_code, *runs_the_change, check=False)
            assert changed.returncode == 0, (
                "the image rebuilt after a change to idp's code does not run the changed code (a "
                "step of the runtime stage that installs idp came from the cache?):\n"
                f"{changed.stdout}{changed.stderr}\n{described(steps)}"
            )

            steps = podman_build(runtime_changed, context, after_runtime)
            build_stage = [
                s for s in steps if s.stage == 1 and not s.instruction.startswith("FROM")
            ]
            assert build_stage, f"no step of the build stage after its FROM:\n{described(steps)}"
            assert all(step.cached for step in build_stage), (
                "the build stage was not taken from the layer cache, so this rebuild proves "
                f"nothing:\n{described(steps)}"
            )
            installed = podman("run", "--rm", after_runtime, "idp", "--help", check=False)
            assert installed.returncode == 0, (
                "idp is not installed in an image whose build stage came from the layer cache:\n"
                f"{installed.stdout}{installed.stderr}"
            )
        finally:
            # The tags, and the layer cache of both builds: no later build can use it, and each
            # runtime stage holds a copy of the installed files.
            podman("rmi", "--force", after_code, after_runtime, check=False)
            left = image_ids() - before
            if left:
                podman("rmi", "--force", *left, check=False)


# -- one container on a volume --------------------------------------------------------------------
def test_a_start_without_a_secret_key_is_refused_with_the_reason(image: str) -> None:
    refused = run_container(image, env={})
    try:
        # Whichever comes first: the process exits, or it serves (and the test fails).
        wait_until(
            lambda: not refused.state()["Running"] or refused.serves(),
            "the container started without IDP_SECRET_KEY exiting or serving",
        )
        assert not refused.serves(), (
            f"a container without IDP_SECRET_KEY serves requests (IDP_PRODUCTION=true or the "
            f"refusal of the development key is gone):\n{refused.logs()}"
        )
        status = refused.wait_exit()
        output = refused.logs()
    finally:
        refused.remove()
    assert status != 0, (
        "the container started without IDP_SECRET_KEY stopped with status 0, as if it had "
        f"succeeded: the refusal must reach the container's exit status (the CMD):\n{output}"
    )
    assert "IDP_SECRET_KEY" in output, f"the refusal does not name IDP_SECRET_KEY:\n{output}"
    assert "Traceback" not in output, f"a traceback, not a message:\n{output}"


def test_the_probes_and_discovery_answer(on_volume: Container) -> None:
    health = requests.get(on_volume.url + "/healthz", timeout=10)
    assert (health.status_code, health.json()["status"]) == (200, "ok")
    ready = requests.get(on_volume.url + "/readyz", timeout=10)
    assert ready.status_code == 200, ready.text
    assert ready.json()["status"] == "ok"
    discovery = requests.get(on_volume.url + DISCOVERY_PATH, timeout=10).json()
    assert discovery["issuer"] == on_volume.url


def test_every_process_of_the_container_runs_as_the_image_user(on_volume: Container) -> None:
    listing = podman("top", on_volume.name, "huser", "pid", "args").stdout.splitlines()[1:]
    assert listing, "podman top listed no process"
    for line in listing:
        uid, pid, command = line.split(None, 2)
        assert uid == str(IMAGE_UID), (
            f"process {pid} ({command.strip()}) runs as uid {uid}, not the image's user "
            f"{IMAGE_UID}: is the Dockerfile's USER missing?"
        )


def test_the_images_own_healthcheck_passes(on_volume: Container) -> None:
    checked = podman("healthcheck", "run", on_volume.name, check=False)
    assert checked.returncode == 0, (
        f"the image's HEALTHCHECK failed: {checked.stdout}{checked.stderr}\n{on_volume.logs()}"
    )
    health = on_volume.state()["Health"]
    assert health["Status"] == "healthy", f"after a passing HEALTHCHECK, the state says {health}"


def test_data_written_by_idp_survive_a_new_container_on_the_same_volume(
    image: str, volume: str, on_volume: Container
) -> None:
    email = f"volume-{secrets.token_hex(3)}@example.com"
    on_volume.exec("idp", "users", "create", email, "--password-stdin", "--json", input=PASSWORD)
    kids = {key["kid"] for key in requests.get(on_volume.url + "/jwks", timeout=10).json()["keys"]}
    # The database is on the volume, owned by the image's user.
    listing = podman(
        "run", "--rm", "--volume", f"{volume}:{DATA_VOLUME}", image, "ls", "-ln", DATA_VOLUME
    ).stdout
    assert re.search(rf"\s{IMAGE_UID}\s+\d+\s+\d+ .* idp\.db$", listing, re.M), (
        f"no idp.db owned by the image's user (uid {IMAGE_UID}) on the volume: is the "
        f"Dockerfile's USER or IDP_INSTANCE_PATH=/data missing?\n{listing}"
    )
    # docker stop: the image's STOPSIGNAL (SIGTERM), and idp exits by itself with status 0; a
    # process that ignores it is killed after the timeout (status 137).
    podman("stop", "--time", "40", on_volume.name)
    status = on_volume.state()["ExitCode"]
    assert status == 0, (
        f"`podman stop` ended the container with status {status}, not 0 (137: killed after the "
        "timeout): the stop signal did not reach idp (the image's STOPSIGNAL, a shell as its "
        f"CMD), or idp does not exit cleanly on SIGTERM:\n{on_volume.logs()}"
    )
    on_volume.remove()

    again = run_container(image, env={"IDP_SECRET_KEY": SECRET_KEY}, volume=volume)
    try:
        again.wait_serving()
        visitor = Visitor(again.url)
        users = again.exec("idp", "users", "list")
        assert email in users, (
            f"the user made by `idp` in the first container is not in a new container on the same "
            f"volume: the database is not on the volume /data\n{users}"
        )
        visitor.sign_in_with_password(email, PASSWORD)
        assert visitor.get("/account").status_code == 200, (
            "the user made in the first container cannot sign in to a new one on the same volume"
        )
        visitor.close()
        jwks = requests.get(again.url + "/jwks", timeout=10).json()["keys"]
        assert {key["kid"] for key in jwks} == kids, "the signing keys did not survive"
    finally:
        again.remove()


# -- containers on the machine's PostgreSQL -------------------------------------------------------
@pytest.fixture(scope="module")
def postgres_url(image: str) -> Iterator[str]:
    with throwaway_postgres_database() as url:
        yield url


def _on_postgres(image: str, url: str) -> Container:
    container = run_container(
        image,
        env={"IDP_SECRET_KEY": SECRET_KEY, "IDP_DATABASE_URL": url},
        host_network=True,
        # On the host's network the port is the host's: a free one, loopback only.
        command=("idp", "serve", "--production", "--host", "127.0.0.1", "--port", "{port}"),
    )
    try:
        container.wait_serving()
    except BaseException:
        container.remove()
        raise
    return container


@pytest.fixture(scope="module")
def on_postgres(image: str, postgres_url: str) -> Iterator[tuple[Container, Container, str]]:
    """Two containers on one PostgreSQL database, and a user made with `idp` in the first."""
    # One after the other: the first prepares the database (migrations, keys).
    first = _on_postgres(image, postgres_url)
    try:
        second = _on_postgres(image, postgres_url)
        try:
            email = f"shared-{secrets.token_hex(3)}@example.com"
            first.exec(
                "idp", "users", "create", email, "--password-stdin", "--json", input=PASSWORD
            )
            yield first, second, email
        finally:
            second.remove()
    finally:
        first.remove()


def test_two_containers_on_postgresql_serve_the_same_users(
    on_postgres: tuple[Container, Container, str],
) -> None:
    first, second, email = on_postgres
    for container in (second, first):
        visitor = Visitor(container.url)
        visitor.sign_in_with_password(email, PASSWORD)
        assert visitor.get("/account").status_code == 200, container.name
        visitor.close()
    assert requests.get(second.url + "/readyz", timeout=10).status_code == 200


def test_sigterm_with_a_sign_in_in_flight_finishes_it_and_exits_0(
    on_postgres: tuple[Container, Container, str], postgres_url: str
) -> None:
    first, node, email = on_postgres
    visitor = Visitor(node.url)
    form = {"csrf_token": visitor.csrf_field("/login"), "email": email, "password": PASSWORD}
    answer: list[requests.Response | BaseException] = []

    def sign_in() -> None:
        try:
            answer.append(visitor.post("/login", data=form))
        except BaseException as error:  # asserted below
            answer.append(error)

    engine = create_engine(postgres_url)
    waiting = text(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND wait_event_type = 'Lock' AND query ILIKE '%users%'"
    )
    try:
        with (
            engine.connect() as holder,
            # Autocommit: pg_stat_activity is read afresh by each statement, not once per
            # transaction.
            engine.connect().execution_options(isolation_level="AUTOCOMMIT") as observer,
        ):
            # The sign-in reads the user, so it waits for this lock: it stays in flight until the
            # test rolls back.
            holder.execute(text("LOCK TABLE users IN ACCESS EXCLUSIVE MODE"))
            thread = threading.Thread(target=sign_in)
            thread.start()
            wait_until(
                lambda: observer.execute(waiting).scalar_one() >= 1 and not answer,
                "the sign-in waiting for the users table",
            )
            podman("kill", "--signal", "TERM", node.name)
            wait_until(
                lambda: "Shutting down" in node.logs(),
                "the server logging that it shuts down after SIGTERM (the signal did not reach "
                "it, or it does not handle it)",
            )
            assert not answer, f"the sign-in finished before the lock was released: {answer}"
            assert node.state()["Running"], (
                f"after SIGTERM the container exited with a request in flight:\n{node.logs()}"
            )
            holder.rollback()
        thread.join(timeout=120)
    finally:
        engine.dispose()
    assert answer, "the sign-in got no answer"
    response = answer[0]
    assert isinstance(response, requests.Response), (
        f"the sign-in in flight when SIGTERM came failed: {response!r}\n{node.logs()}"
    )
    assert response.status_code == 302, (
        "the sign-in in flight when SIGTERM came did not complete: "
        f"HTTP {response.status_code} {response.text[:300]}"
    )
    assert response.headers["Location"].endswith("/account"), response.headers["Location"]
    status = node.wait_exit()
    assert status == 0, f"after SIGTERM the container exited with {status}, not 0:\n{node.logs()}"
    visitor.close()
    # The first node still serves (nothing else was stopped).
    assert requests.get(first.url + "/healthz", timeout=10).status_code == 200
