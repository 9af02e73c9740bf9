"""kale_jax.train.parallel helpers not covered by the training tests (tests/test_train.py runs
DataParallel on 1 and 4 devices; tests/test_multihost.py on two processes)."""
import jax

from kale_jax.train import parallel


def test_fingerprint_tells_states_apart():
    tree = {"a": jax.numpy.arange(3.0), "b": jax.numpy.ones((2, 2), jax.numpy.int32)}
    same = {"a": jax.numpy.arange(3.0), "b": jax.numpy.ones((2, 2), jax.numpy.int32)}
    assert parallel.fingerprint(tree) == parallel.fingerprint(same)
    nudged = dict(tree, a=tree["a"].at[1].set(jax.numpy.nextafter(1.0, 2.0)))  # one ulp
    assert parallel.fingerprint(nudged) != parallel.fingerprint(tree)
    reshaped = dict(tree, b=tree["b"].reshape(4))  # same bytes, other shape
    assert parallel.fingerprint(reshaped) != parallel.fingerprint(tree)
