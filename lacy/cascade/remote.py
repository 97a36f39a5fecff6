"""A helper reached over HTTP: any OpenAI-compatible completions server.

The cascade (paper §5, inference) only needs "continue this text" from its helper, so the helper can live on
another machine: ``lacy serve`` (:mod:`lacy.serve`), vLLM, the llama.cpp server or TGI. Each call
sends the full text so far (the client is stateless) with greedy decoding. Servers do not know lacy's
word rule, so the word-boundary hand-off is applied here, on the client: the client asks for up to
``max_new_tokens`` tokens and keeps the text up to the first word boundary
(``lacy.cascade.helpers.cut_at_word_boundary``, the rule the in-process helpers follow).

Failures are bounded: every socket operation has a timeout and every call (all its attempts
together) a ``deadline``, so a server that trickles its answer a byte at a time cannot hold the
cascade; connection errors, timeouts and 5xx answers are retried ``retries`` times with exponential
backoff while the deadline allows. Then, and for garbage answers (not JSON, no ``choices``), the
helper either raises :class:`RemoteHelperUnavailable` saying what to do, or, with ``fallback=True``
(``--helper-fallback`` on the command line), answers "no help" (``HelperReply(None, 0)``), which
the decoder counts as an unresolved call. 4xx answers (wrong key, bad request) always raise at once,
without retries: they are the client's mistakes.
"""

from __future__ import annotations

import contextvars
import logging
import time
from typing import Any

import httpcore
import httpx

from lacy.cascade.helpers import Helper, HelperReply, HelperSession, cut_at_word_boundary

logger = logging.getLogger(__name__)


class RemoteHelperError(RuntimeError):
    """The remote helper refused a request or could not be used."""


class RemoteHelperUnavailable(RemoteHelperError):
    """The remote helper did not answer usefully (down, timing out, 5xx, or a garbage answer)."""


# The monotonic time by which the current call must finish (None outside a call); read by every
# socket operation of _DeadlineStream, so it bounds a call across all its reads, writes and retries.
_CALL_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar("lacy_call_deadline", default=None)


def _bounded(timeout: float | None) -> float | None:
    """``timeout`` shortened to what is left of the current call's deadline; raises once it passed."""
    deadline = _CALL_DEADLINE.get()
    if deadline is None:
        return timeout
    left = deadline - time.monotonic()
    if left <= 0:
        raise httpcore.ReadTimeout("the call's overall deadline passed")
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    """A network stream whose every read and write is bounded by the current call's deadline."""

    def __init__(self, stream: httpcore.NetworkStream) -> None:
        self._stream = stream

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, _bounded(timeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, _bounded(timeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None) -> "_DeadlineStream":
        return _DeadlineStream(self._stream.start_tls(ssl_context, server_hostname, _bounded(timeout)))

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    """httpcore's synchronous socket backend with :class:`_DeadlineStream` streams."""

    def __init__(self) -> None:
        self._backend = httpcore.SyncBackend()

    def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                    socket_options: Any = None) -> httpcore.NetworkStream:
        return _DeadlineStream(self._backend.connect_tcp(host, port, _bounded(timeout), local_address, socket_options))

    def connect_unix_socket(self, path: str, timeout: float | None = None, socket_options: Any = None) -> httpcore.NetworkStream:
        return _DeadlineStream(self._backend.connect_unix_socket(path, _bounded(timeout), socket_options))

    def sleep(self, seconds: float) -> None:
        self._backend.sleep(seconds)


def _deadline_transport() -> httpx.HTTPTransport:
    """httpx's transport on a connection pool whose sockets honour the call deadline.

    httpx has no public option for httpcore's ``network_backend``, so the pool it built is replaced
    by one with the same TLS defaults and :class:`_DeadlineBackend`."""
    transport = httpx.HTTPTransport()
    transport._pool = httpcore.ConnectionPool(ssl_context=httpx.create_ssl_context(), network_backend=_DeadlineBackend())
    return transport


def normalise_base_url(base_url: str) -> str:
    """``http(s)://HOST:PORT`` without a trailing ``/`` or ``/v1``; a ValueError for anything else."""
    url = httpx.URL(base_url)
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError(f"helper URL {base_url!r} is not valid; expected http(s)://HOST:PORT[/v1], e.g. http://127.0.0.1:8000")
    base = base_url.rstrip("/")
    return base[: -len("/v1")] if base.endswith("/v1") else base


class RemoteHelper(Helper):
    """A :class:`~lacy.cascade.helpers.Helper` backed by ``POST {base_url}/v1/completions``.

    ``model``: the model id to request (omitted when None; ``lacy serve`` and most servers then use
    their only model). ``api_key``: sent as a bearer token. ``timeout``: seconds per connect / read /
    write. ``deadline``: seconds for a whole call, all attempts included. ``retries`` and
    ``backoff``: extra attempts after a transport error or 5xx, waiting ``backoff * 2**i`` seconds
    before the i-th (none once the deadline has passed). ``fallback``: answer "no help" instead of raising
    when the server is unavailable. ``max_new_tokens_cap``: the most tokens asked for per call,
    which bounds the work a server does past the word boundary it does not know about.

    ``usage.completion_tokens`` (what the server generated, before the client-side word cut) is
    reported as the reply's token count. The session's ``subject`` is sent as the lacy extension
    field ``subject`` (other servers ignore unknown fields). One ``httpx.Client`` is shared by all
    sessions, so connections are reused; :meth:`close` it (or use ``with``) when done.
    """

    def __init__(
        self,
        base_url: str,
        *,
        model: str | None = None,
        api_key: str | None = None,
        timeout: float = 10.0,
        deadline: float = 30.0,
        retries: int = 2,
        backoff: float = 0.2,
        fallback: bool = False,
        max_new_tokens_cap: int = 16,
    ) -> None:
        if retries < 0 or backoff < 0 or not timeout > 0 or not deadline > 0 or max_new_tokens_cap < 1:
            raise ValueError(
                f"invalid RemoteHelper settings: need timeout > 0, deadline > 0, retries >= 0, backoff >= 0, "
                f"max_new_tokens_cap >= 1; got timeout={timeout}, deadline={deadline}, retries={retries}, "
                f"backoff={backoff}, max_new_tokens_cap={max_new_tokens_cap}"
            )
        self.base_url = normalise_base_url(base_url)
        self.completions_url = f"{self.base_url}/v1/completions"
        self.model_id = model
        self.retries = retries
        self.deadline = deadline
        self.backoff = backoff
        self.fallback = fallback
        self.max_new_tokens_cap = max_new_tokens_cap
        self.name = f"remote:{model or self.base_url}"
        self.failed_calls = 0  # calls answered "no help" because the server was unavailable
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(timeout=timeout, headers=headers, transport=_deadline_transport())

    def session(self, subject: str | None = None) -> HelperSession:
        return RemoteHelperSession(self, subject)

    def complete(self, prompt: str, max_tokens: int, subject: str | None = None) -> tuple[str, int, bool]:
        """One greedy completion of ``prompt``: ``(text, completion tokens, whether the text ends there)``
        (``finish_reason`` "stop"); raises RemoteHelperError."""
        body: dict[str, Any] = {"prompt": prompt, "max_tokens": max_tokens, "temperature": 0}
        if self.model_id is not None:
            body["model"] = self.model_id
        if subject is not None:
            body["subject"] = subject
        return self._parse(self._post(body), max_tokens)

    def _post(self, body: dict[str, Any]) -> httpx.Response:
        problem = ""
        deadline = time.monotonic() + self.deadline
        attempts, out_of_time = 0, False
        for attempt in range(self.retries + 1):
            if attempt:
                pause = self.backoff * 2 ** (attempt - 1)
                out_of_time = time.monotonic() + pause >= deadline
                if out_of_time:
                    break
                time.sleep(pause)
            attempts += 1
            token = _CALL_DEADLINE.set(deadline)
            try:
                response = self._client.post(self.completions_url, json=body)
            except httpx.TransportError as exc:
                problem = f"{type(exc).__name__}: {exc}"
                continue
            finally:
                _CALL_DEADLINE.reset(token)
            if response.status_code >= 500:
                problem = f"HTTP {response.status_code}: {_server_message(response)}"
                continue
            if response.status_code >= 400:
                raise RemoteHelperError(
                    f"helper server {self.completions_url} refused the request with HTTP {response.status_code}: "
                    f"{_server_message(response)}. Check the API key and settings this client sends."
                )
            return response
        if out_of_time or time.monotonic() >= deadline:
            problem = f"no complete answer within the call deadline of {self.deadline} s; last error {problem}"
        url = httpx.URL(self.base_url)
        port = url.port or (443 if url.scheme == "https" else 80)
        raise RemoteHelperUnavailable(
            f"helper server {self.completions_url} is unavailable after {attempts} attempt{'s' if attempts != 1 else ''} ({problem}). "
            f"Start one with `lacy serve --helper SPEC --port {port}`, check the URL, or pass --helper-fallback "
            f"(fallback=True in Python) to count such calls as unresolved."
        )

    def _parse(self, response: httpx.Response, max_tokens: int) -> tuple[str, int, bool]:
        try:
            data = response.json()
            text = data["choices"][0]["text"]
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise RemoteHelperUnavailable(
                f"helper server {self.completions_url} sent an answer that is not an OpenAI completion "
                f"({type(exc).__name__}: {exc}; body starts {response.text[:200]!r}). Is that URL a completions server?"
            ) from exc
        if not isinstance(text, str):
            raise RemoteHelperUnavailable(f"helper server {self.completions_url} sent choices[0].text={text!r}, not a string")
        usage = data.get("usage") if isinstance(data, dict) else None
        tokens = usage.get("completion_tokens") if isinstance(usage, dict) else None
        ends = data["choices"][0].get("finish_reason") == "stop"
        return text, tokens if isinstance(tokens, int) else max_tokens, ends

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> RemoteHelper:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _server_message(response: httpx.Response) -> str:
    """The error message of an OpenAI-style (``error.message``) or FastAPI-style (``detail``) answer."""
    try:
        data = response.json()
    except ValueError:
        return response.text[:200] or response.reason_phrase
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict) and "message" in error:
            return str(error["message"])
        if "detail" in data:
            return str(data["detail"])
    return str(data)[:200]


class RemoteHelperSession(HelperSession):
    """A stateless session: every call sends the whole text; ``subject`` travels with each request."""

    def __init__(self, helper: RemoteHelper, subject: str | None) -> None:
        self.helper = helper
        self.subject = subject

    def continue_text(self, text: str, *, max_new_tokens: int, until_word_boundary: bool) -> HelperReply:
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
        requested = min(max_new_tokens, self.helper.max_new_tokens_cap)
        try:
            completion, tokens, ends = self.helper.complete(text, requested, self.subject)
        except RemoteHelperUnavailable as exc:
            if not self.helper.fallback:
                raise
            self.helper.failed_calls += 1
            logger.warning("remote helper call counted as unresolved: %s", exc)
            return HelperReply(None, 0)
        if until_word_boundary:
            cut = cut_at_word_boundary(completion)
            ends, completion = ends and cut == completion, cut
        # An empty completion that does not end the text is no help, as in-process: an unresolved call.
        return HelperReply(completion, tokens, ends=ends) if completion else HelperReply(None, 0, ends=ends)
