"""device: what runs on a board (or a laptop standing in for one).

Modules, imported on demand so a board loads only what it uses:
- `backends`: backbone backends (onnxruntime, opencv, tensil, tensil-emu, torch, auto) by
  name, `create_backbone`;
- `model_card`: the model card contract; `preprocess`: frame -> backbone input;
- `ncm`: the few-shot classifier (EASY preprocessing, NCM / kNN), shared with the benchmark;
- `memory`: few-shot memory over it, save/load;
- `camera`, `display`, `inputs`: cameras, HDMI/window/headless outputs, buttons/keys/scripts;
- `board`: lazy access to pynq (the Tensil driver is `tensil.driver`);
- `doctor`: `python -m device doctor`, the board's (or laptop's) readiness checklist;
- `fl`: the federated-learning client (`python -m device fl`).
"""

__all__: list = []
