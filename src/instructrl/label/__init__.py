"""The labeling web app: labelers write demonstrations and rate and rank model outputs.

InstructGPT §3.4 and App. B: labelers write demonstrations for prompts, then for each prompt rate K
model outputs (Likert 1-7 plus metadata flags, Table 3) and rank them, ties allowed. This package
stores that work in a SQL database (SQLite or PostgreSQL), serves it as a small web app, and exports
it in the formats the SFT and reward-model stages read.

The modules form layers, top to bottom; each imports only from layers below its own, and the modules
of one layer (separated by ``|``) do not import each other:

    cli
    commands
    app
    api | pages
    web
    service | sampling
    agreement | db | labels | models | security | settings

``cli`` (the ``instructrl label`` parser), ``commands`` (what each subcommand does; ``serve`` names
``app:app_from_env`` for uvicorn), ``app`` (the FastAPI app: the request-size limit, headers, error
mapping, routers), ``api`` (the JSON API), ``pages`` (server-rendered pages), ``web`` (what both share:
who is calling, rate limits, CSRF, the request's transaction, rendering), ``service`` (every operation,
one transaction each), ``sampling`` (K outputs from a checkpoint), ``agreement``, ``db`` (engines,
sessions, migrations), ``labels`` (the Likert scale, the flags, rank normalization), ``models`` (tables),
``security`` (tokens, sessions, CSRF, names, ids, the rate limiter, safe paths) and ``settings`` (the
defaults and limits, and the flags ``serve`` hands to its workers).
"""
