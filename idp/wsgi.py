"""WSGI entry point for production servers: ``idp.wsgi:app``."""

import gc

# Paused while the worker builds its application, as the ``idp`` command's start is (idp.cli
# ``run``): the collections it would run meanwhile walk objects that live as long as the worker.
gc.disable()

from idp import create_app, json_logs, request_gate  # noqa: E402 (after the pause)
from idp.settings import load_settings  # noqa: E402

# Each worker process logs JSON lines on stderr, whichever server imported it (docs/operations.md);
# text lines when the setting says so (``idp serve`` sets it for a development start).
_settings = load_settings()
json_logs.configure(_settings.log_level, _settings.resolved_log_format(development=False))
app = create_app()
# Off unless the test suite's server environment turns it on (idp.request_gate).
request_gate.install_if_enabled(app)
# The stand-in hash for sign-ins of no account, before the first request (PasswordService.warm).
app.extensions["idp"].passwords.warm()

# Everything built so far (the imported modules, the application with its settings, routes and
# keys: about 130,000 objects) lives as long as the worker: out of the cyclic garbage collector's
# sight from here on. Each of its full collections otherwise walked all of them while holding the
# GIL, 65 to 100 ms, and stopped every request of the worker for as long: under the benchmark's
# load the pauses came every few hundred sign-ins and were the passkey sign-in's p99
# (docs/performance-rounds.md, "The twelfth round"). The start's garbage (about 75,000 objects)
# is collected first; gc.freeze moves the rest to a permanent generation the collector ignores
# (docs.python.org/3/library/gc.html#gc.freeze).
gc.collect()
gc.freeze()
gc.enable()
