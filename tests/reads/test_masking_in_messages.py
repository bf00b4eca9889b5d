"""A provider's error message may quote the recipient's address (Twilio's 21211 does): the receipts
and a delivery's story mask it there too, unless the read is an audited reveal."""

from __future__ import annotations

from config import Settings
from dispatcher.domain.masking import mask_within
from dispatcher.reads.receipts import receipts
from dispatcher.reads.story import delivery_story
from dispatcher.store.db import Database
from dispatcher.store.models import Broadcast, Delivery

TWILIO_21211 = "Unable to create record: Invalid 'To' Phone Number: +14155550123"


def test_an_address_quoted_in_a_message_is_masked_in_every_form() -> None:
    assert mask_within(TWILIO_21211, "sms", "+14155550123") == (
        "Unable to create record: Invalid 'To' Phone Number: +14•••••••23"
    )
    assert mask_within("to 14155550123 and +14155550123", "sms", "+14155550123") == (
        "to +14•••••••23 and +14•••••••23"
    )
    assert mask_within("550 Ann@Example.com: no such user", "email", "ann@example.com") == (
        "550 a•••@e•••.com: no such user"
    )
    assert mask_within("Invalid number", "sms", "+14155550123") == "Invalid number"
    assert mask_within(None, "sms", "+14155550123") is None


def test_receipts_and_the_story_mask_the_address_in_the_providers_message(db: Database) -> None:
    with db.session() as session:
        broadcast = Broadcast(event="incident_opened", policy={"channels": ["sms"]})
        session.add(broadcast)
        session.flush()
        row = Delivery(
            broadcast_id=broadcast.id,
            tier=0,
            channel="sms",
            address="+14155550123",
            state="failed",
            last_error_code="21211",
            last_error=TWILIO_21211,
        )
        session.add(row)
        session.flush()
        broadcast_id, delivery_id = broadcast.id, row.id
    with db.session() as session:
        masked = receipts(session, broadcast_id)["receipts"][0]
        assert "+14155550123" not in str(masked) and masked["last_error"].endswith("+14•••••••23")
        revealed = receipts(session, broadcast_id, mask=False)["receipts"][0]
        assert revealed["last_error"] == TWILIO_21211
        story = delivery_story(session, Settings(database_url=db.url), delivery_id)
        assert "+14155550123" not in str(story)
