"""Training GEBMs with KALE: state, steps, device parallelism, checkpoints, train_and_evaluate.

    from kale_jax.train import train_and_evaluate
    train_and_evaluate(config, workdir)   # configs/*.py get_config(); resumes from workdir

Modules: state (TrainState), steps (per-device energy/base steps), parallel (shard_map / pmap),
schedule (n_critic rule), optim (optax), models (networks from a config), evaluate, outputs
(metrics.jsonl, TensorBoard, pictures), validate (config checks), loop (train_and_evaluate),
ebm_loop (train_ebm: the energy-only EBM baseline, config.train.criterion='ebm'; also reached
through train_and_evaluate).
"""
from kale_jax.train.loop import Trainer, train_and_evaluate
from kale_jax.train.state import TrainState

__all__ = ["TrainState", "Trainer", "train_and_evaluate"]
