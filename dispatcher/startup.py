"""What the service checks before it serves or sends, so a mistake is found at start, not mid-outage.

- a provider with only some of its credentials set is an error naming the missing setting;
- every template, overrides included, must render (a broken one is named);
- a channel that is enabled but has neither credentials nor a reachable sandbox is an error naming
  DISPATCHER_SANDBOX_URL;
- bootstrap API keys (DISPATCHER_API_KEYS) must be well formed and at least 32 characters each;
- the report says, per channel, whether it talks to the real provider or to the sandbox.
"""

from __future__ import annotations

import httpx

from channels.base import ChannelName
from channels.registry import PROVIDERS, provider_modes
from channels.rendering import Templates
from config import Settings
from dispatcher.errors import ConfigurationError

CREDENTIALS: dict[ChannelName, tuple[str, ...]] = {
    ChannelName.EMAIL: ("sendgrid_api_key",),
    ChannelName.SMS: ("twilio_account_sid", "twilio_auth_token"),
    ChannelName.CHAT: ("slack_bot_token",),
    ChannelName.SOCIAL: ("x_consumer_key", "x_consumer_secret", "x_access_token", "x_access_token_secret"),
}


def env_name(field: str) -> str:
    return f"DISPATCHER_{field.upper()}"


def check_credentials(settings: Settings) -> None:
    for channel in settings.channels_enabled:
        fields = CREDENTIALS.get(channel, ())
        missing = [f for f in fields if getattr(settings, f) is None]
        if missing and len(missing) < len(fields):
            names = ", ".join(env_name(f) for f in missing)
            raise ConfigurationError(
                f"{channel.value}: {PROVIDERS[channel]} credentials are incomplete; set {names} "
                f"(or unset them all to use the provider sandbox)",
                fields=[env_name(f) for f in missing],
            )


def check_api_keys(settings: Settings) -> None:
    from dispatcher.auth import parse_bootstrap

    if settings.api_keys is not None:
        parse_bootstrap(settings.api_keys.get_secret_value())


def check_templates(settings: Settings) -> None:
    Templates(settings.templates_override_dir).check()


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
    check_api_keys(settings)
    check_templates(settings)
    if sandbox:
        check_sandbox(settings)
    return report(settings)
