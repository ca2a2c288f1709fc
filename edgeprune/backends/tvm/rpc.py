"""Talking to a TVM RPC tracker: list its boards, lease one by key, run on it, retry on another.

A board farm is many ``python -m tvm.exec.rpc_server --tracker HOST:PORT --key KEY``
processes behind one ``python -m tvm.exec.rpc_tracker``. edgeprune never runs
its own server: it speaks the tracker's protocol (a magic number, then
length-prefixed JSON) with socket timeouts, so an unreachable tracker, a key
no board serves and a board that never frees up each give a one-line error
instead of TVM's silent retry loops. This module imports tvm only inside
functions; importing it is free.
"""
from __future__ import annotations

import json
import re
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from edgeprune.errors import BackendUnavailable, BadInput

T = TypeVar("T")

# tvm/rpc/base.py: RPC_TRACKER_MAGIC and TrackerCode (kept here so listing boards needs no tvm import)
_TRACKER_MAGIC = 0x2F271
_SUCCESS, _REQUEST, _SUMMARY = 0, 4, 6

DEFAULT_CONNECT_TIMEOUT = 5.0
DEFAULT_REQUEST_TIMEOUT = 60.0


class BoardLost(BackendUnavailable):
    """Every attempt to run on a board with the key failed (boards dropped out or kept failing)."""


@dataclass(frozen=True)
class RemoteSpec:
    """Where a remote target lives: tracker address and device key (``rpc://HOST:PORT/KEY``)."""

    host: str
    port: int
    key: str

    @property
    def tracker(self) -> str:
        """``HOST:PORT``."""
        return f"{self.host}:{self.port}"

    @classmethod
    def parse(cls, url: str) -> RemoteSpec:
        """Parse ``rpc://HOST:PORT/KEY``."""
        m = re.fullmatch(r"rpc://([^:/]+):(\d+)/([^/]+)", url.strip())
        if not m:
            raise BadInput(f"remote host must be rpc://HOST:PORT/KEY, got {url!r}")
        return cls(m.group(1), int(m.group(2)), m.group(3))


def parse_tracker(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (or ``rpc://HOST:PORT[/KEY]``) -> (host, port)."""
    text = text.strip()
    if text.startswith("rpc://"):
        text = text[len("rpc://"):].split("/", 1)[0]
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise BadInput(f"tracker address must be HOST:PORT, got {text!r}")
    return host, int(port)


# --------------------------------------------------------------------------- tracker protocol


def _connect(host: str, port: int, timeout: float) -> socket.socket:
    where = f"{host}:{port}"
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except TimeoutError:
        raise BackendUnavailable(f"TVM RPC tracker {where} did not answer within {timeout:g}s") from None
    except ConnectionRefusedError:
        raise BackendUnavailable(
            f"no TVM RPC tracker at {where} (connection refused; start one with "
            f"python -m tvm.exec.rpc_tracker --host 0.0.0.0 --port {port})"
        ) from None
    except OSError as err:
        raise BackendUnavailable(f"cannot reach TVM RPC tracker {where}: {err.strerror or err}") from None
    try:
        sock.sendall(struct.pack("<i", _TRACKER_MAGIC))
        magic = struct.unpack("<i", _recvall(sock, 4))[0]
    except (OSError, ConnectionError) as err:
        sock.close()
        raise BackendUnavailable(f"{where} closed the connection during the handshake ({err}); is it a TVM RPC tracker?") from None
    if magic != _TRACKER_MAGIC:
        sock.close()
        raise BackendUnavailable(f"{where} is not a TVM RPC tracker (wrong handshake)")
    return sock


def _recvall(sock: socket.socket, n: int) -> bytes:
    chunks, got = [], 0
    while got < n:
        chunk = sock.recv(n - got)
        if not chunk:
            raise ConnectionError("connection closed")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def _call(sock: socket.socket, msg: list) -> Any:
    data = json.dumps(msg).encode("utf-8")
    sock.sendall(struct.pack("<i", len(data)) + data)
    size = struct.unpack("<i", _recvall(sock, 4))[0]
    return json.loads(_recvall(sock, size).decode("utf-8"))


def tracker_summary(host: str, port: int, timeout: float = DEFAULT_CONNECT_TIMEOUT) -> dict[str, Any]:
    """What the tracker has: ``{"tracker", "keys": {key: {total, free, pending}}, "servers": [...]}``."""
    sock = _connect(host, port, timeout)
    try:
        reply = _call(sock, [_SUMMARY])
    except TimeoutError:
        raise BackendUnavailable(f"TVM RPC tracker {host}:{port} did not answer a summary within {timeout:g}s") from None
    except (OSError, ConnectionError, ValueError) as err:
        raise BackendUnavailable(f"TVM RPC tracker {host}:{port} failed to answer: {err}") from None
    finally:
        sock.close()
    if not isinstance(reply, list) or len(reply) != 2 or reply[0] != _SUCCESS:
        raise BackendUnavailable(f"TVM RPC tracker {host}:{port} gave an unexpected summary: {str(reply)[:80]}")
    data = reply[1]
    servers = []
    totals: dict[str, int] = {}
    for item in data.get("server_info", []):
        key = str(item.get("key", ""))
        key = key.split(":", 1)[1] if key.startswith("server:") else key
        addr = item.get("addr") or ["?", 0]
        servers.append({"key": key, "host": addr[0], "port": addr[1]})
        totals[key] = totals.get(key, 0) + 1
    keys: dict[str, dict[str, int]] = {}
    for key, q in sorted(data.get("queue_info", {}).items()):
        keys[key] = {"total": totals.get(key, 0), "free": int(q.get("free", 0)), "pending": int(q.get("pending", 0))}
    for key, n in totals.items():
        keys.setdefault(key, {"total": n, "free": 0, "pending": 0})
    return {"tracker": f"{host}:{port}", "keys": dict(sorted(keys.items())), "servers": sorted(servers, key=lambda s: (s["key"], s["port"]))}


def request_board(
    spec: RemoteSpec,
    timeout: float = DEFAULT_REQUEST_TIMEOUT,
    session_timeout: float = 0,
    priority: int = 1,
) -> tuple[Any, tuple[str, int]]:
    """Lease one board with ``spec.key`` from the tracker: (tvm RPCSession, (board host, port)).

    Fails fast when no board ever registered the key, and after ``timeout``
    seconds when all boards with the key stay busy. The lease ends when the
    session object is dropped (:func:`free_board`).
    """
    info = tracker_summary(spec.host, spec.port, min(timeout, DEFAULT_CONNECT_TIMEOUT))
    if spec.key not in info["keys"] or info["keys"][spec.key]["total"] + info["keys"][spec.key]["free"] == 0:
        known = ", ".join(f"{k} ({v['total']})" for k, v in info["keys"].items() if v["total"] or v["free"]) or "none"
        raise BackendUnavailable(
            f"no board with key {spec.key!r} on TVM RPC tracker {spec.tracker} (keys there: {known}); "
            f"start one with python -m tvm.exec.rpc_server --tracker {spec.tracker} --key {spec.key}"
        )
    sock = _connect(spec.host, spec.port, min(timeout, DEFAULT_CONNECT_TIMEOUT))
    try:
        sock.settimeout(timeout)
        reply = _call(sock, [_REQUEST, spec.key, "edgeprune", priority])
    except TimeoutError:
        k = info["keys"][spec.key]
        raise BackendUnavailable(
            f"timed out after {timeout:g}s waiting for a free board {spec.key!r} on {spec.tracker} "
            f"({k['total']} registered, {k['pending']} requests queued before ours)"
        ) from None
    except (OSError, ConnectionError, ValueError) as err:
        raise BackendUnavailable(f"TVM RPC tracker {spec.tracker} dropped the request for {spec.key!r}: {err}") from None
    finally:
        sock.close()
    if not isinstance(reply, list) or len(reply) != 2 or reply[0] != _SUCCESS:
        raise BackendUnavailable(f"TVM RPC tracker {spec.tracker} refused the request for {spec.key!r}: {str(reply)[:80]}")
    url, port, matchkey = reply[1]
    from tvm import rpc

    try:
        sess = rpc.connect(url, int(port), matchkey, session_timeout=session_timeout)
    except Exception as err:  # noqa: BLE001 - the board went away between the tracker's answer and our connect
        raise BoardLost(f"board {url}:{port} ({spec.key}) refused the session: {_first_line(err)}") from None
    return sess, (url, int(port))


def free_board(sess: Any) -> None:
    """End a lease: dropping the last reference closes the session and the board returns to the tracker."""
    try:
        sess._sess = None  # RPCSession keeps the C++ session here; releasing it closes the socket
    except Exception:  # noqa: BLE001, S110 - best effort: the session may already be gone
        pass


def run_on_board(
    spec: RemoteSpec,
    fn: Callable[[Any, tuple[str, int]], T],
    attempts: int = 3,
    timeout: float = DEFAULT_REQUEST_TIMEOUT,
    session_timeout: float = 0,
    log: Callable[[str], None] | None = None,
) -> T:
    """Lease a board, run ``fn(session, board)``, free it; when the board is lost, retry on another.

    ``fn`` must be restartable (upload, load, time: no state left on the
    board). Errors from edgeprune itself (bad input, nothing registered under
    the key, a tracker that is down) are not retried.
    """
    last: BaseException | None = None
    for attempt in range(1, attempts + 1):
        sess, board = None, None
        try:
            sess, board = request_board(spec, timeout=timeout, session_timeout=session_timeout)
            return fn(sess, board)
        except BoardLost as err:
            last = err
        except (BadInput, BackendUnavailable):
            raise
        except Exception as err:  # noqa: BLE001 - RPCError / TVMError / OSError raised when the board dies mid-run
            last = err
            if log is not None:
                where = f"{board[0]}:{board[1]}" if board else "?"
                log(f"board {where} ({spec.key}) failed on attempt {attempt}/{attempts}: {_first_line(err)}; retrying on another")
        finally:
            if sess is not None:
                free_board(sess)
        time.sleep(min(0.5 * attempt, 2.0))
    raise BoardLost(f"lost every board tried for key {spec.key!r} on {spec.tracker} after {attempts} attempts: {_first_line(last)}")


def _first_line(err: BaseException | None) -> str:
    if err is None:
        return "no error"
    text = str(err).strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    # TVM errors carry a traceback; the last line names the error
    line = next((ln for ln in reversed(lines) if "Error" in ln), lines[-1] if lines else "")
    return f"{type(err).__name__}: {line[:200]}" if line else type(err).__name__


# --------------------------------------------------------------------------- MetaSchedule helper


def ms_build(mod: Any, target: Any, _params: Any) -> Any:
    """MetaSchedule builder function that skips ``import tvm.s_tir.tensor_intrin``.

    TVM's default builder imports every tensor intrinsic (CUDA, ROCm, Hexagon,
    ...) in each fresh worker, 20-40 s of CPU per build batch on this machine,
    which makes every build time out. Schedules arrive already tensorised, so
    fp32 builds need none of them. Lives here (a module without torch) so the
    worker unpickles it cheaply.
    """
    from tvm.driver import build as tvm_build
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

    mod = RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod)
    return tvm_build(mod, target=target)
