"""A scriptable OpenAI-compatible server on 127.0.0.1, for testing the real ``openai`` client.

The SDK (3.x) talks through httpx2, which request-mocking libraries cannot intercept, so the tests run
this real HTTP server instead. It runs its own event loop in a background thread, so it answers sync
tests, async tests and child processes (``netcoach score --llm``) alike::

    with OpenAIStub() as stub:
        stub.push(StubReply.text("Hello!"), StubReply.error(500))
        ... point OPENAI_BASE_URL (or LLMConfig.base_url) at stub.url ...
        stub.requests[0].system  # what the client sent

Routes: ``POST /v1/chat/completions`` (answers from the queue, then from ``default``, which may be a
callable of the request) and ``GET /v1/models``. Every request is recorded.
"""

from __future__ import annotations

import asyncio
import json
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

from aiohttp import web


@dataclass(frozen=True)
class StubReply:
    """One scripted answer. Build them with the class methods."""

    status: int = 200
    content: str | None = "OK"
    finish_reason: str = "stop"
    refusal: str | None = None
    delay: float = 0.0  # seconds before answering (beyond the client's timeout = a timeout)
    drop: bool = False  # close the connection without answering
    headers: dict[str, str] = field(default_factory=dict)
    usage: tuple[int, int] = (40, 10)  # prompt, completion tokens

    @classmethod
    def text(cls, content: str, **kw: Any) -> "StubReply":
        return cls(content=content, **kw)

    @classmethod
    def json(cls, obj: Any, **kw: Any) -> "StubReply":
        return cls(content=json.dumps(obj), **kw)

    @classmethod
    def malformed(cls) -> "StubReply":
        return cls(content='{"turns": [{"turn": 1, "label": "pitch", "confidence": 0.9,, }')

    @classmethod
    def truncated(cls, obj: Any) -> "StubReply":
        raw = json.dumps(obj)
        return cls(content=raw[: max(1, len(raw) * 2 // 3)], finish_reason="length")

    @classmethod
    def refused(cls, message: str = "I can't help with that.") -> "StubReply":
        return cls(content=None, refusal=message)

    @classmethod
    def error(cls, status: int = 500, **kw: Any) -> "StubReply":
        return cls(status=status, content=None, **kw)

    @classmethod
    def rate_limited(cls, retry_after: float | str = 0.1) -> "StubReply":
        return cls(status=429, content=None, headers={"Retry-After": str(retry_after)})

    @classmethod
    def slow(cls, delay: float, then: "StubReply | None" = None) -> "StubReply":
        base = then or cls()
        return cls(**{**base.__dict__, "delay": delay})

    @classmethod
    def dropped(cls) -> "StubReply":
        return cls(drop=True)


@dataclass
class RecordedRequest:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]

    @property
    def messages(self) -> list[dict[str, str]]:
        return self.body.get("messages", [])

    @property
    def system(self) -> str:
        return "\n".join(m["content"] for m in self.messages if m["role"] == "system")

    @property
    def user_messages(self) -> list[str]:
        return [m["content"] for m in self.messages if m["role"] == "user"]

    @property
    def response_format(self) -> str | None:
        fmt = self.body.get("response_format")
        return fmt.get("type") if isinstance(fmt, dict) else None


Responder = Callable[[RecordedRequest], StubReply]


class OpenAIStub:
    def __init__(
        self,
        models: tuple[str, ...] = ("stub-model",),
        json_schema_supported: bool = True,
        json_mode_supported: bool = True,
    ):
        self.models = models
        self.json_schema_supported = json_schema_supported
        self.json_mode_supported = json_mode_supported
        self.default: StubReply | Responder = StubReply.text("Oh, nice to meet you too!")
        self.requests: list[RecordedRequest] = []
        self._queue: list[StubReply] = []
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopping: asyncio.Event | None = None
        self.port = 0

    # -- scripting --------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def push(self, *replies: StubReply) -> None:
        with self._lock:
            self._queue.extend(replies)

    @property
    def chat_requests(self) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.path.endswith("/chat/completions")]

    def _next(self, request: RecordedRequest) -> StubReply:
        with self._lock:
            self.requests.append(request)
            if self._queue:
                return self._queue.pop(0)
        return self.default(request) if callable(self.default) else self.default

    # -- server -----------------------------------------------------------------------------------

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        recorded = RecordedRequest(request.path, dict(request.headers), body)
        fmt = recorded.response_format
        if (fmt == "json_schema" and not self.json_schema_supported) or (
            fmt == "json_object" and not self.json_mode_supported
        ):
            with self._lock:
                self.requests.append(recorded)
            return web.json_response(
                {
                    "error": {
                        "message": f"response_format {fmt} is not supported",
                        "type": "invalid_request_error",
                    }
                },
                status=400,
            )
        reply = self._next(recorded)
        if reply.delay:
            assert self._stopping is not None
            try:  # wakes early when the stub stops, so a test never waits for a slow answer
                await asyncio.wait_for(self._stopping.wait(), reply.delay)
            except asyncio.TimeoutError:
                pass
        if reply.drop:
            assert request.transport is not None
            request.transport.close()
            return web.Response()
        if reply.status != 200:
            return web.json_response(
                {"error": {"message": "scripted failure", "type": "server_error"}},
                status=reply.status,
                headers=reply.headers,
            )
        message: dict[str, Any] = {"role": "assistant", "content": reply.content}
        if reply.refusal is not None:
            message["refusal"] = reply.refusal
        prompt, completion = reply.usage
        return web.json_response(
            {
                "id": f"chatcmpl-{len(self.requests)}",
                "object": "chat.completion",
                "created": 1700000000,
                "model": body.get("model", "stub-model"),
                "choices": [{"index": 0, "message": message, "finish_reason": reply.finish_reason}],
                "usage": {
                    "prompt_tokens": prompt,
                    "completion_tokens": completion,
                    "total_tokens": prompt + completion,
                },
            },
            headers=reply.headers,
        )

    async def _models(self, request: web.Request) -> web.Response:
        with self._lock:
            self.requests.append(RecordedRequest(request.path, dict(request.headers), {}))
        return web.json_response(
            {
                "object": "list",
                "data": [{"id": m, "object": "model", "created": 0, "owned_by": "stub"} for m in self.models],
            }
        )

    def start(self) -> "OpenAIStub":
        ready = threading.Event()
        failure: list[BaseException] = []

        def serve() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            app = web.Application()
            app.router.add_post("/v1/chat/completions", self._chat)
            app.router.add_get("/v1/models", self._models)
            runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.2)

            async def up() -> None:
                self._stopping = asyncio.Event()
                await runner.setup()
                site = web.TCPSite(runner, "127.0.0.1", 0)
                await site.start()
                self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

            try:
                loop.run_until_complete(up())
            except BaseException as exc:  # pragma: no cover - reported to the caller
                failure.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=serve, name="openai-stub", daemon=True)
        self._thread.start()
        ready.wait(10)
        if failure:
            raise failure[0]
        return self

    def stop(self) -> None:
        loop = self._loop
        if loop is None or self._thread is None:
            return

        def halt() -> None:
            assert self._stopping is not None
            self._stopping.set()
            loop.call_later(0.05, loop.stop)

        loop.call_soon_threadsafe(halt)
        self._thread.join(10)
        self._loop = self._thread = None

    def __enter__(self) -> "OpenAIStub":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def closed_port_url() -> str:
    """A base URL on 127.0.0.1 where nothing listens: connection refused."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"
