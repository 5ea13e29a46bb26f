"""The world's task types, one :class:`~.base.TaskType` entry each: how its prompt is made, its gold
answer and how the judge scores a response to it.

Grouped by what a response is judged against:

* :mod:`.open_domain`: the world's facts (describe a land, a story, open QA, chat);
* :mod:`.closed_domain`: the prompt's own input (summarize, closed QA, polite rewrite, extract);
* :mod:`.short_answers`: a reference set, label, number, translation or lexicon (brainstorm,
  classify, arithmetic, translate, polite continuation).

The registry, in InstructGPT Table 1's order, is :data:`instructrl.world.tasks.TASKS`.
"""
