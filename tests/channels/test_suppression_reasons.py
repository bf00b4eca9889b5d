"""The providers say which of their answers put an address on the suppression list, and which are
the person's refusal (recorded `suppressed`, not `failed`): the engine knows no provider code."""

from __future__ import annotations

from channels.base import REFUSALS, Failure, Outcome, StatusReport, SuppressionReason
from channels.email.adapter import event_reports
from channels.sms.adapter import _classify, status_callback_report


def test_sendgrid_events_carry_their_suppression_reason() -> None:
    events = [
        {"event": "bounce", "delivery_id": "1", "sg_message_id": "m.1", "reason": "550 no such user"},
        {"event": "bounce", "type": "blocked", "delivery_id": "2", "sg_message_id": "m.2"},
        {"event": "dropped", "delivery_id": "3", "sg_message_id": "m.3", "reason": "Bounced Address"},
        {"event": "delivered", "delivery_id": "4", "sg_message_id": "m.4"},
    ]
    found = {r.delivery_id: (r.state, r.error_code, r.suppression) for r in event_reports(events)}
    assert found == {
        1: ("bounced", "bounce", "bounce"),
        2: ("bounced", "blocked", None),  # temporary: the server may take it later
        3: ("suppressed", "dropped", "dropped"),
        4: ("delivered", None, None),
    }


def test_twilio_codes_become_reasons_at_send_and_in_callbacks() -> None:
    opted = _classify(7, 400, 21610, "unsubscribed recipient", None)
    invalid = _classify(8, 400, 21211, "invalid To", None)
    other = _classify(9, 400, 21614, "not a mobile", None)
    assert (opted.failure, opted.code, opted.suppression) == (Failure.PERMANENT, "21610", "opted_out")
    assert opted.recipient_refused and not invalid.recipient_refused and not other.recipient_refused
    assert (invalid.suppression, other.suppression) == ("invalid_number", None)
    report = status_callback_report(
        "5", {"MessageSid": "SM1", "MessageStatus": "failed", "ErrorCode": "21211"}
    )
    assert report is not None and (report.state, report.suppression) == ("failed", "invalid_number")
    late = status_callback_report(
        "5", {"MessageSid": "SM1", "MessageStatus": "undelivered", "ErrorCode": "30003"}
    )
    assert late is not None and late.suppression is None


def test_refusals_are_the_persons_own_no() -> None:
    assert set(REFUSALS) == {SuppressionReason.OPTED_OUT, SuppressionReason.UNSUBSCRIBED}
    assert Outcome.failed(1, Failure.PERMANENT, suppression="unsubscribed").recipient_refused
    assert not Outcome.failed(
        1, Failure.PERMANENT, code="21610"
    ).recipient_refused  # the code alone says nothing
    # a report parked before `suppression` existed (six fields) still loads
    assert StatusReport(*["twilio", 1, "SM1", "failed", "21211", "x"]).suppression is None
