"""The public post on X through tweepy's v2 `create_tweet`: one post per broadcast.

tweepy hard-codes `https://api.twitter.com` and sets no timeout; a transport adapter mounted on the
client's session rewrites that host (sandbox or configured base URL) and applies our timeout.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any, ClassVar

import requests
import tweepy
from requests.adapters import HTTPAdapter

from channels.base import (
    ChannelName,
    Failure,
    NoSlot,
    Outcome,
    Recipient,
    RenderContext,
    Throttle,
    Variant,
)
from channels.clients import SANDBOX_X_CREDENTIAL, PerProcess, announce_mode, retry_after
from channels.notice import Notice
from channels.rendering import Templates
from channels.social.condense import SocialVariant, condense_social
from config.settings import Settings

X_API = "https://api.twitter.com"


class RoutedAdapter(HTTPAdapter):
    """Sends X API requests to `base_url` (when set) with a default timeout."""

    def __init__(self, base_url: str | None, timeout: float) -> None:
        super().__init__()
        self.base_url = base_url.rstrip("/") if base_url else None
        self.timeout = timeout

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        if self.base_url and request.url and request.url.startswith(X_API):
            request.url = self.base_url + request.url[len(X_API) :]
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self.timeout
        return super().send(request, **kwargs)


class SocialChannel:
    name: ClassVar[ChannelName] = ChannelName.SOCIAL
    max_batch: ClassVar[int] = 1

    @staticmethod
    def rate_per_s(settings: Settings) -> float:
        """X counts posts per window (100 per 15 minutes by default): spread evenly over it."""
        return settings.rate_x_per_window / settings.rate_x_window_s

    def __init__(self, settings: Settings, templates: Templates | None = None) -> None:
        self.settings = settings
        self.templates = templates
        self._client: PerProcess[tweepy.Client] = PerProcess(self._make_client)

    @property
    def live(self) -> bool:
        s = self.settings
        keys = (s.x_consumer_key, s.x_consumer_secret, s.x_access_token, s.x_access_token_secret)
        return all(k is not None for k in keys)

    @property
    def base_url(self) -> str | None:
        if self.settings.x_base_url:
            return self.settings.x_base_url
        return None if self.live else self.settings.sandbox_url

    def _make_client(self) -> tweepy.Client:
        s = self.settings
        announce_mode(self.name, "X", self.live, self.base_url or X_API)

        def secret(value: Any) -> str:
            return value.get_secret_value() if self.live else SANDBOX_X_CREDENTIAL

        client = tweepy.Client(
            consumer_key=secret(s.x_consumer_key),
            consumer_secret=secret(s.x_consumer_secret),
            access_token=secret(s.x_access_token),
            access_token_secret=secret(s.x_access_token_secret),
        )
        client.session.mount(X_API, RoutedAdapter(self.base_url, s.provider_timeout_s))
        return client

    def warm(self) -> None:
        """Builds this process's client now, so the first message of an outage pays no set-up."""
        self._client.get()

    def condense(self, message: Notice, ctx: RenderContext) -> Variant:
        return condense_social(message, ctx, templates=self.templates)

    def load_variant(self, data: dict[str, Any]) -> Variant:
        return SocialVariant(**{**data, "channel": ChannelName(data["channel"])})

    def send(
        self, variant: Variant, recipients: Sequence[Recipient], throttle: Throttle | None = None
    ) -> list[Outcome]:
        """One post, whatever the batch: the post is public, so every recipient of the batch (normally
        the one "public" recipient) shares its outcome."""
        if not recipients:
            return []
        try:
            if throttle is not None:
                throttle(recipients[0])
        except NoSlot:
            return [Outcome.no_slot(r.delivery_id) for r in recipients]
        outcome = self._post(variant.text)
        return [replace(outcome, delivery_id=r.delivery_id) for r in recipients]

    def _post(self, text: str) -> Outcome:
        """An outcome with delivery id 0, copied per recipient by `send`."""
        client = self._client.get()
        try:
            response = client.create_tweet(text=text, user_auth=True)
        except tweepy.TooManyRequests as exc:
            wait = retry_after(_headers(exc))
            return Outcome.failed(0, Failure.RATE_LIMITED, code="429", error=_message(exc), retry_after=wait)
        except tweepy.TwitterServerError as exc:
            return Outcome.failed(
                0, Failure.RETRYABLE, code=str(exc.response.status_code), error=_message(exc)
            )
        except tweepy.HTTPException as exc:
            # 400 (too long), 401, 403 (duplicate content, suspended), 404: retrying cannot help
            return Outcome.failed(
                0, Failure.PERMANENT, code=str(exc.response.status_code), error=_message(exc)
            )
        except requests.Timeout as exc:
            return Outcome.failed(0, Failure.RETRYABLE, code="timeout", error=str(exc))
        except (requests.RequestException, OSError) as exc:
            return Outcome.failed(0, Failure.RETRYABLE, code="connection", error=str(exc))
        data: Mapping[str, Any] = response.data or {}  # type: ignore[union-attr]
        return Outcome.ok(0, str(data.get("id")))


def _headers(exc: tweepy.HTTPException) -> Mapping[str, Any]:
    return exc.response.headers


def _message(exc: tweepy.HTTPException) -> str:
    return "; ".join(str(m) for m in exc.api_messages) or str(exc)
