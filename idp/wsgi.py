"""WSGI entry point for production servers: ``idp.wsgi:app``."""

from idp import create_app, json_logs, request_gate
from idp.settings import load_settings

# Each worker process logs JSON lines on stderr, whichever server imported it (docs/operations.md).
json_logs.configure(load_settings().log_level)
app = create_app()
# Off unless the test suite's server environment turns it on (idp.request_gate).
request_gate.install_if_enabled(app)
