"""The provider sandbox: a loopback server speaking SendGrid, Twilio, Slack and X's wire protocols.

Lets the real SDKs run end to end without the internet: it records what it receives, sends back
signed status webhooks the way the providers do, and injects faults on request.
"""

from channels.sandbox.server import SandboxServer, build_app
from channels.sandbox.state import PROVIDERS, FaultConfig

__all__ = ["PROVIDERS", "FaultConfig", "SandboxServer", "build_app"]
