"""Record and replay of the raw HTTP traffic between ccxt and an exchange ("tapes").

A *tape* is one gzip-compressed JSON-lines file per fetch:

* line 1, the header: ``{"format": "volcal-tape", "version": 1, "exchange": "deribit",
  "config": {...}, "ccxt_version": ..., "created": ..., ...}``; ``config`` is the dictionary
  the ccxt exchange was constructed with, so a replay builds the same requests;
* one line per HTTP exchange, in the order they happened: ``method``, ``url``, request
  ``body``, response ``status``, ``reason``, ``headers`` and body ``text`` (exactly the text
  ccxt received), ``received_ns`` (UTC epoch nanoseconds when the response reached ccxt),
  or, for a request that got no response (a timeout, a refused connection), ``error`` with
  the ccxt exception class name and its message.

Recording hooks ccxt's HTTP layer, not its parsers: the exchange instance's
``on_rest_response`` (called by ccxt with the raw response text *before* it decodes JSON)
appends the response to the tape and rewrites the file atomically (temporary file, then
:func:`os.replace`) before ccxt parses anything, so a parse failure never loses the
response. The instance's ``fetch`` is wrapped to note transport failures and responses that
are not valid JSON.

Replay swaps the instance's HTTP session for one that answers from the tape (a
:class:`requests.Session` subclass for sync ccxt, an aiohttp-like session for
``ccxt.async_support``): everything above the socket, ccxt's status-code handling, JSON
decoding, exchange error mapping and parsers, runs unchanged. A request that is not on the
tape raises :class:`~volcal.errors.ReplayError` naming the URL.

ccxt is imported lazily, inside functions: importing this module does not import ccxt.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import io
import json
import os
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from volcal._atomic import atomic_write_bytes
from volcal.errors import ChainValidationError, ReplayError

__all__ = [
    "TAPE_FORMAT",
    "TAPE_VERSION",
    "Tape",
    "TapeEntry",
    "TapeRecorder",
    "TapeServer",
    "TransportReply",
    "normalise_request",
    "read_tape",
    "replay",
    "serve",
]

TAPE_FORMAT = "volcal-tape"
TAPE_VERSION = 1

VOLATILE_PARAMS = frozenset({"timestamp", "nonce", "_", "recvwindow", "signature", "sign"})
"""Query/body parameter names (lower case) ignored when matching a request to the tape:
clocks and nonces that ccxt may add and that change from run to run."""


# ----------------------------------------------------------------------------------------
# Tape content
# ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TapeEntry:
    """One HTTP exchange as ccxt saw it.

    Attributes
    ----------
    seq:
        Position on the tape (0, 1, ...).
    method, url, body:
        The request: HTTP method, full URL with query string, request body text (or None).
    status, reason, headers, text:
        The response: HTTP status code, reason phrase, response headers, body text exactly
        as received. None when the request got no response (see ``error``).
    received_ns:
        When the response (or the failure) reached ccxt, UTC epoch nanoseconds.
    error, message:
        For a request without a response: the ccxt exception class name (``RequestTimeout``,
        ``NetworkError``, ``ExchangeNotAvailable``...) and its message.
    """

    seq: int
    method: str
    url: str
    body: str | None
    status: int | None
    reason: str | None
    headers: dict[str, str]
    text: str | None
    received_ns: int
    error: str | None = None
    message: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The entry as a JSON-ready dictionary (one line of the tape)."""
        out: dict[str, Any] = {
            "seq": self.seq,
            "method": self.method,
            "url": self.url,
            "body": self.body,
            "received_ns": self.received_ns,
            "received": _iso_ns(self.received_ns),
        }
        if self.error is not None:
            out["error"] = self.error
            out["message"] = self.message
        else:
            out.update(status=self.status, reason=self.reason, headers=self.headers, text=self.text)
        return out

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> TapeEntry:
        """Inverse of :meth:`to_json`."""
        return cls(
            seq=int(obj["seq"]),
            method=str(obj["method"]),
            url=str(obj["url"]),
            body=obj.get("body"),
            status=None if obj.get("status") is None else int(obj["status"]),
            reason=obj.get("reason"),
            headers={str(k): str(v) for k, v in (obj.get("headers") or {}).items()},
            text=obj.get("text"),
            received_ns=int(obj["received_ns"]),
            error=obj.get("error"),
            message=obj.get("message"),
        )


def _iso_ns(ns: int) -> str:
    """ISO 8601 UTC text of epoch nanoseconds (microsecond resolution, for people)."""
    return datetime.fromtimestamp(ns / 1e9, tz=UTC).isoformat()


@dataclass
class Tape:
    """A tape in memory, optionally bound to a file that is rewritten on every append.

    Parameters
    ----------
    header:
        Metadata: at least ``exchange`` (ccxt id) and ``config`` (constructor dictionary).
    entries:
        The HTTP exchanges, in order.
    path:
        When set, :meth:`append` rewrites this file atomically after each entry.
    """

    header: dict[str, Any]
    entries: list[TapeEntry] = field(default_factory=list)
    path: Path | None = None

    @property
    def exchange(self) -> str:
        """The ccxt exchange id the tape was recorded from."""
        return str(self.header["exchange"])

    def append(self, entry: TapeEntry) -> None:
        """Add an entry and, when the tape has a file, rewrite the file atomically."""
        self.entries.append(entry)
        if self.path is not None:
            self.write(self.path)

    def next_seq(self) -> int:
        """The sequence number of the next entry."""
        return len(self.entries)

    def to_bytes(self) -> bytes:
        """The gzip JSON-lines bytes of the tape (deterministic: gzip mtime is 0)."""
        lines = [json.dumps(self.header, sort_keys=True, ensure_ascii=False)]
        lines += [json.dumps(e.to_json(), sort_keys=True, ensure_ascii=False) for e in self.entries]
        raw = ("\n".join(lines) + "\n").encode("utf-8")
        buf = io.BytesIO()
        with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0, compresslevel=9) as gz:
            gz.write(raw)
        return buf.getvalue()

    def write(self, path: str | os.PathLike[str]) -> Path:
        """Write the tape to ``path`` atomically: a temporary file in the same folder,
        flushed and fsynced, then :func:`os.replace`. A reader never sees half a tape."""
        return atomic_write_bytes(path, self.to_bytes())

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> Tape:
        """Read a tape file; raise :class:`~volcal.errors.ReplayError` if it is unreadable."""
        p = Path(path)
        try:
            with gzip.open(p, "rt", encoding="utf-8") as fh:
                lines = [line for line in fh.read().splitlines() if line.strip()]
        except (OSError, EOFError, UnicodeDecodeError) as exc:
            raise ReplayError(f"cannot read tape {p}: {exc}") from exc
        if not lines:
            raise ReplayError(f"tape {p} is empty")
        try:
            header = json.loads(lines[0])
            entries = [TapeEntry.from_json(json.loads(line)) for line in lines[1:]]
        except (ValueError, KeyError, TypeError) as exc:
            raise ReplayError(f"tape {p} is corrupt: {exc}") from exc
        if header.get("format") != TAPE_FORMAT:
            raise ReplayError(f"{p} is not a volcal tape (format={header.get('format')!r})")
        if int(header.get("version", 0)) > TAPE_VERSION:
            raise ReplayError(
                f"tape {p} has version {header.get('version')}, this volcal reads up to "
                f"{TAPE_VERSION}"
            )
        return cls(header=header, entries=entries)


def read_tape(path: str | os.PathLike[str]) -> Tape:
    """Read a tape file (see :meth:`Tape.read`)."""
    return Tape.read(path)


def new_header(exchange_id: str, config: Mapping[str, Any], **extra: Any) -> dict[str, Any]:
    """A tape header for exchange ``exchange_id`` built with ccxt constructor ``config``."""
    import ccxt

    header: dict[str, Any] = {
        "format": TAPE_FORMAT,
        "version": TAPE_VERSION,
        "exchange": exchange_id,
        "config": dict(config),
        "ccxt_version": getattr(ccxt, "__version__", "unknown"),
        "created": datetime.now(tz=UTC).isoformat(),
    }
    header.update(extra)
    return header


# ----------------------------------------------------------------------------------------
# Request matching
# ----------------------------------------------------------------------------------------


def _strip_volatile(pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return sorted((k, v) for k, v in pairs if k.lower() not in VOLATILE_PARAMS)


def normalise_request(method: str, url: str, body: str | None) -> tuple[str, str, str]:
    """The key a request is matched on: method, URL with sorted query parameters less the
    volatile ones (:data:`VOLATILE_PARAMS`), and the body (JSON re-serialised with sorted
    keys and without volatile keys; other bodies as they are)."""
    parts = urlsplit(url)
    query = urlencode(_strip_volatile(parse_qsl(parts.query, keep_blank_values=True)))
    norm_url = f"{parts.scheme}://{parts.netloc}{parts.path}" + (f"?{query}" if query else "")
    norm_body = ""
    if body:
        try:
            obj = json.loads(body)
        except ValueError:
            obj = None
            pairs = parse_qsl(body, keep_blank_values=True)
            norm_body = urlencode(_strip_volatile(pairs)) if pairs else body
        if isinstance(obj, dict):
            obj = {k: v for k, v in obj.items() if k.lower() not in VOLATILE_PARAMS}
            norm_body = json.dumps(obj, sort_keys=True)
        elif obj is not None:
            norm_body = json.dumps(obj, sort_keys=True)
    return method.upper(), norm_url, norm_body


# ----------------------------------------------------------------------------------------
# Serving responses to ccxt (replay, synthetic exchanges, fault injection)
# ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TransportReply:
    """What the fake transport answers: a response, or a transport failure.

    ``error`` is one of ``None`` (a response), ``"timeout"`` (ccxt raises RequestTimeout)
    or ``"connection"`` (ccxt raises NetworkError / ExchangeNotAvailable).
    """

    status: int = 200
    reason: str = "OK"
    headers: Mapping[str, str] = field(default_factory=lambda: {"Content-Type": "application/json"})
    text: str = ""
    received_ns: int | None = None
    error: str | None = None


Responder = Callable[[str, str, "str | None"], TransportReply]
"""``responder(method, url, body) -> TransportReply``; may raise ReplayError."""

_TIMEOUT_ERRORS = frozenset({"RequestTimeout"})


class TapeServer:
    """Answers requests from a tape, in order per request key.

    Entries with the same key (see :func:`normalise_request`) are served in tape order;
    once they are used up the last one is served again (reads are idempotent, and ccxt
    may ask twice). A request whose key is not on the tape raises ReplayError.
    """

    def __init__(self, tape: Tape) -> None:
        self.tape = tape
        self._queues: dict[tuple[str, str, str], list[TapeEntry]] = defaultdict(list)
        for e in tape.entries:
            self._queues[normalise_request(e.method, e.url, e.body)].append(e)
        self._pos: dict[tuple[str, str, str], int] = defaultdict(int)
        self.served: list[TapeEntry] = []
        self.last_received_ns: int | None = None

    def __call__(self, method: str, url: str, body: str | None) -> TransportReply:
        key = normalise_request(method, url, body)
        queue = self._queues.get(key)
        if not queue:
            where = f" {self.tape.path}" if self.tape.path else ""
            known = sorted({f"{k[0]} {k[1]}" for k in self._queues})
            hint = "; on the tape: " + ", ".join(known[:5]) if known else "; the tape is empty"
            raise ReplayError(f"request not on tape{where}: {method.upper()} {url}{hint}")
        i = min(self._pos[key], len(queue) - 1)
        self._pos[key] += 1
        entry = queue[i]
        self.served.append(entry)
        self.last_received_ns = entry.received_ns
        if entry.error is not None:
            kind = "timeout" if entry.error in _TIMEOUT_ERRORS else "connection"
            return TransportReply(error=kind, received_ns=entry.received_ns)
        return TransportReply(
            status=int(entry.status if entry.status is not None else 200),
            reason=entry.reason or "",
            headers=dict(entry.headers),
            text=entry.text or "",
            received_ns=entry.received_ns,
        )


def _make_requests_session(responder: Responder, owner: Any) -> Any:
    """A :class:`requests.Session` whose ``request`` answers from ``responder``."""
    import requests
    from requests.structures import CaseInsensitiveDict

    class _ServedSession(requests.Session):
        def request(  # type: ignore[override]
            self, method: str, url: str, data: Any = None, **kwargs: Any
        ) -> requests.Response:
            body = data.decode("utf-8") if isinstance(data, bytes) else data
            reply = responder(method, url, body)
            owner._volcal_last_received_ns = reply.received_ns
            if reply.error == "timeout":
                raise requests.Timeout(f"(served) timeout for {method} {url}")
            if reply.error is not None:
                raise requests.ConnectionError(f"(served) connection failed for {method} {url}")
            resp = requests.Response()
            resp.status_code = reply.status
            resp.reason = reply.reason
            resp.headers = CaseInsensitiveDict(dict(reply.headers))
            resp._content = reply.text.encode("utf-8")
            resp.encoding = "utf-8"
            resp.url = url
            return resp

    return _ServedSession()


class _ServedAiohttpResponse:
    def __init__(self, reply: TransportReply) -> None:
        self.status = reply.status
        self.reason = reply.reason
        self.headers = dict(reply.headers)
        self._text = reply.text
        self.content = reply.text.encode("utf-8")

    async def text(self, errors: str = "strict") -> str:
        return self._text


class _ServedAiohttpRequest:
    def __init__(self, responder: Responder, owner: Any, method: str, url: Any, data: Any):
        self._responder = responder
        self._owner = owner
        self._method = method
        self._url = str(url)
        self._data = data

    async def __aenter__(self) -> _ServedAiohttpResponse:
        body = self._data.decode("utf-8") if isinstance(self._data, bytes) else self._data
        reply = self._responder(self._method, self._url, body)
        self._owner._volcal_last_received_ns = reply.received_ns
        if reply.error == "timeout":
            raise TimeoutError(f"(served) timeout for {self._method} {self._url}")
        if reply.error is not None:
            import aiohttp

            raise aiohttp.ClientConnectionError(
                f"(served) connection failed for {self._method} {self._url}"
            )
        await asyncio.sleep(0)
        return _ServedAiohttpResponse(reply)

    async def __aexit__(self, *exc: object) -> None:
        return None


class _ServedAiohttpSession:
    """The part of :class:`aiohttp.ClientSession` that ccxt.async_support uses."""

    closed = False

    def __init__(self, responder: Responder, owner: Any) -> None:
        self._responder = responder
        self._owner = owner
        self.headers: dict[str, str] = {}

    def _request(self, method: str, url: Any, data: Any = None, **_: Any) -> Any:
        return _ServedAiohttpRequest(self._responder, self._owner, method, url, data)

    def get(self, url: Any, **kw: Any) -> Any:
        return self._request("GET", url, **kw)

    def post(self, url: Any, **kw: Any) -> Any:
        return self._request("POST", url, **kw)

    def put(self, url: Any, **kw: Any) -> Any:
        return self._request("PUT", url, **kw)

    def delete(self, url: Any, **kw: Any) -> Any:
        return self._request("DELETE", url, **kw)

    def patch(self, url: Any, **kw: Any) -> Any:
        return self._request("PATCH", url, **kw)

    async def close(self) -> None:
        self.closed = True


def is_async_exchange(exchange: Any) -> bool:
    """True for a ``ccxt.async_support`` exchange instance."""
    return asyncio.iscoroutinefunction(type(exchange).fetch)


def serve(exchange: Any, responder: Responder) -> Any:
    """Make ``exchange`` (sync or async ccxt instance) answer every HTTP request from
    ``responder`` instead of the network; returns the same instance.

    Only the HTTP session is replaced: ccxt's own request signing, status handling, JSON
    decoding and parsing all run. Used by :func:`replay`, by the synthetic tape generator and
    by tests that inject faults.
    """
    if is_async_exchange(exchange):
        exchange.session = _ServedAiohttpSession(responder, exchange)
    else:
        exchange.session = _make_requests_session(responder, exchange)
    exchange._volcal_served = True
    return exchange


def make_exchange(exchange_id: str, config: Mapping[str, Any], *, asynchronous: bool) -> Any:
    """Construct ``ccxt.<exchange_id>(config)`` (or its ``ccxt.async_support`` twin)."""
    if asynchronous:
        import ccxt.async_support as ccxt_mod
    else:
        import ccxt as ccxt_mod
    cls = getattr(ccxt_mod, exchange_id, None)
    if cls is None or not isinstance(cls, type):
        raise ValueError(f"unknown ccxt exchange id {exchange_id!r}")
    return cls(dict(config))


def replay(tape: Tape | str | os.PathLike[str], *, asynchronous: bool = False) -> Any:
    """A ccxt exchange instance that answers every request from ``tape``.

    Parameters
    ----------
    tape:
        A :class:`Tape` or the path of a tape file.
    asynchronous:
        Return a ``ccxt.async_support`` instance (to ``await``, and to ``close()``).

    Returns
    -------
    ccxt.Exchange
        Built with the tape's recorded constructor config (rate limiter off: there is no
        server to protect). Its responses go through ccxt's own parsing code, so
        ``fetch_chain(replay(tape), currency)`` gives the chain of the fetch that recorded
        the tape. A request that is not on the tape raises
        :class:`~volcal.errors.ReplayError` naming the URL.
    """
    t = tape if isinstance(tape, Tape) else Tape.read(tape)
    if isinstance(tape, (str, os.PathLike)):
        t.path = None
        t.header = {**t.header, "replayed_from": str(tape)}
    config = dict(t.header.get("config") or {})
    config["enableRateLimit"] = False
    exchange = make_exchange(t.exchange, config, asynchronous=asynchronous)
    server = TapeServer(t)
    serve(exchange, server)
    exchange._volcal_tape_server = server
    exchange._volcal_config = dict(t.header.get("config") or {})
    return exchange


# ----------------------------------------------------------------------------------------
# Recording
# ----------------------------------------------------------------------------------------


class TapeRecorder:
    """Records every HTTP response an exchange instance receives onto a :class:`Tape`.

    Use as a context manager: it installs instance-level wrappers of ``on_rest_response``
    (where ccxt hands over the raw body text, before JSON decoding) and ``fetch`` (to note
    transport failures and undecodable bodies), and removes them on exit.

    Attributes
    ----------
    tape:
        The tape being written (to its file after every response, when it has one).
    last_request:
        ``(method, url)`` of the most recent request, for error messages.
    """

    def __init__(self, exchange: Any, tape: Tape) -> None:
        self.exchange = exchange
        self.tape = tape
        self.last_request: tuple[str, str] | None = None
        self._saved: dict[str, Any] = {}

    def _now_ns(self) -> int:
        served = getattr(self.exchange, "_volcal_last_received_ns", None)
        if getattr(self.exchange, "_volcal_served", False) and served is not None:
            return int(served)
        return time.time_ns()

    def _record_response(
        self,
        code: Any,
        reason: Any,
        url: str,
        method: str,
        response_headers: Any,
        response_body: Any,
        request_body: Any,
    ) -> None:
        text = response_body if isinstance(response_body, str) else str(response_body)
        headers = {str(k): str(v) for k, v in dict(response_headers or {}).items()}
        if isinstance(request_body, bytes):
            request_body = request_body.decode("utf-8", errors="replace")
        entry = TapeEntry(
            seq=self.tape.next_seq(),
            method=str(method).upper(),
            url=str(url),
            body=None if request_body is None else str(request_body),
            status=None if code is None else int(code),
            reason=None if reason is None else str(reason),
            headers=headers,
            text=text,
            received_ns=self._now_ns(),
        )
        self.tape.append(entry)

    def _record_failure(self, method: str, url: str, body: Any, exc: BaseException) -> None:
        entry = TapeEntry(
            seq=self.tape.next_seq(),
            method=str(method).upper(),
            url=str(url),
            body=None if body is None else str(body),
            status=None,
            reason=None,
            headers={},
            text=None,
            received_ns=self._now_ns(),
            error=type(exc).__name__,
            message=str(exc),
        )
        self.tape.append(entry)

    def _check_decoded(self, result: Any, before: int, method: str, url: str) -> None:
        """Raise ChainValidationError when a 2xx JSON-looking body did not decode."""
        if not isinstance(result, (str, bytes)) or len(self.tape.entries) <= before:
            return
        entry = self.tape.entries[-1]
        if entry.status is not None and not 200 <= entry.status < 300:
            return
        text = (entry.text or "").strip()
        ctype = next((v for k, v in entry.headers.items() if k.lower() == "content-type"), "")
        if text[:1] in "{[" or "json" in ctype.lower():
            tail = text[-40:]
            raise ChainValidationError(
                f"{self.exchange.id}: {method.upper()} {url}: response is not valid JSON "
                f"(truncated or corrupt, {len(text)} characters, ending {tail!r}); "
                f"it is on the tape as entry {entry.seq}"
            )

    def __enter__(self) -> TapeRecorder:
        ex = self.exchange
        orig_on_rest = ex.on_rest_response
        orig_fetch = ex.fetch
        self._saved = {
            name: ex.__dict__[name] for name in ("on_rest_response", "fetch") if name in ex.__dict__
        }
        recorder = self

        def on_rest_response(
            code: Any,
            reason: Any,
            url: str,
            method: str,
            response_headers: Any,
            response_body: Any,
            request_headers: Any,
            request_body: Any,
        ) -> Any:
            recorder._record_response(
                code, reason, url, method, response_headers, response_body, request_body
            )
            return orig_on_rest(
                code,
                reason,
                url,
                method,
                response_headers,
                response_body,
                request_headers,
                request_body,
            )

        if is_async_exchange(ex):

            async def afetch(
                url: str, method: str = "GET", headers: Any = None, body: Any = None
            ) -> Any:
                recorder.last_request = (method, url)
                before = len(recorder.tape.entries)
                try:
                    result = await orig_fetch(url, method, headers, body)
                except Exception as exc:
                    recorder._after_failure(exc, before, method, url, body)
                    raise
                recorder._check_decoded(result, before, method, url)
                return result

            ex.fetch = afetch
        else:

            def fetch(url: str, method: str = "GET", headers: Any = None, body: Any = None) -> Any:
                recorder.last_request = (method, url)
                before = len(recorder.tape.entries)
                try:
                    result = orig_fetch(url, method, headers, body)
                except Exception as exc:
                    recorder._after_failure(exc, before, method, url, body)
                    raise
                recorder._check_decoded(result, before, method, url)
                return result

            ex.fetch = fetch
        ex.on_rest_response = on_rest_response
        return self

    def _after_failure(
        self, exc: BaseException, before: int, method: str, url: str, body: Any
    ) -> None:
        import ccxt

        if len(self.tape.entries) == before and isinstance(exc, ccxt.NetworkError):
            self._record_failure(method, url, body, exc)

    def __exit__(self, *exc: object) -> None:
        ex = self.exchange
        for name in ("on_rest_response", "fetch"):
            if name in self._saved:
                setattr(ex, name, self._saved[name])
            else:
                ex.__dict__.pop(name, None)

    def received_since(self, start: int) -> list[int]:
        """Receive times (ns) of the responses recorded from entry ``start`` on."""
        return [e.received_ns for e in self.tape.entries[start:]]


@contextlib.contextmanager
def recording(exchange: Any, tape: Tape) -> Iterator[TapeRecorder]:
    """Context manager form of :class:`TapeRecorder`."""
    with TapeRecorder(exchange, tape) as rec:
        yield rec


def with_path(tape: Tape, path: Path | None) -> Tape:
    """A copy of ``tape`` bound to ``path``."""
    return replace(tape, entries=list(tape.entries), path=path)
