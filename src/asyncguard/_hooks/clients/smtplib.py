"""``smtplib`` (the standard library): ``SMTP``'s commands (``sendmail``, ``send_message``,
``login``, ``starttls``, ``quit``...) on a connected client.  Connecting,
``smtplib.SMTP(host)``, is the network family's."""

from __future__ import annotations

from ..._format import short
from ..._spec import Format, Hook
from . import _common as common
from ._common import Args, Kwargs, Library

__asyncguard_internal__ = True  # frames of this module are asyncguard's (_frames)
__asyncguard_work__ = True  # the guard judging or reporting a call (_frames)


def _connected(args: Args, kwargs: Kwargs) -> bool:
    """Not connected, these raise ``SMTPServerDisconnected`` without any I/O."""
    try:
        return getattr(args[0], "sock", None) is not None
    except Exception:
        return True


def _fmt_sendmail(args: Args, kwargs: Kwargs) -> str:
    sender = common.arg(args, kwargs, 1, "from_addr")
    recipients = common.arg(args, kwargs, 2, "to_addrs")
    if isinstance(recipients, (list, tuple)):
        shown = f"<{len(recipients)} recipients>" if len(recipients) != 1 else short(recipients)
    else:
        shown = short(recipients)
    return f"{short(sender)}, {shown}, <message>"


def _fmt_message(args: Args, kwargs: Kwargs) -> str:
    return "<message>"


def _fmt_login(args: Args, kwargs: Kwargs) -> str:
    return f"{short(common.arg(args, kwargs, 1, 'user'))}, '…'"


def _fmt_address(args: Args, kwargs: Kwargs) -> str:
    return short(common.arg(args, kwargs, 1, "address"))


def _fmt_command(args: Args, kwargs: Kwargs) -> str:
    command = common.arg(args, kwargs, 1, "cmd")
    if isinstance(command, str) and command.split(" ", 1)[0].upper() == "AUTH":
        return "'AUTH', …"
    return short(command) + (", …" if len(args) > 2 or "args" in kwargs else "")


def _hook(name: str, fmt: Format, *, sensitive: bool = False) -> Hook:
    return Hook(
        "smtplib",
        f"SMTP.{name}",
        f"smtplib.SMTP.{name}",
        common.NETWORK,
        common.SMTP,
        would_block=_connected,
        fmt=fmt,
        method=True,
        sensitive=sensitive,
    )


HOOKS = (
    _hook("sendmail", _fmt_sendmail),
    _hook("send_message", _fmt_message),
    _hook("login", _fmt_login, sensitive=True),
    _hook("starttls", common.fmt_none),
    # the single commands (Django's backend: ehlo/starttls/login, sendmail, quit)
    _hook("ehlo", common.fmt_none),
    _hook("helo", common.fmt_none),
    _hook("noop", common.fmt_none),
    _hook("rset", common.fmt_none),
    _hook("quit", common.fmt_none),
    _hook("mail", _fmt_address),
    _hook("rcpt", _fmt_address),
    _hook("data", _fmt_message),
    _hook("verify", _fmt_address),
    _hook("docmd", _fmt_command),
)

# the standard library's: every Python asyncguard supports (3.10+) has these methods, so no
# distribution and no minimum
LIBRARY = Library(name="smtplib", module="smtplib", hooks=HOOKS)
