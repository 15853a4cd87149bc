"""Cross-framework parity: one IR, one set of weights, one input, every backend, every node
(inference), and N training steps (training), judged against a float64 oracle."""

from archcompiler.parity.inference import parity, train_parity
from archcompiler.parity.report import NodeDiff, ParityReport, TrainDiff, TrainingReport

__all__ = ["NodeDiff", "ParityReport", "TrainDiff", "TrainingReport", "parity", "train_parity"]
