"""Lifecycle and logging: unclosed clients warn, logs stay quiet and never carry the secret."""

from __future__ import annotations

import gc
import logging
import os
import subprocess
import sys
import textwrap

import httpx
import pytest
import respx

from pizzagpt_sdk import APIStatusError, AsyncClient, Client, RetryPolicy

from .conftest import URL, Subject, _resolve

SENTINEL = "s3cr3t-SENTINEL-5f1c"


@pytest.mark.parametrize("cls", [Client, AsyncClient])
def test_an_unclosed_client_warns_like_a_socket(cls: type[Client] | type[AsyncClient]) -> None:
    client = cls()
    with pytest.warns(ResourceWarning, match=f"unclosed {cls.__name__}"):
        del client  # CPython finalizes at once: the last reference is gone


@pytest.mark.anyio
async def test_a_closed_client_or_a_borrowed_pool_does_not_warn() -> None:
    Client().close()
    async_client = AsyncClient()
    await async_client.aclose()
    del async_client
    with httpx.Client() as http:
        Client(http_client=http)  # the caller owns this pool: nothing to warn about
    gc.collect()  # any ResourceWarning here fails the test (filterwarnings = error)


@pytest.mark.anyio
async def test_the_secret_never_reaches_logs_reprs_or_errors(
    subject: Subject, respx_mock: respx.MockRouter, caplog: pytest.LogCaptureFixture
) -> None:
    client_class = type(subject.client)
    route = respx_mock.post(URL)
    route.side_effect = [
        httpx.Response(503, text=f"upstream said {SENTINEL[:4]}"),
        httpx.Response(400, json={"statusCode": 400, "message": "bad"}),
    ]
    secret_client = client_class(secret=SENTINEL, retry_policy=RetryPolicy(backoff_base=0))
    try:
        with (
            caplog.at_level(logging.DEBUG, logger="pizzagpt_sdk"),
            pytest.raises(APIStatusError) as caught,
        ):
            await _resolve(secret_client.ask("the prompt text PROMPT-7"))
        assert route.calls.last.request.headers["x-secret"] == SENTINEL
        shown = [repr(secret_client), str(caught.value), repr(caught.value), caught.value.body]
        shown += [record.getMessage() for record in caplog.records]
        assert not [text for text in shown if SENTINEL in text]
        assert not [record for record in caplog.records if "PROMPT-7" in record.getMessage()]
        assert any(
            "retrying" in r.getMessage() and r.levelno == logging.INFO for r in caplog.records
        )
        assert any("HTTP 503" in r.getMessage() for r in caplog.records)
    finally:
        if isinstance(secret_client, AsyncClient):
            await secret_client.aclose()
        else:
            secret_client.close()


def test_the_logger_is_silent_by_default() -> None:
    logger = logging.getLogger("pizzagpt_sdk")
    assert logger.level == logging.NOTSET or "PIZZAGPT_LOG" in os.environ
    assert not logger.handlers or "PIZZAGPT_LOG" in os.environ


SCRIPT = textwrap.dedent(
    """
    import httpx
    from pizzagpt_sdk import Client

    def reply(request):
        return httpx.Response(200, json={"content": "ANSWER-TEXT"})

    http = httpx.Client(transport=httpx.MockTransport(reply))
    with Client(http_client=http, secret="SECRET-XYZ") as client:
        print(client.ask("PROMPT-TEXT").text)
    http.close()
    """
)


@pytest.mark.parametrize(
    ("level", "expected"),
    [("", None), ("info", None), ("debug", "POST https://www.pizzagpt.it"), ("loud", "loud")],
)
def test_pizzagpt_log_turns_logging_on(level: str, expected: str | None) -> None:
    env = {**os.environ, "PIZZAGPT_LOG": level}
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ANSWER-TEXT"
    if expected is None:
        assert result.stderr == ""
    else:
        assert expected in result.stderr
    for private in ("SECRET-XYZ", "PROMPT-TEXT", "ANSWER-TEXT"):
        assert private not in result.stderr


def test_pizzagpt_log_keeps_the_applications_own_handler() -> None:
    code = (
        "import logging, sys\n"
        "logging.getLogger('pizzagpt_sdk').addHandler(logging.StreamHandler(sys.stdout))\n" + SCRIPT
    )
    env = {**os.environ, "PIZZAGPT_LOG": "debug"}
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "POST https://www.pizzagpt.it" in result.stdout  # the application's handler
    assert result.stderr == ""  # no second handler of the SDK's own
