"""The memory planner (``instructrl plan``): per-GPU memory of a stage, by part, from a model's config alone.

* :mod:`.arch` reads a ``config.json`` (local folder, file or Hub id; no weights) into the shapes that set
  the memory: parameters by module, layers, heads, vocabulary.
* :mod:`.estimate` turns shapes, a stage, an engine and the levers into bytes per GPU, part by part.
* :mod:`.search` walks the levers in a documented cost order and returns the cheapest setting that fits.

Pure Python: neither torch nor transformers is imported, so a plan runs anywhere, instantly.
"""
