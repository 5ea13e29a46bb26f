"""The miniature world: a synthetic universe in which the whole InstructGPT method runs on a CPU.

Public API (see docs/world.md):

* :func:`get_kb` - the knowledge base of a seed; :func:`generate_corpus` - pretraining documents;
* :func:`make_prompt` / :func:`build` - prompt records and every dataset file;
* :func:`score` - the noiseless criteria of a response; :func:`make_pool` - simulated labelers
  (``.training``, ``.heldout``, ``.reference``; each has ``demonstrate``, ``likert``, ``rank``,
  ``compare``, ``utility``);
* :func:`base_model_path` - a shipped base model; :func:`run_benchmarks` - the alignment-tax
  benchmarks; :func:`measure_model` - benchmarks plus instruction-following success.

Heavy dependencies (torch, transformers) are imported only by the functions that need them.
"""

from instructrl.world.base_models import SIZES, base_model_path
from instructrl.world.benchmarks import BENCHMARKS, benchmark_items, flan_dataset, run_benchmarks
from instructrl.world.build import build
from instructrl.world.corpus import generate_corpus
from instructrl.world.judge import score
from instructrl.world.kb import KnowledgeBase, Land, get_kb
from instructrl.world.labelers import Labeler, LabelerPool, Likert, make_pool, measure_agreement, reference_judge
from instructrl.world.measure import measure_model
from instructrl.world.tasks import CATEGORY_SHARES, Style, demonstrate, make_prompt

__all__ = [
    "BENCHMARKS",
    "CATEGORY_SHARES",
    "SIZES",
    "KnowledgeBase",
    "Labeler",
    "LabelerPool",
    "Land",
    "Likert",
    "Style",
    "base_model_path",
    "benchmark_items",
    "build",
    "demonstrate",
    "flan_dataset",
    "generate_corpus",
    "get_kb",
    "make_pool",
    "make_prompt",
    "measure_agreement",
    "measure_model",
    "reference_judge",
    "run_benchmarks",
    "score",
]
