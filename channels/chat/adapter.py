"""Chat through Slack's `chat.postMessage`: one post per destination channel, many in flight.

The WebClient is built without retry handlers: retries belong to our engine (which honours the
global rate limit and backs off); an SDK retrying underneath would double-count and hide 429s.
"""

from __future__ import annotations

import http.client
from collections.abc import Sequence
from typing import Any, ClassVar, cast

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError

from channels.base import ChannelName, Failure, Outcome, Recipient, RenderContext, Throttle, Variant
from channels.chat.condense import ChatVariant, condense_chat
from channels.clients import SANDBOX_SLACK_TOKEN, PerProcess, announce_mode, executor, retry_after, send_each
from channels.notice import Notice
from channels.rendering import Templates
from config.settings import Settings

SLACK_API = "https://slack.com/api/"
# Slack errors that say "try again later" rather than "this will never work"
TRANSIENT_ERRORS = frozenset({"internal_error", "fatal_error", "service_unavailable", "request_timeout"})


class ChatChannel:
    name: ClassVar[ChannelName] = ChannelName.CHAT
    max_batch: ClassVar[int] = 50

    @staticmethod
    def rate_per_s(settings: Settings) -> float:
        """Slack's chat.postMessage rate, which it counts per channel posted to."""
        return settings.rate_slack_per_channel_per_s

    def __init__(self, settings: Settings, templates: Templates | None = None) -> None:
        self.settings = settings
        self.templates = templates
        self._client: PerProcess[WebClient] = PerProcess(self._make_client)
        self._pool = executor(self.settings.send_concurrency)

    @property
    def live(self) -> bool:
        return self.settings.slack_bot_token is not None

    @property
    def base_url(self) -> str:
        if self.settings.slack_base_url:
            return self.settings.slack_base_url.rstrip("/") + "/"
        return SLACK_API if self.live else self.settings.sandbox_url.rstrip("/") + "/api/"

    def _make_client(self) -> WebClient:
        token = self.settings.slack_bot_token
        announce_mode(self.name, "Slack", self.live, self.base_url)
        return WebClient(
            token=token.get_secret_value() if token is not None else SANDBOX_SLACK_TOKEN,
            base_url=self.base_url,
            timeout=cast(int, self.settings.provider_timeout_s),  # typed int, used as a float
            retry_handlers=[],
        )

    def warm(self) -> None:
        """Builds this process's client now, so the first message of an outage pays no set-up."""
        self._client.get()

    def condense(self, message: Notice, ctx: RenderContext) -> Variant:
        return condense_chat(message, ctx, templates=self.templates)

    def load_variant(self, data: dict[str, Any]) -> Variant:
        return ChatVariant(**{**data, "channel": ChannelName(data["channel"])})

    def send(
        self, variant: Variant, recipients: Sequence[Recipient], throttle: Throttle | None = None
    ) -> list[Outcome]:
        chat = cast(ChatVariant, variant)
        return send_each(self._pool.get(), recipients, lambda r: self._post(chat, r), throttle)

    def _post(self, variant: ChatVariant, recipient: Recipient) -> Outcome:
        client = self._client.get()
        try:
            response = client.chat_postMessage(
                channel=recipient.address, text=variant.text, blocks=variant.blocks or None
            )
        except SlackApiError as exc:
            return _classify(recipient.delivery_id, exc)
        except (SlackClientError, OSError, http.client.HTTPException) as exc:
            timeout = isinstance(exc, TimeoutError) or isinstance(getattr(exc, "reason", None), TimeoutError)
            code = "timeout" if timeout else "connection"
            return Outcome.failed(recipient.delivery_id, Failure.RETRYABLE, code=code, error=str(exc))
        return Outcome.ok(recipient.delivery_id, str(response.get("ts")))


def _classify(delivery_id: int, exc: SlackApiError) -> Outcome:
    response = exc.response
    status = int(response.status_code)
    data = response.data if isinstance(response.data, dict) else {}
    error = str(data.get("error") or status)
    if status == 429 or error == "ratelimited":
        return Outcome.failed(
            delivery_id,
            Failure.RATE_LIMITED,
            code=error,
            error=error,
            retry_after=retry_after(response.headers),
        )
    if status >= 500 or error in TRANSIENT_ERRORS:
        return Outcome.failed(delivery_id, Failure.RETRYABLE, code=error, error=error)
    return Outcome.failed(delivery_id, Failure.PERMANENT, code=error, error=error)
