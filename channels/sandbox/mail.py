"""SendGrid v3 `/mail/send` request validation, with SendGrid's rules and error wording.

Pure: a parsed request body in, the list of SendGrid error objects out (empty when valid).
"""

from __future__ import annotations

from typing import Any

MAX_PERSONALIZATIONS = 1000
_HELP = "http://sendgrid.com/docs/API_Reference/Web_API_v3/Mail/errors.html#message.{}"


def _error(message: str, field: str | None, anchor: str) -> dict[str, Any]:
    return {"message": message, "field": field, "help": _HELP.format(anchor)}


def _valid_address(item: Any) -> bool:
    if not isinstance(item, dict):
        return False
    email = item.get("email")
    return isinstance(email, str) and "@" in email.strip("@") and " " not in email


def validate_mail(body: Any) -> list[dict[str, Any]]:
    if not isinstance(body, dict):
        return [_error("Bad Request", None, "body")]
    errors: list[dict[str, Any]] = []
    personalizations = body.get("personalizations")
    if not isinstance(personalizations, list) or not personalizations:
        errors.append(
            _error(
                "The personalizations field is required and must have at least one personalization.",
                "personalizations",
                "personalizations",
            )
        )
        personalizations = []
    elif len(personalizations) > MAX_PERSONALIZATIONS:
        errors.append(
            _error(
                "The personalizations field must contain at most 1000 personalization objects.",
                "personalizations",
                "personalizations",
            )
        )
        personalizations = []

    seen: set[str] = set()
    every_has_subject = bool(personalizations)
    for i, p in enumerate(personalizations):
        if not isinstance(p, dict):
            errors.append(
                _error("Invalid type. Expected: object.", f"personalizations.{i}", "personalizations")
            )
            every_has_subject = False
            continue
        if not (isinstance(p.get("subject"), str) and p["subject"]):
            every_has_subject = False
        to = p.get("to")
        if not isinstance(to, list) or not to or not all(_valid_address(a) for a in to):
            errors.append(
                _error(
                    "The to array is required for all personalization objects, and must have at least "
                    "one email object with a valid email address.",
                    f"personalizations.{i}.to",
                    "personalizations.to",
                )
            )
            continue
        for kind in ("to", "cc", "bcc"):
            for item in p.get(kind) or []:
                if not _valid_address(item):
                    continue
                address = item["email"].strip().lower()
                if address in seen:
                    errors.append(
                        _error(
                            "Each email address in the personalization block should be unique between "
                            f"to, cc, and bcc. We found the first duplicate instance of [{item['email']}] "
                            f"in the personalizations.{i}.{kind} field.",
                            f"personalizations.{i}.{kind}",
                            "personalizations",
                        )
                    )
                    return errors
                seen.add(address)

    sender = body.get("from")
    if not _valid_address(sender):
        errors.append(
            _error(
                "The from object must be provided for every email send. It is an object that requires "
                "the email parameter, but may also contain a name parameter.",
                "from.email",
                "from",
            )
        )
    subject = body.get("subject")
    if not (isinstance(subject, str) and subject) and not every_has_subject:
        errors.append(
            _error(
                "The subject is required. You can get around this requirement if you use a template "
                "with a subject defined or if every personalization has a subject defined.",
                "subject",
                "subject",
            )
        )
    content = body.get("content")
    if not isinstance(content, list) or not content:
        if not body.get("template_id"):
            errors.append(
                _error(
                    "Unless a valid template_id is provided, the content parameter is required. There "
                    "must be at least one defined content block.",
                    "content",
                    "content",
                )
            )
    else:
        for i, block in enumerate(content):
            if not (isinstance(block, dict) and block.get("type") and isinstance(block.get("value"), str)):
                errors.append(
                    _error(
                        "The content value must be a string at least one character in length.",
                        f"content.{i}.value",
                        "content.value",
                    )
                )
        types = [b.get("type") for b in content if isinstance(b, dict)]
        if "text/plain" in types and types[0] != "text/plain":
            errors.append(
                _error(
                    "If present, text/plain content must be first, followed by text/html, followed by "
                    "any other content.",
                    "content.0.type",
                    "content.type",
                )
            )
    return errors


def addresses(personalization: dict[str, Any]) -> list[str]:
    """Every recipient of one personalization: to, then cc, then bcc."""
    return [
        item["email"]
        for kind in ("to", "cc", "bcc")
        for item in personalization.get(kind) or []
        if isinstance(item, dict)
    ]
