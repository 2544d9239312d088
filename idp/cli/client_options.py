"""The options ``idp clients create`` and ``idp clients edit`` share (idp.cli.clients)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

#: A decorator that adds options to a command.
Options = Callable[[Callable[..., Any]], Callable[..., Any]]

KIND_HELP = "web: confidential, has a backend; spa / native: public, PKCE (native: RFC 8252)."


def client_options(create: bool) -> Options:
    """The options ``create`` and ``edit`` share; on ``edit`` an absent option changes nothing."""

    def flag(name: str, help: str) -> Options:
        if create:
            return click.option(name, is_flag=True, default=False, help=help)
        positive = name.removeprefix("--")
        return click.option(f"{name}/--not-{positive}", default=None, help=help)

    def apply(command: Callable[..., Any]) -> Callable[..., Any]:
        options: list[Options] = [
            click.option("--name", required=create, help="Shown to users on the consent page."),
            click.option("--kind", type=click.Choice(["web", "spa", "native"]), help=KIND_HELP),
            click.option(
                "--redirect-uri",
                "redirect_uris",
                multiple=True,
                help="Repeat for several"
                + ("" if create else "; replaces the list")
                + " (required with the authorization_code grant).",
            ),
            click.option(
                "--post-logout-redirect-uri",
                "post_logout_uris",
                multiple=True,
                help="Where the app may send users after logout (repeat"
                + (")." if create else "; replaces the list)."),
            ),
            click.option(
                "--auth-method",
                type=click.Choice(
                    ["client_secret_basic", "client_secret_post", "private_key_jwt", "none"]
                ),
                help="How the app authenticates at the token endpoint (default: "
                "client_secret_basic for a web app, none for a public one).",
            ),
            flag("--first-party", "Trusted: skips the consent screen."),
            click.option(
                "--id-token-alg",
                type=click.Choice(["RS256", "ES256", "EdDSA"]),
                help="The one algorithm the app's ID tokens are signed with (default RS256).",
            ),
            click.option("--scope", "scopes", multiple=True, help="Allowed scope (repeat)."),
            click.option(
                "--grant-type", "grant_types", multiple=True, help="Allowed grant type (repeat)."
            ),
            click.option(
                "--jwks-file",
                type=click.Path(exists=True, dir_okay=False, path_type=Path),
                help="The app's public keys (a JWKS file), for private_key_jwt.",
            ),
            click.option("--logo-uri", help="https URL of the logo on the consent page."),
            click.option("--tos-uri", help="https URL of the terms of service."),
            click.option("--policy-uri", help="https URL of the privacy policy."),
            # OpenID Connect Back-Channel Logout 1.0 (docs/integrating.md).
            click.option(
                "--backchannel-logout-uri",
                help="https URL that gets a logout token when a session of the app's users ends"
                + ("." if create else " ('' removes it)."),
            ),
            flag(
                "--backchannel-logout-session-required",
                "The app needs the session id (sid) in logout tokens (idp always sends it).",
            ),
            # RFC 9126 6 (docs/admins.md, "Pushed authorization requests").
            flag(
                "--require-par",
                "The app must push its authorization requests (POST /par, RFC 9126).",
            ),
            # RFC 9449 5.2 (docs/integrating.md, "DPoP").
            flag(
                "--require-dpop",
                "Every token request of the app must carry a DPoP proof (RFC 9449).",
            ),
            # OIDC Core 8 (docs/admins.md, "Pairwise subject identifiers").
            click.option(
                "--subject-type",
                type=click.Choice(["public", "pairwise"]),
                help="pairwise: a sub per sector, not the user's id (default public).",
            ),
            click.option(
                "--sector-identifier",
                help="A pairwise client's sector host (default: "
                "its redirect URIs' host)" + ("." if create else "; '' removes it."),
            ),
            click.option(
                "--allowed-group",
                "allowed_groups",
                multiple=True,
                help="Only members of this group may sign in (repeat)"
                + ("" if create else "; replaces the list")
                + ".",
            ),
            click.option(
                "--allow-everyone", is_flag=True, help="Every user may sign in (no group needed)."
            ),
            click.option(
                "--claim-map",
                "claim_maps",
                multiple=True,
                metavar="CLAIM:GROUP=VALUE",
                help="Members of GROUP get VALUE in CLAIM (repeat)"
                + ("" if create else "; replaces the maps")
                + ".",
            ),
            click.option("--json", "as_json", is_flag=True, help="Print JSON (for scripts)."),
        ]
        if create:
            options.append(click.option("--public", is_flag=True, help="Same as --kind spa."))
        else:
            options.append(
                click.option(
                    "--clear-post-logout-redirect-uris",
                    "clear_post_logout",
                    is_flag=True,
                    help="Remove every post-logout redirect URI.",
                )
            )
            options.append(
                click.option("--clear-claim-maps", is_flag=True, help="Remove every claim map.")
            )
            options.append(
                click.option(
                    "--confirm-subject-change",
                    is_flag=True,
                    help="Change the subject type or sector: every user gets another sub.",
                )
            )
        for option in reversed(options):
            command = option(command)
        return command

    return apply
