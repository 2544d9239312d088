"""WSGI entry point for production servers: ``idp.wsgi:app``."""

import gc

from idp import create_app, json_logs, request_gate
from idp.settings import load_settings

# Each worker process logs JSON lines on stderr, whichever server imported it (docs/operations.md);
# text lines when the setting says so (``idp serve`` sets it for a development start).
_settings = load_settings()
json_logs.configure(_settings.log_level, _settings.resolved_log_format(development=False))
app = create_app()
# Off unless the test suite's server environment turns it on (idp.request_gate).
request_gate.install_if_enabled(app)
# Everything built so far (the modules, the application, its settings, keys and routes) lives as
# long as the worker. Moved out of the collector's generations (gc.freeze: frozen objects are
# ignored by every later collection), it is no longer walked by a full collection, which holds
# the GIL, so every thread of the worker, while it runs: about 140,000 objects, 85 ms per full
# collection before, 0.2 ms after (docs/performance.md, "The tenth round"). The start-up's own
# garbage is collected first, so that none of it is kept for the worker's life.
gc.collect()
gc.freeze()
