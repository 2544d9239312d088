"""WSGI entry point for production servers: ``idp.wsgi:app``."""

from idp import create_app, json_logs, request_gate
from idp.settings import load_settings

# Each worker process logs JSON lines on stderr, whichever server imported it (docs/operations.md);
# text lines when the setting says so (``idp serve`` sets it for a development start).
_settings = load_settings()
json_logs.configure(_settings.log_level, _settings.resolved_log_format(development=False))
app = create_app()
# Off unless the test suite's server environment turns it on (idp.request_gate).
request_gate.install_if_enabled(app)
