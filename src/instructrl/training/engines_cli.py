"""`instructrl engines`: the shipped accelerate launch configs, one per engine, and where each file is."""

from __future__ import annotations

from instructrl.training.engines import accelerate_config, shipped_configs


def configure(parser) -> None:
    parser.add_argument("--path", metavar="NAME", help="Print only the path of the shipped config NAME.")
    parser.epilog = (
        "Example: accelerate launch --config_file $(instructrl engines --path fsdp2) --num_processes 8 "
        "-m instructrl ppo ...   (on a CPU: torchrun --nproc_per_node N -m instructrl ppo ... --engine fsdp2; "
        "zero2, zero3 and zero3-offload need pip install 'instructrl[deepspeed]')"
    )


def main(args) -> int:
    if args.path:
        print(accelerate_config(args.path))
        return 0
    for name, path in shipped_configs().items():
        about = " ".join(
            line.removeprefix("#").strip() for line in path.read_text().splitlines() if line.startswith("# ")
        )
        about = about.split("accelerate launch")[0].removeprefix("instructrl:").strip()
        print(f"{name}\n  {path}\n  {about}")
    return 0
