"""cms' projections and the public profile."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg

from a4co.artisans.events.v1 import artisan_events_pb2 as artisan_events
from a4co.identity.events.v1 import identity_events_pb2 as identity_events
from services.platform.errors import NotFoundError
from services.platform.events.consumer import HandlerContext


@dataclass(frozen=True, slots=True)
class Deps:
    """What the use cases are built with."""

    pool: asyncpg.Pool


@dataclass(frozen=True, slots=True)
class PublicProfile:
    """What anyone may see of a user."""

    user_id: str
    display_name: str
    kind: str
    bio: str
    craft: str
    locality: str
    member_since: datetime | None
    offboard_time: datetime | None = None  # when the workshop left the marketplace


# A page is made only for a user who has not closed their account: an event about them may
# arrive after UserDeleted (a redelivery), and must not bring the page back.
UNLESS_FORGOTTEN = " WHERE NOT EXISTS (SELECT 1 FROM forgotten WHERE user_id = $1)"


async def on_user_deleted(deps: Deps, event: identity_events.UserDeleted, ctx: HandlerContext) -> None:
    """A user closed their account: their public page goes, for good."""
    await ctx.conn.execute(
        "INSERT INTO forgotten (user_id) VALUES ($1) ON CONFLICT DO NOTHING", event.user_id
    )
    await ctx.conn.execute("DELETE FROM profiles WHERE user_id = $1", event.user_id)


async def on_user_registered(deps: Deps, event: identity_events.UserRegistered, ctx: HandlerContext) -> None:
    """A new public page: the name and town only, never the e-mail the event also carries."""
    kind = "artisan" if event.role == identity_events.USER_ROLE_ARTISAN else "customer"
    since = event.register_time.ToDatetime(tzinfo=UTC) if event.register_time.seconds else datetime.now(UTC)
    await ctx.conn.execute(
        "INSERT INTO profiles (user_id, display_name, kind, locality, member_since)"
        f" SELECT $1, $2, $3, $4, $5{UNLESS_FORGOTTEN} ON CONFLICT (user_id) DO UPDATE SET"
        " member_since = coalesce(profiles.member_since, EXCLUDED.member_since),"
        " kind = CASE WHEN profiles.kind = 'artisan' THEN 'artisan' ELSE EXCLUDED.kind END",
        event.user_id,
        event.display_name,
        kind,
        event.locality,
        since,
    )


async def on_profile_updated(deps: Deps, event: identity_events.ProfileUpdated, ctx: HandlerContext) -> None:
    """The public fields of a changed profile, on a page without a workshop (an artisan's page
    shows the workshop's name, presentation and town)."""
    await ctx.conn.execute(
        f"INSERT INTO profiles (user_id, display_name, bio, locality) SELECT $1, $2, $3, $4{UNLESS_FORGOTTEN}"
        " ON CONFLICT (user_id) DO UPDATE SET display_name = EXCLUDED.display_name, bio = EXCLUDED.bio,"
        " locality = EXCLUDED.locality, updated_at = now() WHERE profiles.workshop_revision = 0",
        event.user_id,
        event.display_name,
        event.bio,
        event.locality,
    )


async def on_artisan(
    deps: Deps,
    event: artisan_events.ArtisanOnboarded | artisan_events.ArtisanUpdated | artisan_events.ArtisanOffboarded,
    ctx: HandlerContext,
) -> None:
    """A workshop's page: its name, craft, town and presentation, as of the newest revision, and
    when it left the marketplace (its last); and since when the artisan is a member, whichever
    event comes first."""
    if isinstance(event, artisan_events.ArtisanOnboarded):
        revision, since = 1, event.onboard_time
    else:
        revision, since = event.revision, None
    left = (
        event.offboard_time.ToDatetime(tzinfo=UTC)
        if isinstance(event, artisan_events.ArtisanOffboarded)
        else None
    )
    await ctx.conn.execute(
        "INSERT INTO profiles (user_id, display_name, kind, bio, craft, locality, workshop_revision,"
        f" offboarded_at) SELECT $1, $2, 'artisan', $3, $4, $5, $6, $7{UNLESS_FORGOTTEN}"
        " ON CONFLICT (user_id) DO UPDATE SET"
        " display_name = EXCLUDED.display_name, kind = 'artisan', bio = EXCLUDED.bio,"
        " craft = EXCLUDED.craft, locality = EXCLUDED.locality,"
        " workshop_revision = EXCLUDED.workshop_revision, offboarded_at = EXCLUDED.offboarded_at,"
        " updated_at = now() WHERE profiles.workshop_revision <= EXCLUDED.workshop_revision",
        event.artisan_id,
        event.display_name,
        event.bio,
        event.craft,
        event.locality,
        revision,
        left,
    )
    if since is not None:
        await ctx.conn.execute(
            "UPDATE profiles SET member_since = $2 WHERE user_id = $1 AND member_since IS NULL",
            event.artisan_id,
            since.ToDatetime(tzinfo=UTC) if since.seconds else datetime.now(UTC),
        )


async def public_profile(deps: Deps, user_id: str) -> PublicProfile:
    """A public page."""
    row = await deps.pool.fetchrow("SELECT * FROM profiles WHERE user_id = $1", user_id)
    if row is None:
        raise NotFoundError("PROFILE_NOT_FOUND", f"no public profile {user_id}")
    return PublicProfile(
        row["user_id"],
        row["display_name"],
        row["kind"],
        row["bio"],
        row["craft"],
        row["locality"],
        row["member_since"],
        row["offboarded_at"],
    )
