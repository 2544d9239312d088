"""What a client's access page shows of its allowed groups, a bounded page at a time, and how a
save of one such page keeps the allowed groups it did not show. No Flask: the console's access
page (idp/admin/groups.py) reads these; the rules of access stay in ``idp.services.groups``.

The page lists the client's allowed groups by name, a page at a time (keyset,
idp.services.pages), each a box ticked to keep it, then the first page of the other groups to
allow one; past that page another group is allowed by typing its name. A save names the
allowed groups its page showed: those left unticked are no longer allowed, those on other pages
stay (``kept_beyond``), so however many groups a client allows none is dropped unseen. The save
holds to the version the page was read at (``GroupService.set_access``), so what the page
showed is what the client allowed when it saves.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from idp.models import ClientAllowedGroup, Group
from idp.services.pages import CONSOLE_PAGE, Page, keyset_page


def allowed_page(
    db: Session, client_id: str, cursor: str | None, limit: int = CONSOLE_PAGE
) -> Page[Group]:
    """A page of the groups the client allows, by name, from the cursor of the page's Previous
    and Next links: one statement whichever page it is."""
    statement = (
        select(Group)
        .join(ClientAllowedGroup, ClientAllowedGroup.group_id == Group.id)
        .where(ClientAllowedGroup.client_id == client_id)
    )
    return keyset_page(db, statement, Group.name, cursor=cursor, limit=limit)


def other_groups(
    db: Session, client_id: str, limit: int = CONSOLE_PAGE
) -> tuple[list[Group], bool]:
    """The first ``limit`` groups by name that the client does not allow, and whether there are
    more (the page then takes another by its name)."""
    allowed = select(ClientAllowedGroup.group_id).where(ClientAllowedGroup.client_id == client_id)
    statement = select(Group).where(Group.id.not_in(allowed))
    page = keyset_page(db, statement, Group.name, cursor=None, limit=limit)
    return list(page.items), page.next_cursor is not None


def kept_beyond(
    allowed_now: Sequence[str], shown: Sequence[str], chosen: Sequence[str]
) -> list[str]:
    """The allowed groups after a save of one page: those the page did not show, kept, and the
    ones it chose (ticked or typed). A group the page showed and the admin left unticked is the
    only one that goes."""
    seen = set(shown)
    return list(dict.fromkeys([*(name for name in allowed_now if name not in seen), *chosen]))
