"""pynetdicom's two reactor loops, woken by events instead of polling every millisecond.

Used for the associations we request (C-MOVE sub-associations, forwarding); we accept ours with
``upper_layer/``.

pynetdicom runs two threads per association, each looping on ``time.sleep(0.001)``: the DUL thread
(socket and state machine) and the association thread (DIMSE messages). Each C-STORE crosses both loops
a few times, so about 2 ms of every message is spent sleeping: a third of our per-instance time on one
association (benchmarks/README.md). Here the DUL thread waits in ``select()`` on its socket and on a
wake-up socket written when a PDU is queued for sending, and the association thread waits on its DIMSE
message queue. Both still wake at least every ``MAX_WAIT`` seconds, so timers and releases work as before.

pynetdicom offers no hook for this: its modules' ``time`` is replaced by a namespace whose ``sleep``
waits on events in those two threads and sleeps normally everywhere else. Plain TCP sockets only: with
TLS, bytes already decrypted may wait in the SSL object unseen by ``select()``, so TLS associations poll.
"""

from __future__ import annotations

import select
import socket
import ssl
import threading
import time
import types

from pynetdicom import association, dul

MAX_WAIT = 0.05  # DUL thread: select() wakes at once on the socket and on queued PDUs
MAX_ASSOCIATION_WAIT = 0.01  # association thread: peer releases and aborts are noticed within this
_real_sleep = time.sleep


class _WakingCheckpoint(threading.Event):
    """The reactor's pause switch. ``send_c_store``, ``release`` and the others clear it and then spin until
    the reactor says it paused: clearing (or setting) it must wake a reactor waiting for messages, or every
    such call would wait out the reactor's sleep."""

    def __init__(self, messages) -> None:
        super().__init__()
        self._messages = messages

    def _wake(self) -> None:
        with self._messages.not_empty:
            self._messages.not_empty.notify_all()

    def clear(self) -> None:
        super().clear()
        self._wake()

    def set(self) -> None:
        super().set()
        self._wake()


def _wait_dul(provider: dul.DULServiceProvider, seconds: float) -> None:
    wake = getattr(provider, "_dopamine_wake", None)
    if wake is None:
        wake = provider._dopamine_wake = socket.socketpair()
        wake[0].setblocking(False)
    sock = getattr(provider.socket, "socket", None) if provider.socket else None
    if isinstance(sock, ssl.SSLSocket) or provider.to_provider_queue.qsize():
        _real_sleep(seconds)
        return
    waitables = [wake[0]] + ([sock] if sock is not None else [])
    try:
        readable, _, _ = select.select(waitables, [], [], MAX_WAIT)
    except (OSError, ValueError):  # the socket closed under us: the reactor finds out next
        _real_sleep(seconds)
        return
    if wake[0] in readable:
        try:
            while wake[0].recv(4096):
                pass
        except BlockingIOError:
            pass


def _wait_association(assoc: association.Association, seconds: float) -> None:
    messages = assoc.dimse.msg_queue
    checkpoint = assoc._reactor_checkpoint
    with messages.not_empty:
        if not messages._qsize() and checkpoint.is_set() and not assoc._kill:
            messages.not_empty.wait(MAX_ASSOCIATION_WAIT)


def _sleep(seconds: float) -> None:
    thread = threading.current_thread()
    if isinstance(thread, dul.DULServiceProvider):
        _wait_dul(thread, seconds)
    elif isinstance(thread, association.Association) and seconds == 0.001:
        _wait_association(thread, seconds)
    else:
        _real_sleep(seconds)


def install() -> None:
    if getattr(dul, "_dopamine_wakeups", False):
        return
    clock = types.SimpleNamespace(**{name: getattr(time, name) for name in dir(time) if not name.startswith("__")})
    clock.sleep = _sleep
    association.time = clock
    dul.time = clock
    send_pdu = dul.DULServiceProvider.send_pdu

    def send_pdu_and_wake(self, primitive):
        send_pdu(self, primitive)
        wake = getattr(self, "_dopamine_wake", None)
        if wake is not None:
            try:
                wake[1].send(b"!")
            except OSError:
                pass

    run_reactor = dul.DULServiceProvider.run_reactor
    init_association = association.Association.__init__

    def init_with_waking_checkpoint(self, *args, **kwargs):
        init_association(self, *args, **kwargs)
        # Replaced before the association's threads start, so no pause request can be lost.
        waking = _WakingCheckpoint(self.dimse.msg_queue)
        if self._reactor_checkpoint.is_set():
            threading.Event.set(waking)
        self._reactor_checkpoint = waking

    def run_reactor_then_close(self):
        try:
            run_reactor(self)
        finally:
            for end in getattr(self, "_dopamine_wake", ()):
                end.close()

    dul.DULServiceProvider.send_pdu = send_pdu_and_wake
    dul.DULServiceProvider.run_reactor = run_reactor_then_close
    association.Association.__init__ = init_with_waking_checkpoint
    dul._dopamine_wakeups = True
