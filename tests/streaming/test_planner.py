import numpy as np

from streaming.generator import WindowSpec
from streaming.planner import Decision, PlannerInput, PlannerSettings, WindowPlanner, has_voice

SPEC = WindowSpec(new_frames=5, lookahead_frames=2)  # 0.2 s windows, 2 frames of look-ahead


def decide(fill, ahead, prev=False, ended=False, realtime=True, compute=0.05, wait=0.0, cut=False):
    planner = WindowPlanner(SPEC, PlannerSettings(margin_s=0.1, realtime=realtime))
    return planner.decide(PlannerInput(fill, ahead, compute, prev, wait, ended, can_cut_idle=cut))


def test_full_window_plus_lookahead_makes_a_speech_window():
    need = 7 * 640
    assert decide(need, 0.3) is Decision.SPEECH
    assert decide(need - 1, 0.3) is Decision.WAIT


def test_deadline_makes_an_idle_window_when_nobody_speaks():
    assert decide(0, 0.5) is Decision.WAIT
    assert decide(0, 0.15) is Decision.IDLE  # 0.15 <= compute 0.05 + margin 0.1


def test_speech_that_just_started_waits_for_a_full_window_but_a_running_utterance_is_flushed():
    assert decide(1000, 0.1, prev=False) is Decision.IDLE
    assert decide(1000, 0.1, prev=True) is Decision.FLUSH
    assert decide(1000, 0.1, prev=False, wait=0.2) is Decision.FLUSH  # the client stopped sending


def test_with_idle_cut_speech_after_idle_waits_for_its_look_ahead_unless_the_client_stopped():
    # A window (0.2 s) waited, but not the window + look-ahead (0.28 s) + margin: idle meanwhile,
    # the queued idle frames are cut when the full speech window runs.
    assert decide(1000, 0.1, prev=False, wait=0.2, cut=True) is Decision.IDLE
    assert decide(7 * 640, 0.1, prev=False, wait=0.28, cut=True) is Decision.SPEECH
    assert decide(1000, 0.1, prev=False, wait=0.39, cut=True) is Decision.FLUSH  # the client stopped sending
    assert decide(1000, 0.1, prev=True, cut=True) is Decision.FLUSH  # mid-utterance as before
    assert decide(1000, 0.1, ended=True, cut=True) is Decision.FLUSH


def test_never_more_than_max_ahead_of_playout():
    planner = WindowPlanner(SPEC, PlannerSettings(margin_s=0.1))
    assert planner.max_ahead_s == 0.5
    assert decide(10**6, 0.5) is Decision.WAIT


def test_offline_has_no_idle_windows_and_flushes_the_tail_at_end_of_input():
    assert decide(0, 0.0, realtime=False) is Decision.WAIT
    assert decide(100, 0.0, realtime=False) is Decision.WAIT
    assert decide(100, 0.0, ended=True, realtime=False) is Decision.FLUSH


def test_energy_vad():
    quiet = np.zeros(3200, np.float32)
    assert not has_voice(quiet, -45, 640)
    loud = quiet.copy()
    loud[1000:1400] = 0.1
    assert has_voice(loud, -45, 640)
    assert has_voice(np.stack([quiet, loud]), -45, 640)


def test_a_window_a_few_samples_short_waits_for_a_client_still_sending_instead_of_padding_silence():
    # Issue 13: at 48 kHz a real-time client's buffer sits 16 samples (the resampler's delay) short of
    # each message boundary, so a message a few ms late left 16 samples missing at the deadline and
    # the window was padded: silence inside the input. The margin is there for such jitter.
    planner = WindowPlanner(SPEC, PlannerSettings(margin_s=0.1))
    short = SPEC.window_samples - 16

    def mid(ahead, idle):
        return planner.decide(PlannerInput(short, ahead, 0.05, True, 0.2, input_idle_s=idle))

    assert mid(0.15, idle=0.005) is Decision.WAIT  # past the deadline, but the rest is on its way
    assert 0 < planner.wait_s(PlannerInput(short, 0.15, 0.05, True, input_idle_s=0.005)) <= 0.095
    assert mid(0.15, idle=0.1) is Decision.FLUSH  # nothing for a whole margin: the client stopped
    assert mid(0.05, idle=0.005) is Decision.FLUSH  # margin spent: pad rather than run dry
    full = PlannerInput(SPEC.window_samples, 0.15, 0.05, True, input_idle_s=0.005)
    assert planner.decide(full) is Decision.FLUSH  # a whole window is there: no padding, no wait
    onset = PlannerInput(short, 0.15, 0.05, False, oldest_wait_s=0.2, input_idle_s=0.005)
    assert planner.decide(onset) is Decision.WAIT  # the same at the start of an utterance
