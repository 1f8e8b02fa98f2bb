"""Checkpointer: state and data-iterator round trip, latest-N retention, best-only-if-better."""

import grain
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sed_jax import checkpoint
import tests


def loader():
  sampler = grain.samplers.IndexSampler(num_records=50, shuffle=True, seed=0, num_epochs=None)
  return grain.DataLoader(data_source=list(range(50)), sampler=sampler,
                          operations=[grain.transforms.Batch(4)])


def abstract(state):
  return jax.eval_shape(lambda: state)


def test_state_and_iterator_round_trip(tmp_path):
  ckpt = checkpoint.Checkpointer(tmp_path, keep=2)
  it = iter(loader())
  for _ in range(5):
    next(it)
  state = {"w": jnp.arange(6.0).reshape(2, 3), "step": jnp.array(5)}
  ckpt.save(5, state, it)
  expected = [next(it).tolist() for _ in range(3)]
  ckpt.wait()
  fresh = iter(loader())
  restored = ckpt.restore(abstract(state), fresh)
  np.testing.assert_array_equal(restored["w"], state["w"])
  assert [next(fresh).tolist() for _ in range(3)] == expected
  ckpt.close()


def test_keeps_the_latest_n(tmp_path):
  ckpt = checkpoint.Checkpointer(tmp_path, keep=2, async_save=False)
  for step in (1, 2, 3):
    ckpt.save(step, {"x": jnp.array(float(step))})
  ckpt.wait()
  assert sorted(ckpt.latest.all_steps()) == [2, 3] and ckpt.latest_step() == 3
  ckpt.close()


def test_best_is_replaced_only_by_a_better_score(tmp_path):
  ckpt = checkpoint.Checkpointer(tmp_path)
  assert ckpt.best_score() is None
  with pytest.raises(FileNotFoundError):
    ckpt.restore_best(abstract({"x": jnp.array(0.0)}))
  assert ckpt.save_best(1, {"x": jnp.array(1.0)}, 0.5)
  assert not ckpt.save_best(2, {"x": jnp.array(2.0)}, 0.4)
  assert ckpt.save_best(3, {"x": jnp.array(3.0)}, 0.7)
  ckpt.wait()
  assert ckpt.best_score() == pytest.approx(0.7)
  assert float(ckpt.restore_best(abstract({"x": jnp.array(0.0)}))["x"]) == 3.0
  # A new Checkpointer on the same workdir (a resumed run) knows the best score.
  ckpt.close()
  again = checkpoint.Checkpointer(tmp_path)
  assert again.best_score() == pytest.approx(0.7)
  assert not again.save_best(4, {"x": jnp.array(4.0)}, 0.6)
  again.close()


SAVE_ON_TWO_DEVICES = """
import sys
import jax, jax.numpy as jnp
from sed_jax import checkpoint, sharding
repl = sharding.replicated(sharding.make_mesh())
state = {"params": {"w": jax.device_put(jnp.arange(6.0).reshape(2, 3), repl)},
         "step": jax.device_put(jnp.int32(3), repl)}
ckpt = checkpoint.Checkpointer(sys.argv[1])
ckpt.save(3, state)
ckpt.save_best(3, state, 0.5)
ckpt.close()
"""


def test_a_checkpoint_saved_on_other_devices_restores_onto_this_one(tmp_path):
  """A run's checkpoint names the devices of the mesh that saved it (here 2 host devices of
  another process, as a pod slice's would); inference restores it onto the one device at hand
  instead of failing with orbax's 'Topology mismatch'."""
  import os  # pylint: disable=g-import-not-at-top
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS=tests.xla_flags("--xla_force_host_platform_device_count=2"))
  out = subprocess.run([sys.executable, "-c", SAVE_ON_TWO_DEVICES, str(tmp_path)], env=env,
                       capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  ckpt = checkpoint.Checkpointer(tmp_path)
  for state in (ckpt.restore(None), ckpt.restore_best(None)):
    np.testing.assert_array_equal(state["params"]["w"], np.arange(6.0).reshape(2, 3))
    assert int(state["step"]) == 3
    assert state["params"]["w"].sharding == jax.sharding.SingleDeviceSharding(jax.devices()[0])
  ckpt.close()
