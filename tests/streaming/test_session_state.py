"""The session state machine alone: the moves it allows, and its listeners."""

from __future__ import annotations

import pytest

from streaming.session_settings import SessionState
from streaming.session_state import SessionStateMachine

S = SessionState


def test_the_state_machine_walks_a_session_and_tells_its_listeners_each_change_once():
    m = SessionStateMachine("t")
    seen = []
    m.add_listener(seen.append)
    m.started()
    m.frame_played(speech=False)  # idle stays idle, no event
    m.frame_played(speech=True)
    m.frame_played(speech=True)
    m.interrupted()
    m.frame_played(speech=False)
    m.closing()
    assert not m.live
    m.closed()
    assert seen == [S.IDLE, S.SPEAKING, S.INTERRUPTED, S.IDLE, S.CLOSING, S.CLOSED]


def test_a_move_the_table_does_not_allow_is_refused_and_a_failing_listener_breaks_nothing():
    m = SessionStateMachine("t")
    with pytest.raises(RuntimeError, match="starting -> interrupted"):
        m.interrupted()

    def broken(state):
        raise ValueError("listener bug")

    seen = []
    m.add_listener(broken)
    m.add_listener(seen.append)
    m.start_failed()
    assert m.state is S.CLOSED and seen == [S.CLOSED]
    with pytest.raises(RuntimeError):
        m.started()  # nothing comes back from closed
