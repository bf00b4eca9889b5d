"""What the service checks before it serves or sends, so a mistake is found at start, not mid-outage.

- a provider with only some of its credentials set is an error naming the missing setting;
- every template, overrides included, must render (a broken one is named);
- a channel that is enabled but has neither credentials nor a reachable sandbox is an error naming
  DISPATCHER_SANDBOX_URL;
- a live provider's status webhooks must be verifiable: live SendGrid needs its Event Webhook key,
  live Twilio a well-formed account SID and a non-empty auth token (the token signs its callbacks);
  a sandboxed SendGrid or Twilio needs the sandbox's per-run secret (DISPATCHER_SANDBOX_SECRET),
  without which every receipt would be refused;
- bootstrap API keys (DISPATCHER_API_KEYS) must be well formed and at least 32 characters each;
- the report says, per channel, whether it talks to the real provider or to the sandbox.
"""

from __future__ import annotations

import re

import httpx
from pydantic import SecretStr

from channels.base import ChannelName
from channels.registry import PROVIDERS, provider_modes
from channels.rendering import templates_for
from config import Settings
from dispatcher.domain.errors import ConfigurationError

CREDENTIALS: dict[ChannelName, tuple[str, ...]] = {
    ChannelName.EMAIL: ("sendgrid_api_key",),
    ChannelName.SMS: ("twilio_account_sid", "twilio_auth_token"),
    ChannelName.CHAT: ("slack_bot_token",),
    ChannelName.SOCIAL: ("x_consumer_key", "x_consumer_secret", "x_access_token", "x_access_token_secret"),
}


def env_name(field: str) -> str:
    return f"DISPATCHER_{field.upper()}"


def check_credentials(settings: Settings) -> None:
    for channel in map(ChannelName, settings.channels_enabled):  # settings hold plain strings
        fields = CREDENTIALS.get(channel, ())
        missing = [f for f in fields if getattr(settings, f) is None]
        if missing and len(missing) < len(fields):
            names = ", ".join(env_name(f) for f in missing)
            raise ConfigurationError(
                f"{channel.value}: {PROVIDERS[channel]} credentials are incomplete; set {names} "
                f"(or unset them all to use the provider sandbox)",
                fields=[env_name(f) for f in missing],
            )


TWILIO_SID = re.compile(r"^AC[0-9a-fA-F]{32}$")


def _blank(value: SecretStr | None) -> bool:
    return value is None or not value.get_secret_value().strip()


def check_webhook_secrets(settings: Settings) -> None:
    """Receipts are only as trustworthy as the key that verifies them: refuse to start without one."""
    enabled = set(settings.channels_enabled)
    live_sendgrid = ChannelName.EMAIL in enabled and settings.sendgrid_api_key is not None
    if live_sendgrid and _blank(settings.sendgrid_webhook_public_key):
        raise ConfigurationError(
            "email: SendGrid is live but DISPATCHER_SENDGRID_WEBHOOK_PUBLIC_KEY (its Event Webhook "
            "verification key) is unset, so no delivery event could be verified",
            fields=["DISPATCHER_SENDGRID_WEBHOOK_PUBLIC_KEY"],
        )
    live_twilio = settings.twilio_account_sid is not None and settings.twilio_auth_token is not None
    if ChannelName.SMS in enabled and live_twilio:
        assert settings.twilio_account_sid is not None
        if not TWILIO_SID.match(settings.twilio_account_sid.get_secret_value().strip()):
            raise ConfigurationError(
                "sms: DISPATCHER_TWILIO_ACCOUNT_SID is not a Twilio account SID (AC + 32 hex digits)",
                fields=["DISPATCHER_TWILIO_ACCOUNT_SID"],
            )
        if _blank(settings.twilio_auth_token):
            raise ConfigurationError(
                "sms: DISPATCHER_TWILIO_AUTH_TOKEN is empty; it also verifies Twilio's status callbacks",
                fields=["DISPATCHER_TWILIO_AUTH_TOKEN"],
            )
    needs_secret = [c for c in sandboxed(settings) if c in (ChannelName.EMAIL, ChannelName.SMS)]
    if needs_secret and _blank(settings.sandbox_secret):
        names = ", ".join(c.value for c in needs_secret)
        raise ConfigurationError(
            f"{names}: sandboxed, but DISPATCHER_SANDBOX_SECRET (the sandbox's per-run secret, which "
            f"`outage-dispatcher up` makes and passes on) is unset, so the sandbox would refuse every "
            f"call and the service every receipt",
            fields=["DISPATCHER_SANDBOX_SECRET"],
        )


def check_api_keys(settings: Settings) -> None:
    from dispatcher.auth import parse_bootstrap

    if settings.api_keys is not None:
        parse_bootstrap(settings.api_keys.get_secret_value())


def check_templates(settings: Settings) -> None:
    templates_for(settings).check()


def sandboxed(settings: Settings) -> list[ChannelName]:
    return [c for c, mode in provider_modes(settings).items() if mode == "sandbox"]


def check_sandbox(settings: Settings, timeout_s: float = 3.0) -> None:
    waiting = sandboxed(settings)
    if not waiting:
        return
    try:
        httpx.get(settings.sandbox_url.rstrip("/") + "/sandbox/health", timeout=timeout_s).raise_for_status()
    except httpx.HTTPError:
        names = ", ".join(c.value for c in waiting)
        raise ConfigurationError(
            f"{names}: enabled without provider credentials, and the provider sandbox at "
            f"DISPATCHER_SANDBOX_URL={settings.sandbox_url} does not answer",
            fields=["DISPATCHER_SANDBOX_URL"],
        ) from None


def report(settings: Settings) -> list[str]:
    """One line per channel, e.g. `sms: sandbox (http://127.0.0.1:8001)` or `email: live (sendgrid)`."""
    lines = []
    for channel, mode in provider_modes(settings).items():
        where = settings.sandbox_url if mode == "sandbox" else PROVIDERS[channel]
        lines.append(f"{channel.value}: {mode} ({where})")
    return lines


def check(settings: Settings, *, sandbox: bool = True) -> list[str]:
    """Every check; returns the report. `sandbox=False` skips the reachability probe (used before
    `up` has started the sandbox)."""
    check_credentials(settings)
    check_webhook_secrets(settings)
    check_api_keys(settings)
    check_templates(settings)
    if sandbox:
        check_sandbox(settings)
    return report(settings)
