"""demo_app: the few-shot camera demonstrator (state machine, UI, CLI: python -m demo_app).

The pieces: `state.DemoStateMachine` (transitions), `ui.draw_ui` (the screen),
`app.DemoApp` (the loop over camera, backbone, memory, display and inputs),
`replay.build_replay_plan` (unattended runs on labelled images), `cli.main`.
"""

__all__: list = []
