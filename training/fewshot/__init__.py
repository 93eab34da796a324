"""Few-shot learning: PEFSL backbones, EASY training, episode evaluation, ONNX export.

Command line: ``python -m training.fewshot {train,eval,export,describe,dse} --help``.
"""
