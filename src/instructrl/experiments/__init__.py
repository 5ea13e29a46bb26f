"""Experiments on the miniature world, built on the toolkit: the pipeline of cached stages, ``demo``,
``reproduce``, the ``world`` command and the regeneration of the world's base models; and the ``eval``
command, which joins evaluation and the labeling app for evaluations judged by people.

This layer sits above every stage package; no stage, and nothing in ``instructrl.world``, imports it
(the import contract in ``pyproject.toml`` enforces that).
"""
