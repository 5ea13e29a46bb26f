"""--mixed-precision does what it says on the device, or stops with one line."""

import pytest
import torch

from instructrl import cli
from instructrl.errors import ConfigError
from instructrl.sft.config import SFTConfig
from instructrl.training.accelerator import make_accelerator


def test_fp16_on_a_cpu_stops_with_one_clear_line(tmp_path):
    """accelerate has no fp16 autocast on a CPU (it would run fp32 and report fp16): refuse instead."""
    with pytest.raises(ConfigError, match=r"--mixed-precision fp16 needs a CUDA GPU .*use --mixed-precision bf16"):
        make_accelerator(SFTConfig(mixed_precision="fp16", cpu=True), tmp_path / "a")
    assert make_accelerator(SFTConfig(mixed_precision="bf16", cpu=True), tmp_path / "b").mixed_precision == "bf16"
    assert make_accelerator(SFTConfig(mixed_precision="auto", cpu=True), tmp_path / "c").mixed_precision == "no"


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU-only path")
def test_fp16_on_a_cpu_from_the_command_line(tiny_model, demos_file, tmp_path, capsys):
    code = cli.main(
        ["sft", "--model", str(tiny_model), "--data", str(demos_file), "--out", str(tmp_path / "o")]
        + ["--mixed-precision", "fp16", "--max-steps", "1"]
    )
    assert code != 0
    stderr = capsys.readouterr().err
    lines = [x for x in stderr.strip().splitlines() if "needs a CUDA GPU" in x]
    assert len(lines) == 1 and "--mixed-precision fp16" in lines[0], stderr[-2000:]
    assert "Traceback" not in stderr
