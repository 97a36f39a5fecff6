"""Serve a lacy helper over HTTP as an OpenAI-compatible completions endpoint.

The paper's cascade (§5, inference) lets a small LM hand the next tokens to a bigger helper.
Serving the helper lets the SLM run on a laptop and defer to a GPU box: ``lacy serve --helper SPEC``
(:func:`serve`) exposes

- ``POST /v1/completions`` (OpenAI legacy completions: ``prompt`` string, greedy decoding only),
- ``GET /v1/models`` and ``GET /health`` (the latter without authentication, for probes).

Every client mistake is answered with a 4xx saying what is valid; the model is named publicly (never
by its filesystem path); the interactive ``/docs`` and ``/openapi.json`` are off when an API key is
set; a connection that does not finish sending its request headers in ``header_timeout`` seconds is
closed, so slow clients cannot hold connections.

The server is stateless: every request opens a fresh helper session, so no KV cache or subject is
carried from one request to the next. Helpers are not assumed to be thread-safe: helper calls are
serialised with a lock unless the helper sets ``thread_safe = True``. ``subject`` is accepted as a
lacy extension field of the request and passed to ``helper.session(subject)`` (document helpers need
it; LM helpers ignore it). :class:`lacy.cascade.remote.RemoteHelper` is the matching client.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import secrets
import threading
import time
import uuid
from pathlib import PurePath
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

if TYPE_CHECKING:
    from lacy.cascade.helpers import Helper

logger = logging.getLogger(__name__)

MAX_STOP_SEQUENCES = 4  # as in the OpenAI API
MAX_TOP_LOGPROBS = 5  # as in the OpenAI legacy completions API


class CompletionRequest(BaseModel):
    """The subset of the OpenAI completions request this server honours; unknown fields are ignored."""

    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    prompt: str
    max_tokens: int = Field(16, ge=1)
    stop: str | list[str] | None = None
    temperature: float = Field(0.0, ge=0.0, description="only 0 (greedy) is supported; omitted means 0")
    logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)
    n: int = 1
    stream: bool = False
    echo: bool = False
    subject: str | None = Field(None, description="lacy extension: the subject passed to helper.session()")


def public_model_name(helper: Helper) -> str:
    """The helper's name, as clients see it: a model folder's path (the default name of an LM helper
    loaded from a folder) is cut to its last two parts, so the server's file system is not exposed."""
    name = str(getattr(helper, "name", None) or type(helper).__name__)
    path = PurePath(name)
    return "/".join(path.parts[-2:]) if path.is_absolute() or name.startswith(("~", ".")) else name


def _error_body(status: int, message: str) -> dict[str, Any]:
    kind = "invalid_request_error" if status < 500 else "server_error"
    return {"error": {"message": message, "type": kind, "param": None, "code": status}}


def _http_error_handler(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    return JSONResponse(_error_body(exc.status_code, str(exc.detail)), status_code=exc.status_code, headers=exc.headers)


def _validation_error_handler(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = []
    for error in exc.errors():
        location = ".".join(str(part) for part in error["loc"] if part != "body") or "body"
        problems.append(f"{location}: {error['msg']}")
    message = "invalid request: " + "; ".join(problems)
    return JSONResponse(_error_body(400, message), status_code=400)


class _BodySizeLimit:
    """ASGI middleware refusing request bodies over ``max_bytes`` with 413, also for chunked uploads."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        received = 0

        async def limited_receive() -> dict:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                # FastAPI re-raises HTTPException from body reading, so this becomes a 413 response.
                raise HTTPException(413, f"request body over {self.max_bytes} bytes; send a shorter prompt")
            return message

        await self.app(scope, limited_receive, send)


def _stop_at(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    """``text`` cut before the earliest stop sequence, and whether one was found."""
    cuts = [index for index in (text.find(stop) for stop in stops) if index >= 0]
    return (text[: min(cuts)], True) if cuts else (text, False)


def _token_logprobs(model: Any, tokenizer: Any, prompt: str, completion: str, top_k: int) -> dict[str, list]:
    """OpenAI-shaped logprobs of ``completion`` after ``prompt`` under a Hugging Face causal LM.

    Scored teacher-forced in one forward pass over the prompt's ids (as the LM helper encodes them)
    followed by the completion's ids, tokenized on their own as in generation; ``text_offset`` is
    relative to the completion.
    """
    import torch

    from lacy.cascade.helpers import encode_text

    prompt_ids = encode_text(tokenizer, prompt)
    completion_ids = tokenizer(completion, add_special_tokens=False)["input_ids"]
    device = next(model.parameters()).device
    input_ids = torch.tensor([prompt_ids + completion_ids], device=device)
    with torch.inference_mode():
        logits = model(input_ids=input_ids).logits[0, len(prompt_ids) - 1 : -1].float()
    logprobs = torch.log_softmax(logits, dim=-1)
    result: dict[str, list] = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
    offset = 0
    for position, token_id in enumerate(completion_ids):
        token = tokenizer.decode([token_id])
        result["tokens"].append(token)
        result["token_logprobs"].append(float(logprobs[position, token_id]))
        if top_k > 0:
            top = torch.topk(logprobs[position], top_k)
            result["top_logprobs"].append(
                {tokenizer.decode([int(i)]): float(v) for v, i in zip(top.values, top.indices)}
            )
        else:
            result["top_logprobs"].append({})
        result["text_offset"].append(offset)
        offset += len(token)
    return result


def _count_prompt_tokens(tokenizer: Any, prompt: str) -> int:
    from lacy.cascade.helpers import encode_text

    return len(encode_text(tokenizer, prompt))


def _scoring_model(helper: Helper) -> tuple[Any, Any] | None:
    """The (model, tokenizer) of a helper backed by a Hugging Face causal LM, else None."""
    model, tokenizer = getattr(helper, "model", None), getattr(helper, "tokenizer", None)
    if model is None or tokenizer is None or not callable(tokenizer) or not hasattr(model, "parameters"):
        return None
    return model, tokenizer


def create_app(
    helper: Helper,
    *,
    api_key: str | None = None,
    max_prompt_chars: int = 100_000,
    max_tokens_limit: int = 256,
    model_name: str | None = None,
) -> FastAPI:
    """A FastAPI app serving ``helper`` as an OpenAI-compatible completions endpoint.

    ``api_key``: when set, ``/v1/*`` requires ``Authorization: Bearer <api_key>`` (401 otherwise)
    and the API description (``/docs``, ``/redoc``, ``/openapi.json``) is not served.
    ``max_prompt_chars`` / ``max_tokens_limit`` bound the work of one request (413 / 400 beyond).
    ``model_name`` (default :func:`public_model_name`) is the id listed by ``/v1/models``; a request naming
    another model gets 404. Only greedy decoding is supported (``temperature`` 0).
    """
    served_name = model_name or public_model_name(helper)
    scoring = _scoring_model(helper)
    helper_lock = contextlib.nullcontext() if getattr(helper, "thread_safe", False) else threading.Lock()
    # JSON may spell each character as a 12-byte surrogate pair escape; the margin covers other fields.
    max_body_bytes = 12 * max_prompt_chars + 65_536
    created = int(time.time())

    public_docs = {} if api_key is None else {"docs_url": None, "redoc_url": None, "openapi_url": None}
    app = FastAPI(title="lacy helper", description=__doc__, **public_docs)
    app.add_middleware(_BodySizeLimit, max_bytes=max_body_bytes)
    app.add_exception_handler(StarletteHTTPException, _http_error_handler)
    app.add_exception_handler(RequestValidationError, _validation_error_handler)

    def check_auth(request: Request) -> None:
        if api_key is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(token.strip().encode(), api_key.encode()):
            raise HTTPException(
                401,
                "missing or wrong API key: send the header 'Authorization: Bearer <key>' "
                "with the key the server was started with",
                headers={"WWW-Authenticate": "Bearer"},
            )

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok", "model": served_name}

    @app.get("/v1/models", dependencies=[Depends(check_auth)])
    def models() -> dict[str, Any]:
        model = {"id": served_name, "object": "model", "created": created, "owned_by": "lacy"}
        return {"object": "list", "data": [model]}

    @app.post("/v1/completions", dependencies=[Depends(check_auth)])
    def completions(request: CompletionRequest) -> dict[str, Any]:
        stops = [request.stop] if isinstance(request.stop, str) else list(request.stop or [])
        _check_supported(request, stops, served_name, max_prompt_chars, max_tokens_limit)
        with helper_lock:
            try:
                reply = helper.session(request.subject).continue_text(
                    request.prompt, max_new_tokens=request.max_tokens, until_word_boundary=False
                )
                text, stopped = _stop_at(reply.text or "", stops)
                logprobs = None
                if request.logprobs is not None and scoring is not None:
                    logprobs = _token_logprobs(*scoring, request.prompt, text, request.logprobs)
                prompt_tokens = _count_prompt_tokens(scoring[1], request.prompt) if scoring is not None else 0
            except ValueError as exc:  # the helper refuses this input (e.g. no room in its context, invalid text)
                raise HTTPException(400, f"the helper cannot complete this request: {exc}") from exc
            except Exception as exc:
                logger.exception("helper %s failed on a %d-character prompt", served_name, len(request.prompt))
                raise HTTPException(500, f"the helper failed: {type(exc).__name__}: {exc}") from exc
        finish_reason = "stop" if reply.ends or stopped else "length"  # "stop": the text ends (OpenAI's end-of-text)
        return {
            "id": f"cmpl-{uuid.uuid4().hex}",
            "object": "text_completion",
            "created": int(time.time()),
            "model": served_name,
            "choices": [{"text": text, "index": 0, "logprobs": logprobs, "finish_reason": finish_reason}],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": reply.tokens,
                "total_tokens": prompt_tokens + reply.tokens,
            },
        }

    return app


def _check_supported(
    request: CompletionRequest, stops: list[str], served_name: str, max_prompt_chars: int, max_tokens_limit: int
) -> None:
    """Refuse, with a message saying what is valid, a request this server cannot honour."""
    for name, text in (("prompt", request.prompt), ("subject", request.subject or ""), *(("stop", s) for s in stops)):
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as err:
            raise HTTPException(400, f"{name} is not valid Unicode text (a lone surrogate at character {err.start}); "
                                     "send UTF-8 text") from None
    if request.model is not None and request.model != served_name:
        raise HTTPException(
            404, f"model {request.model!r} is not served here; this server serves {served_name!r} (GET /v1/models)"
        )
    if len(request.prompt) > max_prompt_chars:
        raise HTTPException(
            413, f"prompt has {len(request.prompt)} characters; this server accepts at most {max_prompt_chars}"
        )
    if request.max_tokens > max_tokens_limit:
        raise HTTPException(400, f"max_tokens={request.max_tokens} is over this server's limit of {max_tokens_limit}")
    if request.temperature != 0:
        raise HTTPException(
            400, f"temperature={request.temperature} is not supported: this server decodes greedily; send temperature=0"
        )
    unsupported = {"n": request.n != 1, "stream": request.stream, "echo": request.echo}
    if any(unsupported.values()):
        names = ", ".join(name for name, bad in unsupported.items() if bad)
        raise HTTPException(
            400,
            f"unsupported option(s) {names}: this server returns one non-streamed completion without the prompt "
            "(n=1, stream=false, echo=false)",
        )
    if len(stops) > MAX_STOP_SEQUENCES or any(stop == "" for stop in stops):
        raise HTTPException(400, f"stop must be up to {MAX_STOP_SEQUENCES} non-empty strings; got {request.stop!r}")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class HeaderTimeoutH11(H11Protocol):
    """uvicorn's HTTP/1.1 protocol, closing a connection whose request headers take longer than
    ``header_timeout`` seconds to arrive (uvicorn itself waits for them forever)."""

    header_timeout = 10.0

    def connection_made(self, transport: Any) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._header_timer: Any = self.loop.call_later(self.header_timeout, self._headers_too_slow)

    def data_received(self, data: bytes) -> None:
        cycle = self.cycle
        if self._header_timer is None and (cycle is None or cycle.response_complete):  # the next request starts
            self._header_timer = self.loop.call_later(self.header_timeout, self._headers_too_slow)
        super().data_received(data)
        if self.cycle is not cycle and self._header_timer is not None:  # its headers are complete
            self._header_timer.cancel()
            self._header_timer = None

    def connection_lost(self, exc: Exception | None) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
        super().connection_lost(exc)

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if self.cycle is None or self.cycle.response_complete:
            self.transport.close()


def server_config(app: FastAPI, host: str, port: int, header_timeout: float = 10.0, **kwargs: Any) -> uvicorn.Config:
    """The uvicorn configuration of a helper server (HTTP/1.1 with a header-read timeout)."""
    protocol = type("HeaderTimeoutH11", (HeaderTimeoutH11,), {"header_timeout": header_timeout})
    return uvicorn.Config(app, host=host, port=port, http=protocol, **kwargs)


@contextlib.contextmanager
def background_server(
    app: FastAPI, host: str = "127.0.0.1", port: int = 0, start_timeout: float = 30.0, header_timeout: float = 10.0
) -> Iterator[str]:
    """Run ``app`` with uvicorn in a daemon thread; yields its base URL and always shuts it down.

    ``port=0`` picks a free port. Used by the tests and the remote benchmark.
    """
    server = uvicorn.Server(server_config(app, host, port, header_timeout, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, name="lacy-serve", daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError(f"the helper server did not start on {host}:{port} within {start_timeout} s")
        time.sleep(0.01)
    bound_port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://{host}:{bound_port}"
    finally:
        server.should_exit = True
        thread.join(timeout=start_timeout)


def serve(
    helper_spec: str, host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None, device: str = "cpu"
) -> None:
    """Build the helper named by ``helper_spec`` (see ``lacy.cascade.specs.build_helper``) and serve it.

    Binds to loopback by default; binding elsewhere without ``api_key`` logs a warning.
    """
    from lacy.cascade.specs import HELPER_SPECS, build_helper

    if helper_spec == "doc" or helper_spec.startswith(("http://", "https://")):
        raise ValueError(f"--helper {helper_spec!r} cannot be served: the document helper needs a corpus's reference "
                         "texts and a URL is already a server; serve a language model: hf:PATH_OR_ID or smollm2 "
                         f"(valid helper specs: {', '.join(HELPER_SPECS)})")
    if not 1 <= port <= 65535:
        raise ValueError(f"--port {port} is not a TCP port; pass one in 1..65535")
    if not _is_loopback(host) and api_key is None:
        logger.warning("serving on %s without an API key: anyone who can reach this address can use the helper", host)
    helper = build_helper(helper_spec, device=device)
    app = create_app(helper, api_key=api_key)
    uvicorn.Server(server_config(app, host, port, log_level="info")).run()

