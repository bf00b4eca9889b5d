"""The providers' wire protocols: SendGrid, Twilio, Slack, X and a plain webhook receiver.

Each endpoint authenticates the way the provider does, runs the fault gate, validates like the
provider, records what a recipient would get, answers in the provider's shape, and queues the
status webhooks the provider would send later.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import re
import secrets
import time
from email.utils import formatdate
from typing import Any
from urllib.parse import parse_qs, parse_qsl, unquote, urlencode, urlsplit

from starlette.requests import Request
from starlette.responses import Response
from twitter_text import parse_tweet
from yarl import URL

from channels.sandbox.callbacks import CallbackSender, Job, Post
from channels.sandbox.faults import gate, json_response
from channels.sandbox.mail import addresses, validate_mail
from channels.sandbox.signing import EventWebhookSigner, twilio_signature
from channels.sandbox.state import FaultConfig, SandboxState, apply_substitutions

# What the service's SMS adapter stamps on each request, "<slot> <sent>" (channels/base.py
# SLOT_HEADER; the sandbox imports nothing of the service, so the name is repeated here and a test
# holds the two equal).
SLOT_HEADER = "X-Sandbox-Slot-At"

E164 = re.compile(r"^\+[1-9]\d{6,14}$")
MESSAGING_SERVICE = re.compile(r"^MG[0-9a-fA-F]{32}$")
GSM7 = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmnopqrstuvwxyzäöñüà^{}\\[~]|€"
)
EVENTS_PER_POST = 1000


def _segments(body: str) -> int:
    gsm = all(ch in GSM7 for ch in body)
    single, multi = (160, 153) if gsm else (70, 67)
    return 1 if len(body) <= single else -(-len(body) // multi)


class Providers:
    def __init__(
        self,
        state: SandboxState,
        signer: EventWebhookSigner,
        callbacks: CallbackSender,
        stopping: asyncio.Event,
        secret: str,
    ) -> None:
        self.state = state
        self.secret = secret  # the sandbox account's only credential (channels/sandbox/secret.py)
        self.signer = signer
        self.callbacks = callbacks
        self.stopping = stopping
        self._seq = 0

    def _next(self) -> int:
        self._seq += 1
        return self._seq

    # SendGrid ------------------------------------------------------------------------------------
    async def sendgrid_send(self, request: Request) -> Response:
        state = self.state
        state.count_call("sendgrid")
        refused = self._sendgrid_auth(request)
        if refused is not None:
            state.count_result("sendgrid", accepted=False)
            return refused
        fault = await gate(state, "sendgrid", self.stopping)
        if fault is not None:
            return fault
        try:
            body = json.loads(await request.body())
        except ValueError:
            state.count_result("sendgrid", accepted=False)
            return json_response(400, {"errors": [{"field": None, "message": "Bad Request", "help": None}]})
        errors = validate_mail(body)
        if errors:
            state.count_result("sendgrid", accepted=False)
            return json_response(400, {"errors": errors})

        message_id = secrets.token_urlsafe(16)[:22]
        now = time.time()
        text, html = None, None
        for block in body["content"]:
            if block["type"] == "text/plain" and text is None:
                text = block["value"]
            elif block["type"] == "text/html" and html is None:
                html = block["value"]
        sender = body["from"]["email"]
        config = state.faults["sendgrid"]
        bounce = {a.lower() for a in config.bounce}
        drop = {a.lower() for a in config.drop}
        records: list[dict[str, Any]] = []
        events: list[dict[str, Any]] = []
        stamp = int(now)
        for p in body["personalizations"]:
            subs = p.get("substitutions") or {}
            custom_args = {**(body.get("custom_args") or {}), **(p.get("custom_args") or {})}
            headers = {**(body.get("headers") or {}), **(p.get("headers") or {})}
            subject = apply_substitutions(p.get("subject") or body.get("subject") or "", subs)
            for address in addresses(p):
                records.append(
                    {
                        "channel": "email",
                        "provider": "sendgrid",
                        "recipient": address,
                        "provider_message_id": message_id,
                        "received_at": now,
                        "delivery_id": custom_args.get("delivery_id"),
                        "from": sender,
                        "subject": subject,
                        "custom_args": custom_args,
                        "headers": headers,
                        "substitutions": subs,
                        "_text": text if text is not None else html or "",
                        "_html": html,
                    }
                )
                base = {
                    **custom_args,
                    "email": address,
                    "timestamp": stamp,
                    "smtp-id": f"<{message_id}@sandbox.sendgrid.local>",
                    "sg_message_id": f"{message_id}.sandbox-{self._next()}",
                }
                lowered = address.lower()
                records[-1]["_sg_message_id"] = base["sg_message_id"]
                records[-1]["_status"] = "not_delivered" if lowered in drop | bounce else "delivered"
                if lowered in drop:
                    events.append({**base, "event": "dropped", "reason": "Bounced Address"})
                    continue
                events.append({**base, "event": "processed"})
                if lowered in bounce:
                    events.append(
                        {
                            **base,
                            "event": "bounce",
                            "type": "bounce",
                            "status": "5.1.1",
                            "reason": "550 5.1.1 The email account that you tried to reach does not exist.",
                        }
                    )
                else:
                    events.append({**base, "event": "delivered", "response": "250 OK"})
        state.add_records(records)
        state.count_result("sendgrid", accepted=True)
        self._queue_events(events, config.callback_delay_ms / 1000)
        return Response(status_code=202, headers={"X-Message-Id": message_id})

    def _sendgrid_auth(self, request: Request) -> Response | None:
        """401 unless the request carries the sandbox account's key, as SendGrid refuses a bad key."""
        auth = request.headers.get("authorization", "")
        if not auth.startswith("Bearer ") or not auth[7:].strip():
            message = "authorization required"
        elif not secrets.compare_digest(auth[7:].strip().encode(), self.secret.encode()):
            message = "The provided authorization grant is invalid, expired, or revoked"
        else:
            return None
        return json_response(401, {"errors": [{"field": None, "message": message, "help": None}]})

    def _dropped(self, provider: str) -> bool:
        """A status webhook lost on the way (fault `callback_drop_rate`), counted as such."""
        rate = self.state.faults[provider].callback_drop_rate
        if rate > 0 and self.state.draw(provider) < rate:
            self.state.count_callback(provider, ok=False, dropped=True)
            return True
        return False

    async def sendgrid_activity(self, request: Request) -> Response:
        """Email Activity API, `GET /v3/messages?query=msg_id="..."` (or `msg_id LIKE "...%"`) and
        `limit`: one entry per recipient message with its summary status."""
        refused = self._sendgrid_auth(request)
        if refused is not None:
            return refused
        match = _MSG_ID_QUERY.fullmatch(request.query_params.get("query", "").strip())
        try:
            limit = int(request.query_params.get("limit", "10"))
        except ValueError:
            limit = -1
        if match is None or not 1 <= limit <= 1000:
            return json_response(
                400, {"errors": [{"field": "query", "message": "invalid query or limit", "help": None}]}
            )
        wanted, like = match.group("value"), match.group("op").upper() == "LIKE"
        prefix = wanted[:-1] if like and wanted.endswith("%") else None
        send_id = (prefix or wanted).split(".", 1)[0]
        found = []
        for record in self.state.find(send_id):
            sg_id = record.get("_sg_message_id", "")
            if (prefix is not None and sg_id.startswith(prefix)) or sg_id == wanted:
                found.append(_activity(record))
        return json_response(200, {"messages": found[:limit]})

    def _queue_events(self, events: list[dict[str, Any]], delay_s: float) -> None:
        url = self.state.event_webhook_url
        if not url:
            return
        for event in events:
            event["sg_event_id"] = secrets.token_urlsafe(16)[:22]
        for start in range(0, len(events), EVENTS_PER_POST):
            if self._dropped("sendgrid"):
                continue
            batch = events[start : start + EVENTS_PER_POST]
            payload = json.dumps(batch, separators=(",", ":")).encode()
            timestamp = str(int(time.time()))
            headers = {
                "Content-Type": "application/json",
                "User-Agent": "SendGrid Event API",
                "X-Twilio-Email-Event-Webhook-Signature": self.signer.sign(timestamp, payload),
                "X-Twilio-Email-Event-Webhook-Timestamp": timestamp,
            }
            self.callbacks.submit(Job("sendgrid", [Post(url, payload, headers, len(batch))], delay_s))

    # Twilio --------------------------------------------------------------------------------------
    @staticmethod
    def _twilio_error(status: int, code: int, message: str) -> Response:
        return json_response(
            status,
            {
                "code": code,
                "message": message,
                "more_info": f"https://www.twilio.com/docs/errors/{code}",
                "status": status,
            },
        )

    async def twilio_messages(self, request: Request) -> Response:
        state = self.state
        state.count_call("twilio", stamp=_stamp(request))
        account_sid = request.path_params["account_sid"]
        if not self._twilio_authenticated(request, account_sid):
            state.count_result("twilio", accepted=False)
            return self._twilio_error(401, 20003, "Authenticate")
        auth_token = self.secret
        fault = await gate(state, "twilio", self.stopping)
        if fault is not None:
            return fault
        form = dict(parse_qsl((await request.body()).decode("utf-8"), keep_blank_values=True))
        to, from_number = form.get("To", ""), form.get("From") or None
        service = form.get("MessagingServiceSid") or None
        sender = from_number or service
        body = form.get("Body", "")
        config = state.faults["twilio"]
        error: tuple[int, str] | None = None
        if not to:
            error = (21604, "A 'To' phone number is required.")
        elif not sender:
            error = (21603, "A 'From' or 'MessagingServiceSid' parameter is required to send a message.")
        elif service is not None and not MESSAGING_SERVICE.match(service):
            error = (21705, f"Invalid Messaging Service Sid: {service}")
        elif from_number is not None and not E164.match(from_number):
            error = (21212, f"Invalid From Number: {from_number}")
        elif from_number is not None and config.senders and from_number not in config.senders:
            error = (21606, f"The From phone number {from_number} is not a valid, SMS-capable number.")
        elif not body:
            error = (21602, "Message body is required.")
        elif not E164.match(to) or to in config.invalid_numbers:
            error = (21211, f"Invalid 'To' Phone Number: {to}")
        elif to in config.opted_out:
            error = (21610, "Attempt to send to unsubscribed recipient")
        elif len(body) > 1600:
            error = (21617, "The concatenated message body exceeds the 1600 character limit.")
        if error is not None:
            state.count_result("twilio", accepted=False)
            return self._twilio_error(400, *error)

        sid = "SM" + secrets.token_hex(16)
        now = time.time()
        callback = form.get("StatusCallback")
        delivery = parse_qs(urlsplit(callback).query).get("delivery_id", [None])[0] if callback else None
        final, final_code = _twilio_final(config, to)
        state.add_records(
            [
                {
                    "channel": "sms",
                    "provider": "twilio",
                    "recipient": to,
                    "text": body,
                    "provider_message_id": sid,
                    "received_at": now,
                    "delivery_id": delivery,
                    "from": sender,  # the number, else the messaging service it went through
                    "messaging_service_sid": service,
                    "account_sid": account_sid,
                    "status_callback": callback,
                    "_status": final,
                    "_error_code": final_code,
                }
            ]
        )
        state.count_result("twilio", accepted=True)
        if callback:
            self._queue_status(callback, auth_token, account_sid, sid, form, config.callback_delay_ms / 1000)
        return json_response(201, _twilio_message(state.find(sid)[0], status="queued"))

    def _twilio_authenticated(self, request: Request, account_sid: str) -> bool:
        """Basic auth as the account, with the account's auth token: the sandbox's secret."""
        credentials = _basic_auth(request.headers.get("authorization", ""))
        if credentials is None or credentials[0] != account_sid or not credentials[1]:
            return False
        return secrets.compare_digest(credentials[1].encode(), self.secret.encode())

    async def twilio_fetch(self, request: Request) -> Response:
        """`GET .../Messages/{sid}.json`: the Message resource with its current (here: final) status."""
        account_sid = request.path_params["account_sid"]
        if not self._twilio_authenticated(request, account_sid):
            return self._twilio_error(401, 20003, "Authenticate")
        sid = request.path_params["sid"]
        found = [r for r in self.state.find(sid) if r.get("account_sid") == account_sid]
        if not found:
            return self._twilio_error(
                404,
                20404,
                f"The requested resource {request.url.path} was not found",
            )
        return json_response(200, _twilio_message(found[0]))

    def _queue_status(
        self,
        url: str,
        auth_token: str,
        account_sid: str,
        sid: str,
        form: dict[str, str],
        delay_s: float,
    ) -> None:
        config = self.state.faults["twilio"]
        to = form["To"]
        final, code = _twilio_final(config, to)
        statuses = [(final, code)] if final == "failed" else [("sent", None), (final, code)]
        if self._dropped("twilio"):
            return
        posts = []
        for status, error_code in statuses:
            params = {
                "AccountSid": account_sid,
                "ApiVersion": "2010-04-01",
                "From": form.get("From") or "",
                "MessageSid": sid,
                "MessageStatus": status,
                "SmsSid": sid,
                "SmsStatus": status,
                "To": to,
            }
            if error_code:
                params["ErrorCode"] = error_code
            headers = {
                "Content-Type": "application/x-www-form-urlencoded",
                "X-Twilio-Signature": twilio_signature(auth_token, url, params),
                "I-Twilio-Idempotency-Token": secrets.token_hex(16),
                "User-Agent": "TwilioProxy/1.1",
            }
            posts.append(Post(url, urlencode(params).encode(), headers))
        self.callbacks.submit(Job("twilio", posts, delay_s))

    # Slack ---------------------------------------------------------------------------------------
    async def slack_post_message(self, request: Request) -> Response:
        state = self.state
        raw = await request.body()
        content_type = request.headers.get("content-type", "")
        args: dict[str, Any]
        try:
            if content_type.startswith("application/json"):
                args = json.loads(raw or b"{}")
            elif content_type.startswith("multipart/form-data"):
                args = dict(await request.form())
            else:
                args = dict(parse_qsl(raw.decode("utf-8")))
        except ValueError:
            args = {}
        if isinstance(args.get("blocks"), str):
            try:
                args["blocks"] = json.loads(args["blocks"])
            except ValueError:
                return json_response(200, {"ok": False, "error": "invalid_blocks"})
        channel = str(args.get("channel") or "")
        state.count_call("slack", channel or None)
        auth = request.headers.get("authorization", "")
        token = auth[7:].strip() if auth.startswith("Bearer ") else str(args.get("token") or "")
        if not token:
            state.count_result("slack", accepted=False)
            return json_response(200, {"ok": False, "error": "not_authed"})
        fault = await gate(state, "slack", self.stopping, limit_key=channel)
        if fault is not None:
            return fault
        config = state.faults["slack"]
        text, blocks = args.get("text"), args.get("blocks")
        error = None
        if not channel or channel in config.bad_channels:
            error = "channel_not_found"
        elif channel in config.channel_errors:
            error = config.channel_errors[channel]
        elif not text and not blocks:
            error = "no_text"
        elif isinstance(blocks, list) and len(blocks) > 50:
            error = "invalid_blocks"
        if error is not None:
            state.count_result("slack", accepted=False)
            return json_response(200, {"ok": False, "error": error})
        now = time.time()
        ts = f"{int(now)}.{self._next() % 1_000_000:06d}"
        state.add_records(
            [
                {
                    "channel": "chat",
                    "provider": "slack",
                    "recipient": channel,
                    "text": text or "",
                    "provider_message_id": ts,
                    "received_at": now,
                    "blocks": blocks,
                }
            ]
        )
        state.count_result("slack", accepted=True)
        message = {"type": "message", "text": text or "", "user": "USANDBOX", "bot_id": "BSANDBOX", "ts": ts}
        if blocks:
            message["blocks"] = blocks
        return json_response(200, {"ok": True, "channel": channel, "ts": ts, "message": message})

    # X -------------------------------------------------------------------------------------------
    async def x_create_tweet(self, request: Request) -> Response:
        state = self.state
        state.count_call("x")
        if not request.headers.get("authorization", "").startswith("OAuth "):
            state.count_result("x", accepted=False)
            return json_response(
                401, {"title": "Unauthorized", "type": "about:blank", "status": 401, "detail": "Unauthorized"}
            )
        fault = await gate(state, "x", self.stopping)
        if fault is not None:
            return fault
        try:
            body = json.loads(await request.body())
            text = body.get("text") if isinstance(body, dict) else None
        except ValueError:
            text = None
        if not isinstance(text, str) or not text.strip() or not parse_tweet(text).valid:
            state.count_result("x", accepted=False)
            return json_response(
                400,
                {
                    "errors": [
                        {
                            "parameters": {"text": [text if isinstance(text, str) else ""]},
                            "message": "Tweet text is empty or longer than 280 weighted characters",
                        }
                    ],
                    "title": "Invalid Request",
                    "detail": "One or more parameters to your request was invalid.",
                    "type": "https://api.twitter.com/2/problems/invalid-request",
                },
            )
        if not state.remember_tweet(text):
            state.count_result("x", accepted=False)
            return json_response(
                403,
                {
                    "detail": "You are not allowed to create a Tweet with duplicate content.",
                    "type": "about:blank",
                    "title": "Forbidden",
                    "status": 403,
                },
            )
        now = time.time()
        tweet_id = str(((int(now * 1000) - 1288834974657) << 22) | (self._next() & 0x3FFFFF))
        state.add_records(
            [
                {
                    "channel": "social",
                    "provider": "x",
                    "recipient": "public",
                    "text": text,
                    "provider_message_id": tweet_id,
                    "received_at": now,
                    "weight": parse_tweet(text).weightedLength,
                }
            ]
        )
        state.count_result("x", accepted=True)
        return json_response(
            201, {"data": {"id": tweet_id, "text": text, "edit_history_tweet_ids": [tweet_id]}}
        )

    # webhook receiver ----------------------------------------------------------------------------
    async def webhook_local(self, url: URL, headers: list[tuple[str, str]], body: bytes) -> int:
        """A status webhook of the sandbox's own, to its own receiver, without the loopback round trip
        (channels/sandbox/callbacks.py): the request as uvicorn would present it (lower-case header
        names, the path decoded), through the same handler; its answer's status."""
        path = unquote(url.raw_path)

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "server": (url.host, url.port),
            "client": (url.host, 0),
            "scheme": url.scheme,
            "method": "POST",
            "root_path": "",
            "path": path,
            "raw_path": url.raw_path.encode("ascii"),
            "query_string": url.raw_query_string.encode("ascii"),
            "headers": [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers],
            "path_params": {"name": path.removeprefix("/hooks/")},
        }
        response = await self.webhook_receive(Request(scope, receive))
        return response.status_code

    async def webhook_receive(self, request: Request) -> Response:
        state = self.state
        state.count_call("webhook")
        fault = await gate(state, "webhook", self.stopping)
        if fault is not None:
            return fault
        raw = (await request.body()).decode("utf-8", errors="replace")
        content_type = request.headers.get("content-type", "")
        body: Any = None
        form: dict[str, str] | None = None
        if content_type.startswith("application/x-www-form-urlencoded"):
            form = dict(parse_qsl(raw, keep_blank_values=True))
        else:
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = None
        headers = dict(request.headers)
        state.add_records(
            [
                {
                    "channel": "webhook",
                    "provider": "webhook",
                    "recipient": request.path_params["name"],
                    "url": str(request.url),
                    "provider_message_id": None,
                    "received_at": time.time(),
                    "delivery_id": headers.get("x-dispatcher-delivery"),
                    "body": body,
                    "form": form,
                    "body_raw": raw,
                    "headers": headers,
                }
            ]
        )
        state.count_result("webhook", accepted=True)
        return json_response(200, {"ok": True})


_MSG_ID_QUERY = re.compile(r'msg_id\s*(?P<op>=|LIKE)\s*"(?P<value>[^"]+)"', re.IGNORECASE)


def _activity(record: dict[str, Any]) -> dict[str, Any]:
    """One Email Activity entry (its summary status: processed, delivered or not_delivered)."""
    return {
        "from_email": record["from"],
        "msg_id": record["_sg_message_id"],
        "subject": record["subject"],
        "to_email": record["recipient"],
        "status": record["_status"],
        "opens_count": 0,
        "clicks_count": 0,
        "last_event_time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record["received_at"])),
    }


def _twilio_final(config: FaultConfig, to: str) -> tuple[str, str | None]:
    """Where a Twilio message ends up, and its error code: the callbacks and the Message resource agree."""
    if to in config.failed:
        return "failed", "30008"
    if to in config.undelivered:
        return "undelivered", "30003"
    return "delivered", None


def _twilio_message(record: dict[str, Any], status: str | None = None) -> dict[str, Any]:
    """The Message resource as Twilio shows it: `status` overrides the final one (the create call
    answers `queued`)."""
    account_sid, sid, body = record["account_sid"], record["provider_message_id"], record["text"]
    created = formatdate(record["received_at"], usegmt=True)
    shown = status or record["_status"]
    code = record["_error_code"] if shown == record["_status"] else None
    return {
        "account_sid": account_sid,
        "api_version": "2010-04-01",
        "body": body,
        "date_created": created,
        "date_sent": None if shown == "queued" else created,
        "date_updated": created,
        "direction": "outbound-api",
        "error_code": int(code) if code else None,
        "error_message": None,
        "from": record["from"] if not record.get("messaging_service_sid") else None,
        "messaging_service_sid": record.get("messaging_service_sid"),
        "num_media": "0",
        "num_segments": str(_segments(body)),
        "price": None,
        "price_unit": "USD",
        "sid": sid,
        "status": shown,
        "subresource_uris": {"media": f"/2010-04-01/Accounts/{account_sid}/Messages/{sid}/Media.json"},
        "to": record["recipient"],
        "uri": f"/2010-04-01/Accounts/{account_sid}/Messages/{sid}.json",
    }


def _basic_auth(header: str) -> tuple[str, str] | None:
    if not header.startswith("Basic "):
        return None
    try:
        user, _, password = base64.b64decode(header[6:]).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return user, password


def _stamp(request: Request) -> tuple[float, float] | None:
    """(rate-limit slot, sent), epoch seconds, as the dispatcher stamped a request to the sandbox."""
    try:
        slot, sent = (float(v) for v in request.headers.get(SLOT_HEADER, "").split())
    except ValueError:
        return None
    return slot, sent
