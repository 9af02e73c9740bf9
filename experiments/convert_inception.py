r"""Converts pytorch-fid's FID Inception weights (.pth) to the .npz that kale_jax loads.

    python -m experiments.convert_inception \
        --src=pt_inception-2015-12-05-6726825d.pth \
        --out=third_party/inception/pt_inception-2015-12-05.npz

Where the .pth comes from and its licence: third_party/inception/README.md. This is the only
place in the project that imports torch (install it just for this command, e.g.
`pip install torch`); the file is read with torch.load(weights_only=True), which refuses pickled
code, and nothing is downloaded.
"""
from absl import app, flags

from experiments import cli
from kale_jax.errors import DataError

FLAGS = flags.FLAGS


def _define_flags() -> None:
    """Defined only when run as a binary: tests import `convert` beside other binaries' flags."""
    flags.DEFINE_string("src", None, "pytorch-fid's pt_inception-2015-12-05-6726825d.pth")
    flags.DEFINE_string("out", None,
                        "Output .npz, e.g. third_party/inception/pt_inception-2015-12-05.npz")
    flags.mark_flags_as_required(["src", "out"])


def convert(src: str, out: str) -> int:
    """Reads the torch state dict at `src`, writes the checked Flax variables to `out`.

    Returns the number of arrays written. Raises DataError for a missing or foreign file.
    """
    import os  # pylint: disable=g-import-not-at-top
    try:
        import torch  # pylint: disable=g-import-not-at-top
    except ImportError:
        raise DataError("experiments.convert_inception needs torch (only for this conversion): "
                        "pip install torch") from None
    from kale_jax.metrics import inception  # pylint: disable=g-import-not-at-top
    if not os.path.isfile(src):
        raise DataError(f"--src={src} not found; download pt_inception-2015-12-05-6726825d.pth "
                        "as described in third_party/inception/README.md")
    try:
        state = torch.load(src, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for foreign or unsafe files
        raise DataError(f"--src={src} could not be read as a torch state dict with "
                        f"weights_only=True ({type(error).__name__}: "
                        f"{str(error).splitlines()[0] if str(error) else ''})") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise DataError(f"--src={src} holds a {type(state).__name__}, not a state dict")
    arrays = {k: v.detach().cpu().numpy() for k, v in state.items() if hasattr(v, "detach")}
    flat = inception.from_torch_state_dict(arrays, source=src)
    inception.save_variables(out, flat)
    return len(flat)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    count = convert(FLAGS.src, FLAGS.out)
    print(f"wrote {count} arrays to {FLAGS.out}")


if __name__ == "__main__":
    _define_flags()
    cli.run(main)
