"""Training that survives interruption: recipes as configs, atomic checkpoints, exact resume.

    from minicnn.train import TrainConfig, train, resume, evaluate_checkpoint
    config = TrainConfig.from_spec(get_spec("cnn4"), epochs=2, limit=512)
    result = train(config)                     # writes runs/cnn4-<time>/ and returns a TrainResult
    result = resume(result.run_dir, epochs=4)  # continues exactly where the run stopped
"""
from minicnn.train.checkpoint import Checkpoint, find_checkpoint, load_checkpoint, save_checkpoint
from minicnn.train.config import TrainConfig
from minicnn.train.errors import CheckpointError, DivergedError, TrainError
from minicnn.train.evaluate import Evaluation, evaluate, evaluate_checkpoint, predict_image
from minicnn.train.loop import TrainResult, resume, train
from minicnn.train.reproduce import reproduce

__all__ = ["TrainConfig", "train", "resume", "TrainResult", "Checkpoint", "save_checkpoint",
           "load_checkpoint", "find_checkpoint", "evaluate", "Evaluation", "evaluate_checkpoint",
           "predict_image", "reproduce", "TrainError", "CheckpointError", "DivergedError"]
