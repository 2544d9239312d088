#!/usr/bin/env bash
# Build idp's container image from the repository's Dockerfile with Debian's podman (rootful),
# on a machine that reaches no image registry (docs/operations.md, "Building without an image registry").
#
#   scripts/container-image.sh [build]     prints the image reference (localhost/idp:src-HASH)
#   scripts/container-image.sh config      writes the podman configuration, prints its path
#   scripts/container-image.sh base        makes the python:3.11-slim stand-in when it is missing
#   scripts/container-image.sh podman ARGS runs podman with that configuration
#
# The image is tagged with a hash of what goes into it (the Dockerfile, pyproject.toml, README.md,
# idp/, config/ and the base image), and built only when no image has that tag. Needs root and
# `apt-get install --no-install-recommends podman runc mmdebstrap`. Progress goes to stderr.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# Both are in .gitignore and .dockerignore.
STATE_DIR=${IDP_CONTAINER_STATE:-$ROOT/build/container}
CONF=$STATE_DIR/containers.conf
# The base the Dockerfile names (the short name resolves to Docker Hub's library image).
BASE=docker.io/library/python:3.11-slim
IMAGE_REPOSITORY=localhost/idp
# podman's image store is one per machine: one build or base at a time, whichever checkout runs.
LOCK=/run/lock/idp-container-image.lock
# The machine's CA bundle: package traffic may pass through a proxy that only this bundle trusts.
CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
# What the base stand-in is made of; the base is remade when this recipe changes.
BASE_SUITE=bookworm
BASE_PACKAGES=python3,python3-venv,ca-certificates,netbase,tzdata,passwd
BASE_RECIPE="v1 $BASE_SUITE $BASE_PACKAGES venv=/usr/local"

say() { echo "container-image: $*" >&2; }

require_tools() {
    local missing=()
    for tool in podman runc mmdebstrap; do
        command -v "$tool" >/dev/null || missing+=("$tool")
    done
    if ((${#missing[@]})); then
        say "missing ${missing[*]}: apt-get install --no-install-recommends podman runc mmdebstrap"
        exit 2
    fi
    if [[ $(id -u) != 0 ]]; then
        say "rootful podman: run this as root"
        exit 2
    fi
}

# podman's defaults do not work on these machines: crun refuses the kernel's hybrid cgroup
# layout (runc accepts it), and the default rlimits are above what root may set here.
write_config() {
    mkdir -p "$STATE_DIR"
    local nofile written
    nofile=$(ulimit -Hn)
    [[ $nofile == unlimited ]] && nofile=1048576
    written=$(mktemp "$CONF.XXXXXX")
    cat >"$written" <<EOF
# Written by scripts/container-image.sh; use it with CONTAINERS_CONF=$CONF podman ...
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=4096:4096"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
EOF
    chmod 644 "$written"
    mv "$written" "$CONF"
}

run_podman() { CONTAINERS_CONF=$CONF podman "$@"; }

base_label() {
    run_podman image inspect --format '{{index .Labels "org.idp.base-recipe"}}' "$BASE" 2>/dev/null
}

# A stand-in for python:3.11-slim from Debian's own packages: bookworm's python3 (3.11) with a
# virtual environment at /usr/local, so that `python` and `pip` are where the official image has
# them. A real python:3.11-slim (no stand-in label) is left alone.
make_base() {
    local label
    if label=$(base_label); then
        if [[ -z $label || $label == "$BASE_RECIPE" ]]; then
            return 0
        fi
        say "the base stand-in's recipe changed; remaking it"
    fi
    local sources
    sources=$(mktemp -d)
    # shellcheck disable=SC2064  # expand now: the directory is this call's own
    trap "rm -rf '$sources'" RETURN
    # The machine's own Debian sources (mirror, snapshot, keyring), read on standard input.
    local list
    for list in /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list; do
        [[ -f $list ]] && grep -qi 'debian' "$list" && cat "$list" >>"$sources/debian.sources" && echo >>"$sources/debian.sources"
    done
    say "making the base stand-in $BASE (mmdebstrap of $BASE_SUITE)"
    mmdebstrap --quiet --variant=minbase --mode=root --format=tar \
        --include="$BASE_PACKAGES" \
        --customize-hook='chroot "$1" python3 -m venv /usr/local' \
        --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' \
        "$BASE_SUITE" "$sources/base.tar" - <"$sources/debian.sources" >&2
    run_podman import --quiet \
        --change 'ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'CMD ["python3"]' \
        --change "LABEL org.idp.base-recipe=\"$BASE_RECIPE\"" \
        "$sources/base.tar" "$BASE" >/dev/null
}

# The hash of everything the image is made of. __pycache__ and other local state are left out of
# the build context by .dockerignore, so they are left out here too.
source_hash() {
    local base_id
    base_id=$(run_podman image inspect --format '{{.Id}}' "$BASE")
    (
        cd "$ROOT"
        echo "base $base_id"
        find Dockerfile .dockerignore pyproject.toml README.md idp config -type f \
            ! -path '*/__pycache__/*' ! -name '*.pyc' ! -name '*.local.toml' \
            ! -name '*.db' ! -name '*.db-*' -print0 \
            | LC_ALL=C sort -z | xargs -0 sha256sum
    ) | sha256sum | cut -c1-16
}

build() {
    local tag
    tag="$IMAGE_REPOSITORY:src-$(source_hash)"
    if run_podman image exists "$tag"; then
        say "$tag is up to date"
    else
        say "building $tag"
        # --format docker keeps HEALTHCHECK (the OCI format has no field for it); --pull=never
        # uses the local base; the CA bundle is mounted read-only for the RUN steps only.
        run_podman build --format docker --pull=never --layers \
            --volume "$CA_BUNDLE:$CA_BUNDLE:ro" \
            --tag "$tag" --file "$ROOT/Dockerfile" "$ROOT" >&2
        run_podman tag "$tag" "$IMAGE_REPOSITORY:latest"
        # Keep the three newest source images; one still used by a container stays.
        run_podman images --noheading --sort created --format '{{.Repository}}:{{.Tag}}' \
            "$IMAGE_REPOSITORY" | grep ':src-' | tail -n +4 \
            | xargs -r env CONTAINERS_CONF="$CONF" podman rmi >/dev/null 2>&1 || true
    fi
    echo "$tag"
}

with_lock() {
    mkdir -p "$(dirname "$LOCK")"
    exec 9>"$LOCK"
    flock 9
    "$@"
}

command=${1:-build}
case $command in
build)
    require_tools
    write_config
    with_lock make_base
    build
    ;;
config)
    write_config
    echo "$CONF"
    ;;
base)
    require_tools
    write_config
    with_lock make_base
    ;;
podman)
    shift
    [[ -f $CONF ]] || write_config
    run_podman "$@"
    ;;
*)
    sed -n '2,12p' "${BASH_SOURCE[0]}" >&2
    exit 2
    ;;
esac
