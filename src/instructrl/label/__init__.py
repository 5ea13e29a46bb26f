"""The labeling web app: labelers write demonstrations and rate and rank model outputs.

InstructGPT §3.4 and App. B: labelers write demonstrations for prompts, then for each prompt rate K
model outputs (Likert 1-7 plus metadata flags, Table 3) and rank them, ties allowed. This package
stores that work in a SQL database (SQLite or PostgreSQL), serves it as a small web app, and exports
it in the formats the SFT and reward-model stages read.

Modules: ``models`` (tables), ``db`` (engines, sessions, migrations), ``labels`` (the Likert scale,
the flags, rank normalization), ``service`` (every operation, one transaction each), ``agreement``,
``sampling`` (K outputs from a checkpoint), ``security`` (tokens, sessions, CSRF), ``app`` (FastAPI
pages and JSON API) and ``cli`` (``instructrl label ...``).
"""
