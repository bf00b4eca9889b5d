"""Languages and zones through a real worker and the provider sandbox: each subscriber reads the
closest language we have (de-AT reads German, an unknown locale English), the commander's own German
and Japanese words reach those readers, times are in each reader's zone with the zone named (JST;
EST or EDT as the date requires), and the broadcast renders one variant per language x zone present,
not one per recipient."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from channels.base import ChannelName
from dispatcher.domain.message import OutageMessage
from dispatcher.domain.subscribers import SubscriberIn
from dispatcher.store.models import BroadcastVariant, Delivery
from tests.harness import Harness

pytestmark = pytest.mark.slow

READERS = {  # address: (locale, zone)
    "en@example.com": ("en", "UTC"),
    "de@example.com": ("de", "UTC"),
    "at@example.com": ("de-AT", "UTC"),
    "ja@example.com": ("ja", "Asia/Tokyo"),
    "xx@example.com": ("xx", "UTC"),
    "ny@example.com": ("en", "America/New_York"),
}
# the keys those six make (domain/variant_key.py), written out by hand: de-AT reads de; xx reads en
KEYS = {"en", "de", "ja@Asia/Tokyo", "en@America/New_York"}
GERMAN_TITLE = "Der Checkout schlägt fehl"
JAPANESE_TITLE = "決済が失敗しています"


def test_every_reader_gets_their_language_and_zone(harness: Harness) -> None:
    harness.subscribers(
        [
            SubscriberIn(external_id=a, lists=["customers"], email=a, locale=loc, timezone=zone)
            for a, (loc, zone) in READERS.items()
        ]
        + [
            SubscriberIn(
                external_id="ja-sms",
                lists=["customers"],
                phone="+15005550123",
                channels=["sms"],
                locale="ja",
                timezone="Asia/Tokyo",
            )
        ]
    )
    harness.worker()
    soon = (datetime.now(UTC) + timedelta(hours=1)).replace(month=12, day=1, hour=15, minute=0, second=0)
    if soon < datetime.now(UTC):
        soon = soon.replace(year=soon.year + 1)
    july = datetime(soon.year + 1, 7, 1, 12, 0, tzinfo=UTC)
    message = OutageMessage.model_validate(
        {
            "title": "Checkout is failing",
            "impact": "major",
            "summary": "Payments fail with 502 errors.",
            "next_update_at": soon.isoformat(),  # December: New York is on EST
            "eta": july.isoformat(),  # July: New York is on EDT
            "translations": {"de": {"title": GERMAN_TITLE}, "ja": {"title": JAPANESE_TITLE}},
        }
    )
    broadcast_id = harness.open(message, channels=[ChannelName.EMAIL, ChannelName.SMS])
    done = harness.wait(broadcast_id)
    assert done["totals"]["failed"] == 0, done

    mail = {m["recipient"].lower(): m for m in harness.sandbox.messages("email")}
    assert set(mail) == set(READERS)
    for address in ("de@example.com", "at@example.com"):
        assert GERMAN_TITLE in mail[address]["subject"], mail[address]["subject"]
    assert JAPANESE_TITLE in mail["ja@example.com"]["subject"]
    # the fixed wording too: the status in each reader's language (de-AT and xx by their fallbacks)
    for address, status in [
        ("de@example.com", "Untersuchung läuft"),
        ("at@example.com", "Untersuchung läuft"),
        ("ja@example.com", "調査中"),
        ("xx@example.com", "Investigating"),
        ("en@example.com", "Investigating"),
    ]:
        assert status in mail[address]["text"], (address, mail[address]["text"])
    for address in ("en@example.com", "xx@example.com", "ny@example.com"):
        assert "Checkout is failing" in mail[address]["subject"]
        assert GERMAN_TITLE not in mail[address]["text"] and JAPANESE_TITLE not in mail[address]["text"]
    assert "JST" in mail["ja@example.com"]["text"]
    ny = mail["ny@example.com"]["text"]
    assert "EST" in ny and "EDT" in ny  # the next update in December, the estimate in July
    assert "JST" not in mail["en@example.com"]["text"] and "UTC" in mail["en@example.com"]["text"]

    (sms,) = harness.sandbox.messages("sms")
    assert JAPANESE_TITLE in sms["text"] and "JST" in sms["text"]

    with harness.database.session() as session:
        keys = set(
            session.scalars(select(Delivery.locale).where(Delivery.broadcast_id == broadcast_id).distinct())
        )
        assert keys == KEYS | {"en"}  # the public post reads the default language
        per_channel = dict(
            session.execute(
                select(BroadcastVariant.channel, func.count())
                .where(BroadcastVariant.broadcast_id == broadcast_id)
                .group_by(BroadcastVariant.channel)
            ).all()
        )
    # one rendering per key and channel, never per reader; the social post only for the public key
    assert per_channel.pop("social") == 1
    assert set(per_channel.values()) == {len(KEYS)}
