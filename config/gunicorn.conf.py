"""Gunicorn settings for a production idp node (`gunicorn -c config/gunicorn.conf.py`).

`idp serve --production` runs granian by default and `--server gunicorn` runs gunicorn with these
same settings (idp/serving.py holds both); this file is for running gunicorn by hand.
docs/performance.md compares the two.

Nodes are stateless (sessions, challenges and rate-limit counters live in the database or Redis),
so any number of nodes can run behind a load balancer with these settings.
"""

import os


def _cpu_count() -> int:
    # sched_getaffinity honours CPU pinning (containers, taskset); os.cpu_count() does not.
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not available on macOS
        return os.cpu_count() or 1


# The application object; idp/wsgi.py builds it from the settings (IDP_CONFIG, IDP_* env).
wsgi_app = "idp.wsgi:app"

# Loopback by default so that a node is not exposed by accident; set IDP_BIND=0.0.0.0:5000 behind
# a reverse proxy or in a container.
bind = os.environ.get("IDP_BIND", "127.0.0.1:5000")

# One process per CPU: password hashing (Argon2id) and signing are CPU-bound and hold the GIL, so
# processes, not threads, give parallelism. WEB_CONCURRENCY (Gunicorn's usual knob) overrides it.
workers = int(os.environ.get("WEB_CONCURRENCY") or _cpu_count())

# Threads per process cover the I/O waits (database, Redis) without an async framework; gthread
# also keeps idle keep-alive connections from pinning a whole worker.
worker_class = "gthread"
threads = 4

# On SIGTERM (deploys, scale-in) let in-flight requests finish; 30 s matches common orchestrator
# grace periods, after which the worker is killed.
graceful_timeout = 30

# Idle keep-alive seconds: long enough for a browser to reuse its connection across the few
# requests of a sign-in, short enough not to tie up threads. Behind a load balancer that reuses
# upstream connections, raise it above the balancer's idle timeout (else: sporadic 502s).
keepalive = 5

# Access logs are off by default: they repeat what the proxy already logs and would put client
# addresses and URLs (which can carry login hints) in a second place. IDP_ACCESS_LOG=1 turns them
# on, to stdout. Errors always go to stderr.
accesslog = "-" if os.environ.get("IDP_ACCESS_LOG", "").lower() in ("1", "true", "yes") else None
errorlog = "-"

# idp is managed by signals (TERM for graceful shutdown); the control socket would be shared by
# every gunicorn on the host.
control_socket_disable = True
