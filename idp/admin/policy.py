"""Admin console: the deployment's sign-in policy (idp.services.sign_in_policy).

The page shows each setting's value in force and whether it overrides the configured default;
saving stores the changed values for every node and records old and new values in the audit log.
"""

from __future__ import annotations

from typing import Any

from flask import flash, g, redirect, render_template, request, url_for

from idp.admin.blueprint import bp
from idp.composition import clock, request_context, runtime, services
from idp.extensions import db
from idp.services.lifetimes import LIFETIMES, in_words
from idp.services.sign_in_policy import (
    ATTESTATION_CHOICES,
    FIELDS,
    MAX_LOCKOUT_THRESHOLD,
    USER_VERIFICATION_CHOICES,
    PolicyError,
    StalePolicyError,
    change_policy,
    load_policy,
    overridden_fields,
    policy_from_settings,
    policy_version,
    reset_policy,
)

#: Fields shown as checkboxes: an unchecked box is absent from the form, so absent means off.
BOOLEAN_FIELDS = ("passwords_allowed", "signup_enabled", "admin_passkey_required", "passkey_prompt")


def _page(
    values: dict[str, Any] | None = None,
    error: str | None = None,
    *,
    version: str | None = None,
    status: int | None = None,
) -> Any:
    """``version``: the policy the form was read from (its hidden field); the one in force
    unless given."""
    settings = runtime().settings
    policy = load_policy(db.session(), settings)  # uncached: the page shows what is stored
    defaults = policy_from_settings(settings).as_dict()
    values = values or policy.as_dict()
    return render_template(
        "admin/policy.html",
        fields=FIELDS,
        version=version or policy_version(policy),
        values=values,
        # A lifetime in seconds read as days and hours ("1209600": 14 days), beside the number.
        in_words={
            name: in_words(int(value))
            for name, value in values.items()
            if name in LIFETIMES and LIFETIMES[name].unit == "seconds" and str(value).isdigit()
        },
        defaults={name: _shown(value) for name, value in defaults.items()},
        overridden=overridden_fields(db.session()),
        user_verification_choices=USER_VERIFICATION_CHOICES,
        attestation_choices=ATTESTATION_CHOICES,
        # With attestation roots configured, registrations are verified against them and ask
        # for "direct" at least, whatever the choice (idp.services.attestation).
        attestation_roots=bool(runtime().relying_party.attestation_roots),
        # The browser's own check; the server applies the same bounds (idp.services.lifetimes).
        limits={"lockout_threshold": MAX_LOCKOUT_THRESHOLD}
        | {f.name: LIFETIMES[f.name].high for f in FIELDS if f.name in LIFETIMES},
        error=error,
    ), status or (400 if error else 200)


def _shown(value: Any) -> str:
    """A configured default in words: on / off, a list, or the number."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, list):
        return ", ".join(value) or "any"
    return str(value)


@bp.get("/policy", endpoint="policy")
def policy_page() -> Any:
    """The sign-in policy: values in force, and which ones override the configuration."""
    return _page()


@bp.post("/policy")
def policy_save() -> Any:
    """Store the policy as submitted; each change is audited with its old and new value."""
    form = request.form
    changes: dict[str, Any] = {
        field.name: (field.name in form) if field.name in BOOLEAN_FIELDS
        else form.get(field.name, "")[:4000]
        for field in FIELDS
    }  # fmt: skip
    # The form sends every field as it showed them: saved only onto the policy it was read from,
    # so a page opened before another admin's change never undoes it unseen (a form without
    # its version likewise).
    version = form.get("version", "")[:64]
    try:
        changed = change_policy(db.session(), runtime().settings, changes, actor_id=g.admin.id,
                                context=request_context(), now=clock().now(),
                                expected_version=version)  # fmt: skip
    except StalePolicyError:
        db.session.rollback()
        return _page(error="Nothing was saved: someone changed the policy since this page was "
                           "opened. These are the values in force now; make your change again.",
                     status=409)  # fmt: skip
    except PolicyError as error:
        db.session.rollback()
        return _page(values=changes, error=f"Nothing was saved: {error}.", version=version)
    db.session.commit()
    services().policy_changed()
    flash(f"Policy saved ({len(changed)} change{'s' if len(changed) != 1 else ''})." if changed
          else "Nothing changed.", "info")  # fmt: skip
    return redirect(url_for("admin.policy"))


@bp.post("/policy/reset")
def policy_reset() -> Any:
    """Drop every override: the configured defaults apply again."""
    changed = reset_policy(db.session(), runtime().settings, actor_id=g.admin.id,
                           context=request_context(), now=clock().now())  # fmt: skip
    db.session.commit()
    services().policy_changed()
    flash("The configured defaults apply again." if changed else "Nothing was overridden.", "info")
    return redirect(url_for("admin.policy"))
