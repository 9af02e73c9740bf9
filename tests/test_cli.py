"""experiments.cli: the one-CPU-device-per-core advice the binaries log."""
from experiments import cli


def test_cpu_devices_hint_names_the_setting_when_cores_are_left_idle():
    hint = cli.cpu_devices_hint("cpu", 1, 8)
    assert hint is not None and "JAX_NUM_CPU_DEVICES=8" in hint


def test_cpu_devices_hint_is_silent_on_accelerators_or_with_a_device_per_core():
    assert cli.cpu_devices_hint("gpu", 1, 8) is None
    assert cli.cpu_devices_hint("tpu", 4, 96) is None
    assert cli.cpu_devices_hint("cpu", 2, 2) is None
    assert cli.cpu_devices_hint("cpu", 4, 2) is None
    assert cli.cpu_devices_hint("cpu", 1, None) is None
