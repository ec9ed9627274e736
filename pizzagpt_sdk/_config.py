"""A client's configuration: arguments over the environment, per-call options over the client's,
every check, and each wait's timeout capped by what is left of the deadline. No I/O.

`Client` and `AsyncClient` build one `Config` when they are constructed and ask it for each call
(`Config.new_call`); an engine only passes the numbers it gets on to its HTTP library.
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypedDict
from urllib.parse import urlsplit

from ._call import Call, check_deadline, check_max_response_bytes, shown_url
from ._exceptions import InvalidTypeError, InvalidValueError, UsageError
from ._models import Timeout
from ._prompt import Messages, flatten_messages
from ._protocol import (
    DEFAULT_BASE_URL,
    DEFAULT_MAX_RESPONSE_BYTES,
    DEFAULT_SECRET,
    DEFAULT_USER_AGENT,
    Settings,
    check_request_fields,
)
from ._retry import DEFAULT_MAX_RETRIES, RetryPolicy, check_max_retries

__all__ = [
    "DEFAULT_DEADLINE",
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_TIMEOUT",
    "ENGINES",
    "CallOptions",
    "Config",
    "Timeout",
    "check_timeout",
]


#: An answer is generated before anything is sent back, so reads wait long (others use 60 s or
#: more); a host that does not accept a connection in 10 s is not going to.
DEFAULT_TIMEOUT = Timeout(connect=10.0, read=120.0, write=120.0, pool=120.0)
#: The most one call may take, retries and their sleeps included.
DEFAULT_DEADLINE = 300.0
#: Connections each client's pool keeps open at most (and keeps alive: httpx keeps only 20 idle
#: connections by default, so above 20 calls at once each call would open, and TLS-handshake, a
#: new one).
DEFAULT_MAX_CONNECTIONS = 100
#: The engines by name, and the extra that installs each one's HTTP library.
ENGINES = {"httpx": None, "httpx2": "httpx2", "aiohttp": "aiohttp", "curl_cffi": "impersonate"}
_ASYNC_ONLY = frozenset({"aiohttp"})

_PROXY_SCHEMES = ("http", "https", "socks5", "socks5h")


class CallOptions(TypedDict, total=False):
    """The per-call options of `stream()` and `ask()`; each one left out takes its default.

    Attributes:
        model: Sent as the body's `model` field (for example `"gpt-4o-mini"`); left out by
            default, as gpt4free does.
        search: Sent as the body's `searchEnabled` field (web search, with citations); left out
            by default.
        include_system: Keep system and developer messages in the prompt (default `True`).
        assistant_suffix: End a multi-message prompt with `\\nAssistant:` (default `True`).
        max_retries: Overrides the client's `max_retries` for this call.
        retry_policy: Overrides the client's `retry_policy` for this call.
        timeout: Overrides the client's `timeout` for this call.
        deadline: Overrides the client's `deadline` for this call; `None` for no deadline.
    """

    model: str | None
    search: bool | None
    include_system: bool
    assistant_suffix: bool
    max_retries: int
    retry_policy: RetryPolicy
    timeout: float | Timeout | Any
    deadline: float | None


_CALL_OPTIONS = frozenset(CallOptions.__annotations__)


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    """Everything a client decides with, checked once when the client is built.

    Build it with `Config.from_arguments()`, which reads the environment for what is not given.
    """

    settings: Settings
    timeout: Timeout = DEFAULT_TIMEOUT
    deadline: float | None = DEFAULT_DEADLINE
    max_retries: int = DEFAULT_MAX_RETRIES
    retry_policy: RetryPolicy = field(default_factory=RetryPolicy)
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES
    #: A proxy URL, or an HTTP library's own proxy object (passed on as it is).
    proxy: Any = None
    #: `True`, `False`, a CA bundle's path, or an `ssl.SSLContext`.
    verify: Any = True
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    # What every call of this client shares, worked out once: the URL its errors and logs show,
    # and the secrets they must not.
    _shown: tuple[str, tuple[str, ...]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_shown", shown_url(self.settings.build_request("-")))

    @classmethod
    def from_arguments(
        cls,
        *,
        base_url: str | None = None,
        secret: str | None = None,
        timeout: object = DEFAULT_TIMEOUT,
        deadline: object = DEFAULT_DEADLINE,
        max_retries: object = DEFAULT_MAX_RETRIES,
        retry_policy: object = None,
        proxy: object = None,
        headers: Mapping[str, str] | None = None,
        user_agent: str = DEFAULT_USER_AGENT,
        max_response_bytes: object = DEFAULT_MAX_RESPONSE_BYTES,
        verify: object = True,
        max_connections: object = DEFAULT_MAX_CONNECTIONS,
        environ: Mapping[str, str] = os.environ,
    ) -> Config:
        """Check every argument; take `base_url` and `secret` from the environment when not
        given (`PIZZAGPT_BASE_URL`, `PIZZAGPT_SECRET`), and turn logging on if `PIZZAGPT_LOG`
        asks.

        Raises:
            InvalidTypeError: An argument has the wrong type.
            InvalidValueError: An argument has a value the SDK cannot use.
        """
        configure_logging(environ)
        settings = Settings(
            base_url=base_url or environ.get("PIZZAGPT_BASE_URL") or DEFAULT_BASE_URL,
            secret=secret or environ.get("PIZZAGPT_SECRET") or DEFAULT_SECRET,
            user_agent=user_agent,
            headers=headers or {},
        )
        return cls(
            settings=settings,
            timeout=check_timeout(timeout),
            deadline=check_deadline(deadline),
            max_retries=check_max_retries(max_retries),
            retry_policy=_check_policy(retry_policy),
            max_response_bytes=check_max_response_bytes(max_response_bytes),
            proxy=_check_proxy(proxy),
            verify=_check_verify(verify),
            max_connections=_check_max_connections(max_connections),
        )

    @property
    def https(self) -> bool:
        """Whether the service is reached over TLS: only then is a TLS context worth building
        (and a plain-HTTP client gets none: see the engines)."""
        return urlsplit(self.settings.base_url).scheme == "https"  # the scheme, in any case

    def choose_engine(
        self,
        world: str,
        engine: object,
        *,
        http_client_library: str | None = None,
        transport: bool = False,
    ) -> str:
        """Which engine a client runs: the name given, else the one whose library made the
        `http_client`, else httpx.

        Args:
            world: `"blocking"` or `"async"`.
            engine: The client's `engine` argument (`None`, or a name).
            http_client_library: The top-level module of the `http_client`'s type, if one was
                given.
            transport: Whether a `transport` was given.

        Raises:
            UsageError: An unknown name, an engine of the other world, or arguments that do not
                go together.
        """
        if engine is not None and not isinstance(engine, str):
            raise InvalidTypeError(
                f"engine must be one of {sorted(ENGINES)} or an engine object, "
                f"not {type(engine).__name__}"
            )
        if engine is not None and engine not in ENGINES:
            raise InvalidValueError(f"engine must be one of {sorted(ENGINES)}, not {engine!r}")
        if http_client_library is not None or transport:
            mine = "transport" if transport else "http_client"
            for what, given in (
                ("proxy", self.proxy is not None),
                ("verify", self.verify is not True),
                ("max_connections", self.max_connections != DEFAULT_MAX_CONNECTIONS),
            ):
                if given:
                    raise InvalidValueError(f"give the {what} to your own {mine}, not to the SDK")
        if http_client_library is not None:
            if transport:
                raise InvalidValueError("give the transport to your own http_client, not the SDK")
            if http_client_library not in ENGINES:
                raise InvalidTypeError(
                    "http_client must be a client of httpx, httpx2, aiohttp or curl_cffi"
                )
            if engine is not None and engine != http_client_library:
                raise InvalidValueError(
                    f"http_client is a {http_client_library} client, but engine={engine!r}: "
                    "leave engine out"
                )
            engine = http_client_library
        name = engine or "httpx"
        if transport and name not in ("httpx", "httpx2"):
            raise InvalidValueError(f"transport is for the httpx engines, not {name}")
        if world == "blocking" and name in _ASYNC_ONLY:
            raise UsageError(
                f"the {name} engine is async only: use it with AsyncClient, or give Client "
                "engine='httpx', 'httpx2' or 'curl_cffi'"
            )
        return name

    def check_options(self, options: Mapping[str, object]) -> None:
        """Check per-call options (a typo in a name would otherwise be ignored).

        Raises:
            UsageError: An unknown option, or a value of the wrong type or range.
        """
        if not options:
            return  # the common call: nothing to check
        unknown = options.keys() - _CALL_OPTIONS
        if unknown:
            raise InvalidTypeError(
                f"unexpected option(s) {sorted(unknown)}; the options are {sorted(_CALL_OPTIONS)}"
            )
        for name in ("include_system", "assistant_suffix"):
            if name in options and not isinstance(options[name], bool):
                raise InvalidTypeError(f"{name} must be True or False, not {options[name]!r}")
        if "max_retries" in options:
            check_max_retries(options["max_retries"])
        if "retry_policy" in options:
            _check_policy(options["retry_policy"])
        if "deadline" in options:
            check_deadline(options["deadline"])
        if "timeout" in options:
            check_timeout(options["timeout"])
        model, search = options.get("model"), options.get("search")
        check_request_fields(model, search)

    def new_call(
        self,
        messages: Messages,
        options: CallOptions,
        *,
        clock: Callable[[], float],
        now: Callable[[], float],
        random: Callable[[], float],
    ) -> Call:
        """The core's `Call` for these messages, every per-call option over the client's.

        Raises:
            UsageError: Bad messages or options (an unknown option's name among them).
        """
        timeout, deadline, policy = self.timeout, self.deadline, self.retry_policy
        max_retries = self.max_retries
        if not options:  # the common call: the client's own values
            request = self.settings._build(flatten_messages(messages), None, None)
        else:
            self.check_options(options)
            prompt = flatten_messages(
                messages,
                include_system=options.get("include_system", True),
                assistant_suffix=options.get("assistant_suffix", True),
            )
            request = self.settings._build(prompt, options.get("model"), options.get("search"))
            if "timeout" in options:
                timeout = check_timeout(options["timeout"])
            if "deadline" in options:
                deadline = check_deadline(options["deadline"])
            if "retry_policy" in options:
                policy = _check_policy(options["retry_policy"])
            max_retries = options.get("max_retries", max_retries)
        # Everything was checked, here or when the client was built: the call takes it as it is
        # (the options as `Call.__init__` would take them: a `retry_policy` of None is the default).
        return Call._checked(
            request,
            self._shown,
            clock,
            now,
            random,
            max_retries,
            policy,
            deadline,
            self.max_response_bytes,
            timeout,
        )


def check_timeout(value: object) -> Timeout:
    """A `timeout` argument as a `Timeout`: a number of seconds for every wait, a `Timeout`, or
    an `httpx.Timeout` (or anything with `connect`, `read`, `write` and `pool` attributes).
    An infinite number means no limit.

    Raises:
        InvalidTypeError: Not one of those.
        InvalidValueError: A wait of 0 seconds or less, or not a number.
    """
    if isinstance(value, Timeout):
        return value
    if isinstance(value, bool):
        pass
    elif isinstance(value, (int, float)):
        seconds = _seconds("timeout", value)
        return Timeout(connect=seconds, read=seconds, write=seconds, pool=seconds)
    elif all(hasattr(value, name) for name in ("connect", "read", "write", "pool")):
        return Timeout(
            **{
                name: _seconds(f"timeout.{name}", getattr(value, name))
                for name in ("connect", "read", "write", "pool")
            }
        )
    raise InvalidTypeError(
        f"timeout must be a number of seconds, a pizzagpt_sdk.Timeout or an httpx.Timeout, "
        f"not {value!r}"
    )


def _seconds(what: str, value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidTypeError(f"{what} must be a number of seconds or None, not {value!r}")
    if math.isnan(value) or not value > 0:
        raise InvalidValueError(f"{what} must be more than 0 seconds, not {value}")
    return None if math.isinf(value) else float(value)


def _check_policy(value: object) -> RetryPolicy:
    if value is None:
        return RetryPolicy()
    if not isinstance(value, RetryPolicy):
        raise InvalidTypeError(f"retry_policy must be a RetryPolicy, not {type(value).__name__}")
    return value


def _check_proxy(value: object) -> object:
    if value is None:
        return None
    url = getattr(value, "url", value)  # httpx.Proxy and httpx2.Proxy carry theirs as .url
    if not isinstance(url, str):
        url = str(url) if type(url).__name__ == "URL" else url
    if not isinstance(url, str):
        raise InvalidTypeError(
            f"proxy must be a URL string like 'http://proxy.example:3128', "
            f"not {type(value).__name__}"
        )
    parts = urlsplit(url)
    if parts.scheme not in _PROXY_SCHEMES or not parts.hostname:
        raise InvalidValueError(
            f"proxy must be a URL with a host and one of the schemes {', '.join(_PROXY_SCHEMES)}"
            f"; got a {parts.scheme or 'schemeless'} URL"  # the URL may hold a password
        )
    return value


def _check_verify(value: object) -> object:
    if isinstance(value, (bool, str)):
        if isinstance(value, str) and not value.strip():
            raise InvalidValueError("verify must be a CA bundle's path, not an empty string")
        return value
    import ssl  # only for this check: httpx has imported it already

    if isinstance(value, ssl.SSLContext):
        return value
    raise InvalidTypeError(
        f"verify must be True, False, a CA bundle's path or an ssl.SSLContext, "
        f"not {type(value).__name__}"
    )


def _check_max_connections(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidTypeError(f"max_connections must be an int, not {value!r}")
    if value < 1:
        raise InvalidValueError(f"max_connections must be at least 1, not {value}")
    return value


_LOG_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO}
_logging_configured = False


def configure_logging(environ: Mapping[str, str]) -> None:
    """Turn the `pizzagpt_sdk` logger on when `PIZZAGPT_LOG` asks; once per process."""
    global _logging_configured
    if _logging_configured:
        return
    _logging_configured = True
    value = environ.get("PIZZAGPT_LOG", "").strip().lower()
    if not value:
        return
    level = _LOG_LEVELS.get(value)
    if level is None:
        # Pointing at the SDK, not at the caller's line: a line that builds a client may hold
        # the secret, and Python 3.13 shows a `python -c` script's lines too.
        warnings.warn(
            f"PIZZAGPT_LOG={value!r} is not one of {sorted(_LOG_LEVELS)}: logging stays off",
            stacklevel=1,
        )
        return
    logger = logging.getLogger("pizzagpt_sdk")
    logger.setLevel(level)
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
        logger.addHandler(handler)
