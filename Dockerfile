# syntax=docker/dockerfile:1
# idp production image (docs/operations.md). Build: docker build -t idp .
# Run:  docker run -p 5000:5000 -v idp-data:/data -e IDP_SECRET_KEY=... -e IDP_ISSUER=https://... idp
# Settings come from IDP_* variables or a TOML file named by IDP_CONFIG (see
# config/production.example.toml); nothing secret is baked into the image. /data holds the
# instance files (the SQLite database when no database_url is set).

# --- build: install idp and its dependencies under /install, so the final image gets the installed
# files only (no sources, wheels or caches).
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# The dependencies first, in a layer of their own: pyproject.toml alone decides them, so a change
# to idp's code (or its readme) reuses this layer and reinstalls idp only.
COPY pyproject.toml ./
RUN python -c "import tomllib; print(*tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies'], sep=chr(10))" \
        > dependencies.txt \
    && pip install --prefix=/install --requirement dependencies.txt
# README.md is the package's readme in pyproject.toml, so the build needs it.
COPY README.md ./
COPY idp/ idp/
RUN pip install --prefix=/install --no-deps .

# --- runtime
FROM python:3.11-slim
# IDP_PRODUCTION: refuse to start with the development secret key (a container started without
# IDP_SECRET_KEY stops with the reason instead of signing tokens with a published key).
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    IDP_INSTANCE_PATH=/data \
    IDP_PRODUCTION=true

# idp brings both WSGI servers `idp serve` can run (granian by default, gunicorn on request).
# A plain COPY from the build stage: Docker (BuildKit) and podman/buildah both take it from a
# cached stage, which a RUN --mount=type=bind,from=build does not get from buildah, and nothing
# but the installed files reaches a layer of this image. Both stages have their Python under
# /usr/local, so the scripts' #!/usr/local/bin/python lines stay right.
COPY --from=build /install /usr/local

# An unprivileged user with a fixed uid, so volume ownership is predictable across rebuilds.
RUN useradd --system --uid 10001 --user-group --home-dir /nonexistent --no-create-home \
        --shell /usr/sbin/nologin idp \
    && mkdir -p /data \
    && chown idp:idp /data

WORKDIR /app
# The example configuration, for reference and mounting.
COPY config/ /app/config/

USER idp
VOLUME /data
EXPOSE 5000

# `idp serve` keeps the workers' metrics in a fresh private directory under /tmp (writable by
# this user; with a read-only root file system, mount a tmpfs there). SIGTERM stops it
# gracefully: requests in flight get up to 30 s, so give `docker stop` a longer timeout.
STOPSIGNAL SIGTERM

# Liveness: the process answers (readiness, /readyz, also needs the database and Redis; let the
# orchestrator probe that). python is already in the image; no need to add curl for this.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:5000/healthz', timeout=4)"]

CMD ["idp", "serve", "--production", "--host", "0.0.0.0", "--port", "5000"]
