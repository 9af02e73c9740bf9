"""A GEBM on the 5 x 5 grid of Gaussians (2-D), the mode-collapse benchmark of VEEGAN / PacGAN.

    python -m experiments.train --config=configs/grid.py --workdir=workdirs/grid

Same settings as configs/ring.py (evaluation adds mode statistics and scatter plots); the grid's
25 modes want a little more capacity in the base and more steps. The recipe of ring.py, with the
refinement phase after 30,000 joint steps (the refinement weight was chosen on the ring, not
tuned on the grid).
"""
import ml_collections

from configs import ring


def get_config() -> ml_collections.ConfigDict:
    config = ring.get_config()  # ring.py imports default.py
    config.data.name = "grid"
    config.model.generator_kwargs.hidden = 256
    config.train.num_steps = 31000
    config.train.refine_from = 30000
    return config
