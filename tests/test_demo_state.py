"""Every transition of the demonstrator's state machine."""

import pytest

from demo_app.state import Action, DemoStateMachine
from device.inputs import Event


def _idle(init_frames=0, classes=4):
    machine = DemoStateMachine(classes, init_frames)
    machine.restarted()
    if init_frames:
        machine.init_done()
    return machine


def test_start_up_goes_reset_init_idle():
    machine = DemoStateMachine(4, init_frames=5)
    assert machine.state == "reset"
    machine.restarted()
    assert machine.state == "init"
    assert machine.handle(Event("shot"), ready=False) == []  # ignored while measuring
    machine.init_done()
    assert machine.state == "idle"
    assert machine.history == ["reset", "init", "idle"]


def test_without_background_frames_start_up_skips_init():
    machine = DemoStateMachine(4, init_frames=0)
    machine.restarted()
    assert machine.history == ["reset", "idle"]


def test_a_restored_memory_skips_the_base_mean():
    machine = DemoStateMachine(4, init_frames=5)
    machine.restarted(measure_base=False)
    assert machine.history == ["reset", "idle"]


def test_shot_registers_the_current_class():
    machine = _idle()
    assert machine.handle(Event("shot"), ready=False) == [Action("shot", 0)]
    assert machine.state == "registration"
    assert machine.handle(Event("shot"), ready=True) == [Action("shot", 0)]


def test_next_moves_to_the_next_class_and_shoots_wrapping_around():
    machine = _idle(classes=3)
    assert [machine.handle(Event("next"), True) for _ in range(3)] == [
        [Action("shot", 1)], [Action("shot", 2)], [Action("shot", 0)]]


def test_keys_register_a_given_class():
    machine = _idle()
    assert machine.handle(Event("register", 3), ready=False) == [Action("shot", 3)]
    assert machine.current == 3 and machine.state == "registration"
    assert machine.handle(Event("register", 7), ready=True) == []
    assert "class 8 does not exist" in machine.message


def test_inference_needs_a_registered_class():
    machine = _idle()
    assert machine.handle(Event("infer"), ready=False) == []
    assert machine.state == "idle" and "no class has a shot yet" in machine.message
    machine.handle(Event("shot"), ready=False)
    machine.handle(Event("infer"), ready=True)
    assert machine.state == "inference" and machine.message == ""


def test_a_shot_during_inference_goes_back_to_registration():
    machine = _idle()
    machine.handle(Event("shot"), False)
    machine.handle(Event("infer"), True)
    assert machine.handle(Event("next"), True) == [Action("shot", 1)]
    assert machine.state == "registration"


@pytest.mark.parametrize("start", ["idle", "registration", "inference"])
def test_pause_returns_to_where_it_was_and_ignores_other_buttons(start):
    machine = _idle()
    if start != "idle":
        machine.handle(Event("shot"), False)
    if start == "inference":
        machine.handle(Event("infer"), True)
    machine.handle(Event("pause"), True)
    assert machine.state == "pause"
    assert machine.handle(Event("shot"), True) == [] and "paused" in machine.message
    machine.handle(Event("pause"), True)
    assert machine.state == start


@pytest.mark.parametrize("state", ["idle", "registration", "inference", "pause", "error", "init"])
def test_reset_and_quit_work_everywhere(state):
    machine = DemoStateMachine(4, 3)
    machine.restarted()
    if state != "init":
        machine.init_done()
    if state in ("registration", "inference"):
        machine.handle(Event("shot"), False)
    if state == "inference":
        machine.handle(Event("infer"), True)
    if state == "pause":
        machine.handle(Event("pause"), True)
    if state == "error":
        machine.camera_failed("camera 0 stopped")
    assert machine.state == state
    assert machine.handle(Event("reset"), True) == [Action("restart")]
    assert machine.state == "reset"
    assert machine.handle(Event("quit"), True) == [Action("quit")]
    assert machine.state == "quit"


def test_camera_failure_shows_the_error_until_reset():
    machine = _idle()
    machine.handle(Event("shot"), False)
    machine.camera_failed("camera lost: camera 0 stopped delivering frames")
    assert machine.state == "error" and "camera 0" in machine.message
    for kind in ("shot", "next", "infer", "pause"):
        assert machine.handle(Event(kind), True) == []
    assert machine.state == "error" and "press reset" in machine.message
    machine.handle(Event("reset"), True)
    machine.restarted()
    assert machine.state == "idle" and machine.current == 0 and machine.message == ""


def test_wrong_order_of_app_calls_is_a_runtime_error():
    machine = _idle()
    with pytest.raises(RuntimeError, match="restarted\\(\\) outside the reset state"):
        machine.restarted()
    with pytest.raises(RuntimeError, match="init_done\\(\\) outside the init state"):
        machine.init_done()


def test_no_event_changes_nothing():
    machine = _idle()
    assert machine.handle(None, True) == [] and machine.handle(Event("wait"), True) == []
    assert machine.state == "idle"
