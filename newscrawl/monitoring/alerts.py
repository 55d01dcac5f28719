"""Alerts for a run that warns or fails: a webhook (a JSON POST with Slack's `text`) and an
email (SMTP, STARTTLS, login). Each is tried `retries` more times with a doubling backoff;
one that cannot be sent is logged and returned as such, never raised: an alert never fails
the crawl.

Configured once, by settings read from the environment (newscrawl/settings.py). Secrets (the
webhook URL, which holds Slack's token, and the SMTP password) come from the environment
alone, never from `-s` (which `ps` and scrapyd's queue would show), and never appear in a
log line or a recorded error: `scrub` masks them, then newscrawl.redaction.
"""

from __future__ import annotations

import json
import logging
import smtplib
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any
from urllib.parse import urlsplit

from newscrawl.monitoring.monitors import FAIL, WARN, summary_line
from newscrawl.redaction import MASK, redact

logger = logging.getLogger(__name__)

Document = dict[str, Any]

# The environment variables (and settings of the same names, but for the two secrets).
WEBHOOK_URL = "NEWSCRAWL_ALERT_WEBHOOK_URL"  # secret: environment only
SMTP_PASSWORD = "NEWSCRAWL_ALERT_SMTP_PASSWORD"  # secret: environment only
SMTP_HOST = "NEWSCRAWL_ALERT_SMTP_HOST"
SMTP_PORT = "NEWSCRAWL_ALERT_SMTP_PORT"
SMTP_USER = "NEWSCRAWL_ALERT_SMTP_USER"
SMTP_FROM = "NEWSCRAWL_ALERT_EMAIL_FROM"
SMTP_TO = "NEWSCRAWL_ALERT_EMAIL_TO"
SMTP_STARTTLS = "NEWSCRAWL_ALERT_SMTP_STARTTLS"
SMTP_CAFILE = "NEWSCRAWL_ALERT_SMTP_CAFILE"
RETRIES = "NEWSCRAWL_ALERT_RETRIES"
BACKOFF = "NEWSCRAWL_ALERT_BACKOFF"
TIMEOUT = "NEWSCRAWL_ALERT_TIMEOUT"
LEVEL = "NEWSCRAWL_ALERT_LEVEL"
SETTING_NAMES = (SMTP_HOST, SMTP_PORT, SMTP_USER, SMTP_FROM, SMTP_TO, SMTP_STARTTLS, SMTP_CAFILE,
                 RETRIES, BACKOFF, TIMEOUT, LEVEL)


def truthy(value: object) -> bool:
    return str(value).strip().lower() not in ("", "0", "false", "no", "off")


@dataclass(frozen=True)
class AlertConfig:
    webhook_url: str = field(default="", repr=False)
    smtp_host: str = ""
    smtp_port: int = 587
    smtp_user: str = ""
    smtp_password: str = field(default="", repr=False)
    email_from: str = ""
    email_to: tuple[str, ...] = ()
    starttls: bool = True
    cafile: str = ""  # a CA bundle to trust besides the system's (a private server's)
    retries: int = 3
    backoff: float = 1.0  # seconds before the first retry, doubled each time
    timeout: float = 10.0
    level: str = WARN  # send for runs at this level or worse

    @classmethod
    def from_values(cls, values: Mapping[str, Any], environ: Mapping[str, str]) -> AlertConfig:
        """Non-secrets from `values` (a crawl's settings, or the environment), secrets from
        `environ` alone."""
        def get(name: str, default: str = "") -> str:
            value = values.get(name)
            return str(value).strip() if value not in (None, "") else default

        level = get(LEVEL, WARN).lower()
        if level not in (WARN, FAIL):
            raise ValueError(f"{LEVEL}={level!r}: expected warn or fail")
        return cls(
            webhook_url=environ.get(WEBHOOK_URL, "").strip(),
            smtp_host=get(SMTP_HOST),
            smtp_port=int(get(SMTP_PORT, "587")),
            smtp_user=get(SMTP_USER),
            smtp_password=environ.get(SMTP_PASSWORD, ""),
            email_from=get(SMTP_FROM),
            email_to=tuple(a.strip() for a in get(SMTP_TO).split(",") if a.strip()),
            starttls=truthy(get(SMTP_STARTTLS, "1")),
            cafile=get(SMTP_CAFILE),
            retries=int(get(RETRIES, "3")),
            backoff=float(get(BACKOFF, "1.0")),
            timeout=float(get(TIMEOUT, "10")),
            level=level,
        )

    @property
    def email(self) -> bool:
        return bool(self.smtp_host and self.email_to)

    @property
    def channels(self) -> list[str]:
        return (["webhook"] if self.webhook_url else []) + (["email"] if self.email else [])

    def wants(self, status: str) -> bool:
        return status == FAIL or (status == WARN and self.level == WARN)

    def scrub(self, text: str) -> str:
        """`text` without the secrets: the webhook URL (its path holds the token), the SMTP
        password, and any URI's password."""
        for secret, shown in ((self.webhook_url, self.webhook_shown), (self.smtp_password, MASK)):
            if secret:
                text = text.replace(secret, shown)
        return redact(text)

    @property
    def webhook_shown(self) -> str:
        parts = urlsplit(self.webhook_url)
        return f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}/{MASK}"


# --- the message ----------------------------------------------------------------------------

def alert_text(job: str, run: Mapping[str, Any], health: Mapping[str, Any]) -> str:
    return "newscrawl: " + summary_line(job, run, health)


def webhook_payload(job: str, run: Mapping[str, Any], health: Mapping[str, Any]) -> Document:
    """Slack reads `text`; other receivers get the figures too."""
    return {"text": alert_text(job, run, health), "job": job, "run": run.get("_id"),
            "spider": run.get("spider"), "status": health.get("status"),
            "failed": [{k: f[k] for k in ("monitor", "level", "value", "threshold", "message")}
                       for f in health.get("failed") or []]}


def email_message(config: AlertConfig, job: str, run: Mapping[str, Any],
                  health: Mapping[str, Any]) -> EmailMessage:
    message = EmailMessage()
    message["Subject"] = f"[newscrawl] {job}: {str(health.get('status')).upper()} ({run.get('_id')})"
    message["From"] = config.email_from or "newscrawl@localhost"
    message["To"] = ", ".join(config.email_to)
    lines = [alert_text(job, run, health), "",
             *(f"- {f['monitor']} ({f['level']}): {f['message']}" for f in health.get("failed") or [])]
    message.set_content("\n".join(lines) + "\n")
    return message


# --- sending --------------------------------------------------------------------------------

def post_webhook(config: AlertConfig, payload: Document) -> None:
    request = urllib.request.Request(config.webhook_url, data=json.dumps(payload).encode("utf-8"),
                                     headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=config.timeout) as response:
        response.read()  # a non-2xx answer raises HTTPError


def send_email(config: AlertConfig, message: EmailMessage) -> None:
    with smtplib.SMTP(config.smtp_host, config.smtp_port, timeout=config.timeout) as smtp:
        smtp.ehlo()
        if config.starttls:
            context = ssl.create_default_context(cafile=config.cafile or None)
            smtp.starttls(context=context)
            smtp.ehlo()
        if config.smtp_user:
            smtp.login(config.smtp_user, config.smtp_password)
        smtp.send_message(message)


def describe_error(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    return f"{type(exc).__name__}: {exc}"


def with_backoff(channel: str, action: Callable[[], None], config: AlertConfig, *,
                 what: str, sleep: Callable[[float], None] = time.sleep) -> Document:
    """Try `action` 1 + retries times; the alert's record for `health.alerts`."""
    delay = config.backoff
    error: str | None = None
    attempts = 0
    for attempts in range(1, config.retries + 2):
        try:
            action()
            return {"channel": channel, "sent": True, "attempts": attempts, "error": None}
        except Exception as exc:
            error = config.scrub(describe_error(exc))
            if attempts <= config.retries:
                logger.warning("%s alert for %s: try %d failed (%s), again in %.1f s", channel, what,
                               attempts, error, delay)
                sleep(delay)
                delay *= 2
    logger.error("%s alert for %s not sent after %d tries: %s", channel, what, attempts, error)
    return {"channel": channel, "sent": False, "attempts": attempts, "error": error}


def send_alerts(config: AlertConfig, job: str, run: Mapping[str, Any], health: Mapping[str, Any], *,
                sleep: Callable[[float], None] = time.sleep) -> list[Document]:
    """Every configured channel, for a run whose health is at the configured level or worse;
    [] when none is due. Never raises."""
    if not config.wants(str(health.get("status"))):
        return []
    what = f"run {run.get('_id')}"
    results = []
    if config.webhook_url:
        payload = webhook_payload(job, run, health)
        results.append(with_backoff("webhook", lambda: post_webhook(config, payload), config,
                                    what=what, sleep=sleep))
    if config.email:
        message = email_message(config, job, run, health)
        results.append(with_backoff("email", lambda: send_email(config, message), config,
                                    what=what, sleep=sleep))
    for result in results:
        if result["sent"]:
            logger.info("%s alert sent for %s (%s)", result["channel"], what, health.get("status"))
    return results
