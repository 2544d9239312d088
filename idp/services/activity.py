"""The portal's activity page in words: one sentence per audit event a user can see (the events
whose subject is the user, idp.services.portal.activity), instead of the event's name.

Every kind of event the audit log records about a user has a sentence here, for success and
for failure; tests/unit/test_activity.py finds every kind the code can record and fails on one
without a sentence."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from idp.models import AuditEvent

#: Sentences by event kind: (when it succeeded, when it failed). ``{app}`` is the client's name,
#: ``{method}`` how the user signed in, ``{name}`` a passkey's name (each "" when unknown).
SENTENCES: dict[str, tuple[str, str]] = {
    # signing in
    "login.password": ("You signed in with your password",
                       "Someone tried to sign in with a wrong password"),
    "login.passkey": ("You signed in with a passkey", "A passkey sign-in was refused"),
    "login.totp": ("You entered a code from your authenticator app",
                   "A wrong authenticator app code was entered"),
    "login.backup_code": ("You signed in with a backup code", "A wrong backup code was entered"),
    "login.recovery": ("You recovered your account with a backup code",
                       "An account recovery with a backup code was refused"),
    "login.link": ("You signed in with a one-time link",
                   "A one-time sign-in link was refused"),
    "login_link.revoked": ("A sign-in link sent to you and not used stopped working: you "
                           "signed in without it",
                           "A sign-in link sent to you and not used stopped working"),
    "backup_code.used": ("A backup code was used: it no longer works", "A backup code was refused"),
    "logout": ("You signed out", "A sign-out failed"),
    # apps
    "authorization.code_issued": ("You signed in to {app}{method}", "Signing in to {app} failed"),
    "authorization.access_denied": ("{app} was refused access to your account",
                                    "{app} was refused access to your account"),
    "consent.granted": ("You allowed {app} to use your account",
                        "Allowing {app} to use your account failed"),
    "consent.denied": ("You did not allow {app} to use your account",
                       "You did not allow {app} to use your account"),
    "consent.revoked": ("You disconnected {app}", "Disconnecting {app} failed"),
    "token.refresh_retried": ("{app} renewed its access a second time (a retry)",
                              "{app} renewed its access a second time (a retry)"),
    "token.refresh_replayed": ("A used renewal token of {app} was presented again: its access "
                               "was ended", "A used renewal token of {app} was presented again: "
                               "its access was ended"),
    # sign-in methods
    "passkey.registered": ("You added a passkey{name}", "Adding a passkey failed"),
    "passkey.removed": ("You removed a passkey{name}", "Removing a passkey failed"),
    "passkey.renamed": ("You renamed a passkey, now{name}", "Renaming a passkey failed"),
    "passkey.flagged": ("A passkey{name} was flagged as a possible copy",
                        "A passkey{name} was flagged as a possible copy"),
    "totp.enabled": ("You set up an authenticator app", "Setting up an authenticator app failed"),
    "totp.removed": ("You removed your authenticator app",
                     "Removing your authenticator app failed"),
    "backup_codes.regenerated": ("You got new backup codes: the old ones stopped working",
                                 "Getting new backup codes failed"),
    "password.changed": ("You set a new password", "Setting a new password failed"),
    "password.removed": ("You removed your password", "Removing your password failed"),
    # sessions and profile
    "session.revoked": ("You signed out one of your sessions", "Signing out a session failed"),
    "session.revoked_others": ("You signed out all your other sessions",
                               "Signing out your other sessions failed"),
    "profile.updated": ("You changed your name", "Changing your name failed"),
    "email.change_requested": ("You asked to change your email address",
                               "Changing your email address was refused"),
    "email.change_cancelled": ("The email address change was cancelled",
                               "Cancelling the email address change failed"),
    "email.changed": ("Your email address was changed", "Changing your email address failed"),
    "email.verification_requested": ("You asked to confirm your email address",
                                     "Confirming your email address was refused"),
    "email.verified": ("You confirmed your email address",
                       "Confirming your email address failed"),
    # joining
    "invite.issued": ("An administrator invited you", "An invitation failed"),
    "invite.accepted": ("You accepted your invitation", "An invitation link was refused"),
    "login_link.issued": ("An administrator sent you a one-time sign-in link",
                          "Sending you a one-time sign-in link failed"),
    "signup.requested": ("You asked to sign up", "Someone asked to sign up with your address"),
    "signup.completed": ("You created your account", "Creating your account was refused"),
    # an administrator's actions on the account
    "admin.user_created": ("An administrator created your account",
                           "An administrator could not create your account"),
    "admin.login_link_revoked": ("An administrator cancelled a sign-in link sent to you",
                                 "An administrator could not cancel a sign-in link"),
    "admin.passkey_revoked": ("An administrator removed one of your passkeys",
                              "An administrator could not remove a passkey"),
    "admin.totp_reset": ("An administrator removed your authenticator app",
                         "An administrator could not remove your authenticator app"),
    "factor_locks.cleared": ("Your passkey sign-in lifted the limits on your codes after "
                             "wrong ones were typed",
                             "Lifting the limits on your codes failed"),
    "admin.user_unlocked": ("An administrator lifted the locks on your sign-in",
                            "An administrator could not lift the locks on your sign-in"),
    "admin.backup_codes_voided": ("An administrator voided your backup codes",
                                  "An administrator could not void your backup codes"),
    "admin.session_revoked": ("An administrator signed out one of your sessions",
                              "An administrator could not sign out a session"),
    "admin.sessions_revoked": ("An administrator signed you out everywhere",
                               "An administrator could not sign you out"),
    "admin.consent_revoked": ("An administrator disconnected {app}",
                              "An administrator could not disconnect {app}"),
    "admin.user_disabled": ("An administrator disabled your account",
                            "An administrator could not disable your account"),
    "admin.user_enabled": ("An administrator enabled your account",
                           "An administrator could not enable your account"),
    "admin.user_promoted": ("An administrator made you an administrator",
                            "An administrator could not make you an administrator"),
    # its creator disabled, demoted or deleted (idp.services.token_creators)
    "api_token.revoked": ("An admin API token you created was revoked",
                          "An admin API token you created could not be revoked"),
    "admin.user_demoted": ("An administrator removed your administrator role",
                           "An administrator could not remove your administrator role"),
    "admin.user_deleted": ("An administrator deleted your account",
                           "An administrator could not delete your account"),
    "admin.action_refused": ("An administrator's change to your account was refused",
                             "An administrator's change to your account was refused"),
    "group.member_added": ("An administrator added you to the group {group}",
                           "Adding you to the group {group} failed"),
    "group.member_removed": ("An administrator removed you from the group {group}",
                             "Removing you from the group {group} failed"),
    "admin.user_renamed": ("An administrator changed your name",
                           "An administrator could not change your name"),
    # a device signed in through you (RFC 8628)
    "device.user_code": ("You entered a device code",
                         "A device code you entered was wrong or had expired"),
    "device.approved": ("You let {app} sign in on a device",
                        "Letting {app} sign in on a device failed"),
    "device.access_refused": ("{app} is not open to you: a device code you entered was left "
                              "for its own user",
                              "{app} is not open to you: a device code you entered was left "
                              "for its own user"),
    "device.denied": ("You refused a device's request to sign in to {app}",
                      "You refused a device's request to sign in to {app}"),
    "device.tokens_issued": ("{app} signed in on your device",
                             "{app} could not sign in on your device"),
    "device.code_replayed": ("A device code of {app} was used twice: its access was ended",
                             "A device code of {app} was used twice: its access was ended"),
}  # fmt: skip

#: Events that never name a user as their subject: the console's and the operators' own. They
#: never reach a user's activity page (listed so that the unit test can tell them from a kind
#: that was forgotten).
NOT_ABOUT_A_USER = frozenset({
    "audit.exported", "dependency.unavailable", "policy.changed",
    "client.created", "client.updated", "client.deleted", "client.disabled", "client.enabled",
    "client.secret_rotated", "client.access_changed", "client.claim_maps_changed",
    "client.subjects_changed",
    "group.created", "group.renamed", "group.updated", "group.deleted",
    "device.authorization_requested",
    "api.authentication_failed", "api.access_denied", "api_token.created", "keys.rotated",
})  # fmt: skip

#: How the session of a sign-in at an app was made, from its amr (RFC 8176): the first entry whose
#: values the amr all holds. "otp" alone is a one-time link (an invite, a sign-up or rescue link)
#: or a backup code's recovery, whose session keeps that amr once it added a passkey
#: (``SessionService.promote``): beside a password it is the second step.
_METHODS = (
    (frozenset({"swk"}), " with a passkey"),
    (frozenset({"hwk"}), " with a passkey"),
    (frozenset({"pwd", "otp"}), " with your password and authenticator app"),
    (frozenset({"pwd"}), " with your password"),
    (frozenset({"otp"}), " with a one-time link or backup code"),
)


def describe_event(event: AuditEvent, app_names: Mapping[str, str]) -> str:
    """One sentence for the user about ``event``; ``app_names``: client names by client_id."""
    success, failure = SENTENCES.get(event.kind, ("", ""))
    template = success if event.outcome == "success" else failure
    details: Mapping[str, Any] = event.details or {}
    if not template:
        # A kind recorded about a user with no sentence yet (the unit test prevents it): still
        # a readable line rather than an internal name.
        template = event.kind.replace("_", " ").replace(".", ": ").capitalize()
    client_id = event.client_id or details.get("client_id") or ""
    amr = details.get("amr") or []
    name = details.get("name")
    sentence = template.format(
        app=app_names.get(client_id) or client_id or "an app",
        method=next((words for keys, words in _METHODS if keys <= set(amr)), ""),
        name=f" named “{name}”" if isinstance(name, str) and name else "",
        group=details.get("group") or "",
    )
    return sentence[:1].upper() + sentence[1:]
