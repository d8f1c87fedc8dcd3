"""What state a session is in, as the viewer sees it, and the events that move it.

    starting -> idle <-> speaking;  idle | speaking | interrupted -> interrupted -> idle | speaking;
    starting | idle | speaking | interrupted -> closing -> closed;  starting -> closed (start failed)

Speaking and idle follow the frames the pacer plays (not the audio buffered), so the state matches
the picture. The table below is the whole machine: a move it does not allow is a bug and raises.
It lives on the transport side of a session, with the listeners (the server's transports).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from .session_settings import SessionState

log = logging.getLogger(__name__)

S = SessionState
TRANSITIONS: dict[SessionState, frozenset[SessionState]] = {
    S.STARTING: frozenset({S.IDLE, S.CLOSING, S.CLOSED}),
    S.IDLE: frozenset({S.SPEAKING, S.INTERRUPTED, S.CLOSING}),
    S.SPEAKING: frozenset({S.IDLE, S.INTERRUPTED, S.CLOSING}),
    S.INTERRUPTED: frozenset({S.IDLE, S.SPEAKING, S.CLOSING}),
    S.CLOSING: frozenset({S.CLOSED}),
    S.CLOSED: frozenset(),
}


class SessionStateMachine:
    """The state, its listeners, and one method per event (see the module docstring)."""

    def __init__(self, session_id: str) -> None:
        self.session_id = session_id
        self.state = SessionState.STARTING
        self._listeners: list[Callable[[SessionState], None]] = []

    @property
    def live(self) -> bool:
        """Not closing or closed: audio is taken, frames are made and played."""
        return self.state not in (S.CLOSING, S.CLOSED)

    def add_listener(self, fn: Callable[[SessionState], None]) -> None:
        """`fn(state)` is called (on the event loop) at each state change."""
        self._listeners.append(fn)

    def started(self) -> None:
        self._move(S.IDLE)

    def start_failed(self) -> None:
        self._move(S.CLOSED)

    def interrupted(self) -> None:
        self._move(S.INTERRUPTED)

    def frame_played(self, speech: bool) -> None:
        """A made frame was played: a speech frame means speaking; an idle one ends speaking or an interrupt."""
        if speech:
            self._move(S.SPEAKING)
        elif self.state in (S.SPEAKING, S.INTERRUPTED):
            self._move(S.IDLE)

    def closing(self) -> None:
        self._move(S.CLOSING)

    def closed(self) -> None:
        self._move(S.CLOSED)

    def _move(self, state: SessionState) -> None:
        if state == self.state:
            return
        if state not in TRANSITIONS[self.state]:
            raise RuntimeError(f"session {self.session_id}: no transition {self.state.value} -> {state.value}")
        self.state = state
        for fn in list(self._listeners):
            try:
                fn(state)
            except Exception:  # noqa: BLE001 - a listener must not break the session
                log.exception("session %s: state listener failed", self.session_id)
