"""cmir_tf.model.distribute: how batches reach the replicas' devices (device prefetch)."""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from cmir_tf.errors import ConfigError
from cmir_tf.model.distribute import input_options

REPO = Path(__file__).resolve().parents[1]


def test_input_options_prefetch_onto_the_devices_unless_zero():
    options = input_options(3)
    assert options.experimental_fetch_to_device and options.experimental_per_replica_buffer_size == 3
    assert not input_options(0).experimental_fetch_to_device
    with pytest.raises(ConfigError, match="device prefetch must be ≥ 0 batches, got -1"):
        input_options(-1)


_PLACEMENT_SCRIPT = textwrap.dedent(
    """
    import json
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from cmir_tf.model.distribute import input_options

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])

    def dataset_fn(ctx):
        batch = ctx.get_per_replica_batch_size(4)
        return tf.data.Dataset.range(16).batch(batch, drop_remainder=True)

    placed = {}
    for prefetch in (2, 0):
        dist = strategy.distribute_datasets_from_function(dataset_fn, input_options(prefetch))
        first = next(iter(dist))
        placed[prefetch] = [v.device for v in strategy.experimental_local_results(first)]
    print(json.dumps(placed))
    """
)


@pytest.mark.slow
def test_batches_are_prefetched_onto_each_replicas_device():
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="2")
    out = subprocess.run([sys.executable, "-c", _PLACEMENT_SCRIPT], capture_output=True, text=True, env=env,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    placed = json.loads(out.stdout.strip().splitlines()[-1])
    assert [d.rsplit("/", 1)[-1] for d in placed["2"]] == ["device:CPU:0", "device:CPU:1"]
    assert all(d.endswith("device:CPU:0") for d in placed["0"])  # kept in host memory
