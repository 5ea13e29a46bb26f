"""Every labeling operation, each working inside one caller-provided transaction (a ``Session``).

The web app and the admin CLI both call these functions; neither touches tables directly. All
queries go through the ORM (bound parameters only).
"""

from __future__ import annotations

import json
import math
import os
import random
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, selectinload

from instructrl.errors import DataError, InstructRLError
from instructrl.label import labels as L
from instructrl.label.agreement import AgreementReport, agreement
from instructrl.label.models import (
    KINDS,
    PENDING,
    ROLES,
    SIDES,
    SUBMITTED,
    Assignment,
    ComparisonItem,
    Completion,
    Demonstration,
    Labeler,
    Prompt,
    Rating,
    Task,
    WebSession,
    utcnow,
)
from instructrl.label.security import (
    ID_MAX,
    check_name,
    check_text,
    hash_secret,
    new_csrf_token,
    new_token,
    safe_subpath,
)

SESSION_HOURS = 12
SQL_BIGINT_MAX = 2**63 - 1  # the most a LIMIT takes


class NotFound(InstructRLError):
    """The object does not exist, or belongs to someone else (the two look the same on purpose)."""


class AlreadySubmitted(InstructRLError):
    """The assignment was submitted before; the first submission is kept unchanged."""


# ---------------------------------------------------------------------------- labelers and sign-in
def create_labeler(session: Session, name: str, role: str = "labeler") -> tuple[Labeler, str]:
    """A new labeler (or admin) and its access token; only the token's hash is stored."""
    check_name(name)
    if role not in ROLES:
        raise InstructRLError(f"role {role!r}: expected one of {', '.join(ROLES)}")
    if session.scalar(select(Labeler).where(Labeler.name == name)) is not None:
        raise InstructRLError(f"labeler {name!r} already exists (use reset-token for a new token)")
    token = new_token()
    labeler = Labeler(name=name, role=role, token_hash=hash_secret(token), active=True, created_at=utcnow())
    session.add(labeler)
    session.flush()
    return labeler, token


def reset_token(session: Session, name: str) -> str:
    """Replace a labeler's token (the old one stops working; its browser sessions end)."""
    labeler = labeler_by_name(session, name)
    token = new_token()
    labeler.token_hash = hash_secret(token)
    session.execute(WebSession.__table__.delete().where(WebSession.labeler_id == labeler.id))
    return token


def set_active(session: Session, name: str, active: bool) -> Labeler:
    labeler = labeler_by_name(session, name)
    labeler.active = active
    if not active:
        session.execute(WebSession.__table__.delete().where(WebSession.labeler_id == labeler.id))
    return labeler


def labeler_by_name(session: Session, name: str) -> Labeler:
    labeler = session.scalar(select(Labeler).where(Labeler.name == check_name(name)))
    if labeler is None:
        raise InstructRLError(f"no labeler named {name!r}")
    return labeler


def authenticate(session: Session, token: str | None) -> Labeler | None:
    """The active labeler holding ``token``, or None."""
    if not token:
        return None
    labeler = session.scalar(select(Labeler).where(Labeler.token_hash == hash_secret(token.strip())))
    return labeler if labeler is not None and labeler.active else None


def open_web_session(session: Session, labeler: Labeler) -> tuple[str, str]:
    """(cookie key, CSRF token) for a new browser session."""
    key = new_token()
    csrf = new_csrf_token()
    now = utcnow()
    session.add(
        WebSession(
            key_hash=hash_secret(key),
            labeler_id=labeler.id,
            csrf_token=csrf,
            created_at=now,
            expires_at=now + timedelta(hours=SESSION_HOURS),
        )
    )
    session.execute(WebSession.__table__.delete().where(WebSession.expires_at < now))  # housekeeping
    return key, csrf


def find_web_session(session: Session, key: str | None) -> WebSession | None:
    if not key:
        return None
    ws = session.scalar(
        select(WebSession).options(selectinload(WebSession.labeler)).where(WebSession.key_hash == hash_secret(key))
    )
    if ws is None or ws.expires_at < utcnow() or not ws.labeler.active:
        return None
    return ws


def close_web_session(session: Session, key: str | None) -> None:
    if key:
        session.execute(WebSession.__table__.delete().where(WebSession.key_hash == hash_secret(key)))


# ---------------------------------------------------------------------------- prompts and tasks
_PROMPT_FIELDS = {"prompt", "user", "category", "completions"}
_SHORT_FIELDS = {"user": 128, "category": 64}  # their column widths
SOURCE_MAX = 512  # Task.source's column width


def _check_field(value: str, what: str, max_chars: int | None = None) -> None:
    try:
        check_text(value, what, max_chars)
    except InstructRLError as e:
        raise DataError(str(e)) from None


@dataclass
class PromptLine:
    prompt: str
    user: str | None
    category: str | None
    completions: list[str] | None


def parse_prompt_file(path: str | Path) -> list[PromptLine]:
    """Read a prompts JSONL file; any malformed line raises DataError naming the file and line."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: no such file")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{p}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    return parse_prompt_text(text, str(p))


def parse_prompt_text(text: str, name: str) -> list[PromptLine]:
    """Parse JSONL text; errors name ``name:line``."""
    out = [
        parse_prompt_line(line, f"{name}:{lineno}") for lineno, line in enumerate(text.splitlines(), 1) if line.strip()
    ]
    if not out:
        raise DataError(f"{name}: holds no prompts (expected one JSON object per line)")
    return out


def parse_prompt_line(line: str, where: str) -> PromptLine:
    try:
        rec = json.loads(line)
    except json.JSONDecodeError as e:
        raise DataError(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from None
    except RecursionError:
        raise DataError(f"{where}: JSON nested too deeply") from None
    if not isinstance(rec, dict):
        raise DataError(f'{where}: expected a JSON object like {{"prompt": "..."}}, got {type(rec).__name__}')
    if "prompt" not in rec:
        raise DataError(f"{where}: missing field 'prompt'; fields found: {', '.join(sorted(rec)) or 'none'}")
    unknown = sorted(set(rec) - _PROMPT_FIELDS)
    if unknown:
        raise DataError(f"{where}: unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(_PROMPT_FIELDS))}")
    prompt = rec["prompt"]
    if not isinstance(prompt, str) or not prompt.strip():
        raise DataError(f"{where}: 'prompt' must be a non-empty string")
    _check_field(prompt, f"{where}: 'prompt'")
    for key, max_chars in _SHORT_FIELDS.items():
        if rec.get(key) is not None:
            if not isinstance(rec[key], str):
                raise DataError(f"{where}: '{key}' must be a string, got {type(rec[key]).__name__}")
            _check_field(rec[key], f"{where}: '{key}'", max_chars)
    comps = rec.get("completions")
    if comps is not None:
        if not isinstance(comps, list) or not all(isinstance(c, str) for c in comps):
            raise DataError(f"{where}: 'completions' must be a list of strings")
        for i, c in enumerate(comps):
            _check_field(c, f"{where}: 'completions'[{i}]")
        if not L.K_MIN <= len(comps) <= L.K_MAX:
            raise DataError(
                f"{where}: 'completions' holds {len(comps)} outputs; a ranking needs "
                f"{L.K_MIN}-{L.K_MAX} (InstructGPT ranks K = 4..9)"
            )
    return PromptLine(prompt, rec.get("user"), rec.get("category"), comps)


@dataclass
class ImportResult:
    prompts: int = 0
    demonstration_tasks: int = 0
    ranking_tasks: int = 0


def import_prompts(
    session: Session,
    lines: Sequence[PromptLine],
    *,
    tag: str | None = None,
    demonstrations: bool = True,
    source: str | None = None,
) -> ImportResult:
    """Store prompts; queue a demonstration task per prompt (if asked) and a ranking task per line
    that brings its own completions."""
    if tag is not None:
        check_name(tag, "tag")
    result = ImportResult()
    for line in lines:
        prompt = Prompt(text=line.prompt, user=line.user, category=line.category, tag=tag, created_at=utcnow())
        session.add(prompt)
        session.flush()
        result.prompts += 1
        if demonstrations:
            session.add(Task(kind="demonstration", prompt_id=prompt.id, source=None, created_at=utcnow()))
            result.demonstration_tasks += 1
        if line.completions:
            add_ranking_task(session, prompt, line.completions, source=source)
            result.ranking_tasks += 1
    return result


def add_ranking_task(session: Session, prompt: Prompt, completions: Sequence[str], source: str | None) -> Task:
    if not L.K_MIN <= len(completions) <= L.K_MAX:
        raise InstructRLError(f"a ranking task needs {L.K_MIN}-{L.K_MAX} outputs, got {len(completions)}")
    if source is not None:
        check_text(source, "source (file or checkpoint name)", SOURCE_MAX)
    task = Task(kind="ranking", prompt_id=prompt.id, source=source, created_at=utcnow())
    session.add(task)
    session.flush()
    for i, text in enumerate(completions):
        session.add(Completion(task_id=task.id, position=i, text=text))
    return task


def prompts_needing_rankings(session: Session, tag: str | None = None, limit: int | None = None) -> list[Prompt]:
    """Prompts (optionally of one import tag) that have no ranking task yet, oldest first."""
    if tag is not None:
        check_name(tag, "tag")
    if limit is not None:
        _check_whole(limit, "--limit", 0, SQL_BIGINT_MAX)
    ranked = select(Task.prompt_id).where(Task.kind == "ranking")
    q = select(Prompt).where(Prompt.id.not_in(ranked)).order_by(Prompt.id)
    if tag is not None:
        q = q.where(Prompt.tag == tag)
    if limit:
        q = q.limit(limit)
    return list(session.scalars(q))


# ---------------------------------------------------------------------------- assignment
def plan_assignments(
    tasks: Sequence[int],
    labelers: Sequence[str],
    load: Mapping[str, int],
    *,
    overlap: int = 1,
    overlap_share: float = 1.0,
    seed: int = 0,
) -> list[tuple[int, str]]:
    """Give each task to one labeler, or to ``overlap`` distinct labelers for a share of the tasks.

    Overlapping tasks are how inter-labeler agreement is measured (InstructGPT §3.4). Each task goes to
    the least-loaded labelers (random tie-break, seeded), so work stays balanced.
    """
    check_plan(len(labelers), overlap, overlap_share)
    rng = random.Random(seed)
    counts = {name: load.get(name, 0) for name in labelers}
    plan: list[tuple[int, str]] = []
    for task in tasks:
        copies = overlap if rng.random() < overlap_share else 1
        order = sorted(labelers, key=lambda n: (counts[n], rng.random()))
        for name in order[:copies]:
            plan.append((task, name))
            counts[name] += 1
    return plan


def _check_whole(value: object, what: str, least: int | None = None, most: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InstructRLError(f"{what} {value!r}: must be a whole number")
    if least is not None and most is not None and not least <= value <= most:
        raise InstructRLError(f"{what} {value}: must be between {least} and {most}")


def check_plan(n_labelers: int, overlap: int, overlap_share: float) -> None:
    if not n_labelers:
        raise InstructRLError("no labelers to assign to (create some with 'instructrl label create-labeler')")
    if overlap < 1 or overlap > n_labelers:
        raise InstructRLError(f"--overlap {overlap}: must be between 1 and the number of labelers ({n_labelers})")
    if not 0.0 <= overlap_share <= 1.0:
        raise InstructRLError(f"--overlap-share {overlap_share}: must be between 0 and 1")


def active_labelers(session: Session, names: Sequence[str] | None) -> list[Labeler]:
    """The named labelers (each must exist and be active), or every active labeler."""
    if names:
        chosen = [labeler_by_name(session, n) for n in names]
        inactive = [x.name for x in chosen if not x.active]
        if inactive:
            raise InstructRLError(f"labeler(s) {', '.join(inactive)} are deactivated")
        return chosen
    return list(
        session.scalars(
            select(Labeler).where(Labeler.role == "labeler", Labeler.active.is_(True)).order_by(Labeler.name)
        )
    )


def pending_load(session: Session) -> dict[str, int]:
    """{labeler name: pending assignments}: how busy each labeler is."""
    return dict(
        session.execute(
            select(Labeler.name, func.count(Assignment.id))
            .join(Assignment)
            .where(Assignment.status == PENDING)
            .group_by(Labeler.name)
        ).all()
    )


def assign(
    session: Session,
    *,
    kind: str | None = None,
    labelers: Sequence[str] | None = None,
    overlap: int = 1,
    overlap_share: float = 1.0,
    limit: int | None = None,
    seed: int = 0,
) -> int:
    """Assign tasks nobody holds yet; returns the number of assignments made."""
    if kind is not None and kind not in KINDS:
        raise InstructRLError(f"--kind {kind!r}: expected one of {', '.join(KINDS)}")
    _check_whole(overlap, "--overlap")
    _check_whole(seed, "--seed")
    if limit is not None:
        _check_whole(limit, "--limit", 0, SQL_BIGINT_MAX)
    if (
        isinstance(overlap_share, bool)
        or not isinstance(overlap_share, int | float)
        or not math.isfinite(overlap_share)
    ):
        raise InstructRLError(f"--overlap-share {overlap_share!r}: must be a number between 0 and 1")
    chosen = active_labelers(session, labelers)
    check_plan(len(chosen), overlap, overlap_share)
    held = select(Assignment.task_id)
    q = select(Task.id).where(Task.id.not_in(held)).order_by(Task.id)
    if kind:
        q = q.where(Task.kind == kind)
    if limit:
        q = q.limit(limit)
    task_ids = list(session.scalars(q))
    if not task_ids:
        return 0
    ids = {x.name: x.id for x in chosen}
    load = pending_load(session)
    plan = plan_assignments(task_ids, list(ids), load, overlap=overlap, overlap_share=overlap_share, seed=seed)
    now = utcnow()
    session.add_all(Assignment(task_id=t, labeler_id=ids[n], status=PENDING, assigned_at=now) for t, n in plan)
    return len(plan)


# ---------------------------------------------------------------------------- a labeler's work
def assignments_of(session: Session, labeler: Labeler, status: str | None = None) -> list[Assignment]:
    q = (
        select(Assignment)
        .options(selectinload(Assignment.task).selectinload(Task.prompt))
        .where(Assignment.labeler_id == labeler.id)
        .order_by(Assignment.id)
    )
    if status:
        if status not in (PENDING, SUBMITTED):
            raise InstructRLError(f"status {status[:40]!r}: expected {PENDING} or {SUBMITTED}")
        q = q.where(Assignment.status == status)
    return list(session.scalars(q))


def own_assignment(session: Session, labeler: Labeler, assignment_id: int) -> Assignment:
    """The labeler's own assignment; someone else's looks exactly like a missing one."""
    if isinstance(assignment_id, bool) or not isinstance(assignment_id, int) or not 1 <= assignment_id <= ID_MAX:
        raise NotFound(f"assignment {str(assignment_id)[:40]} not found (ids are whole numbers 1..{ID_MAX})")
    a = session.scalar(
        select(Assignment)
        .options(
            selectinload(Assignment.task).selectinload(Task.prompt),
            selectinload(Assignment.task).selectinload(Task.completions),
            selectinload(Assignment.demonstration),
            selectinload(Assignment.ratings),
        )
        .where(Assignment.id == assignment_id, Assignment.labeler_id == labeler.id)
    )
    if a is None:
        raise NotFound(f"assignment {assignment_id} not found")
    return a


def next_pending(session: Session, labeler: Labeler) -> Assignment | None:
    return session.scalar(
        select(Assignment)
        .where(Assignment.labeler_id == labeler.id, Assignment.status == PENDING)
        .order_by(Assignment.id)
        .limit(1)
    )


def _claim(session: Session, assignment: Assignment) -> None:
    """Mark the assignment submitted, exactly once.

    The conditional UPDATE is the guard against double submits: of two concurrent submissions, the
    second one's UPDATE waits for the first to commit and then matches no row (PostgreSQL), or waits for
    the write lock and sees the new status (SQLite, BEGIN IMMEDIATE).
    """
    res = session.execute(
        update(Assignment)
        .where(Assignment.id == assignment.id, Assignment.status == PENDING)
        .values(status=SUBMITTED, submitted_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    if res.rowcount != 1:
        raise AlreadySubmitted(f"assignment {assignment.id} was already submitted; the first submission is kept")


def submit_demonstration(session: Session, labeler: Labeler, assignment_id: int, text: str) -> Assignment:
    a = own_assignment(session, labeler, assignment_id)
    if a.task.kind != "demonstration":
        raise L.LabelError(f"assignment {assignment_id} is a {a.task.kind} task, not a demonstration")
    if not isinstance(text, str) or not text.strip():
        raise L.LabelError("demonstration: write a response before submitting")
    try:
        check_text(text, "demonstration")
    except InstructRLError as e:
        raise L.LabelError(str(e)) from None
    _claim(session, a)
    session.add(Demonstration(assignment_id=a.id, text=text.replace("\r\n", "\n"), created_at=utcnow()))
    return a


@dataclass
class OutputLabel:
    likert: Any
    flags: Sequence[str]
    rank: Any


def submit_ranking(
    session: Session, labeler: Labeler, assignment_id: int, labels: Mapping[int, OutputLabel]
) -> Assignment:
    """Store a Likert score, flags and rank for every output of the task (InstructGPT §3.4, App. B)."""
    a = own_assignment(session, labeler, assignment_id)
    if a.task.kind != "ranking":
        raise L.LabelError(f"assignment {assignment_id} is a {a.task.kind} task, not a ranking")
    comps = a.task.completions
    ids = [c.id for c in comps]
    ranks = L.ranking_from_mapping({cid: lab.rank for cid, lab in labels.items() if lab.rank not in (None, "")}, ids)
    rows = []
    for c, rank in zip(comps, ranks):
        where = f"output {chr(65 + c.position)}"
        lab = labels[c.id]  # present: ranking_from_mapping checked every output has an entry
        rows.append(
            Rating(
                assignment_id=a.id,
                completion_id=c.id,
                likert=L.check_likert(lab.likert, where),
                flags=L.check_flags(lab.flags, where),
                rank=rank,
            )
        )
    _claim(session, a)
    session.add_all(rows)
    return a


# ---------------------------------------------------------------------------- blind comparisons (evaluation)
CHOICES = (*SIDES, "tie")


@dataclass
class PairToCompare:
    """One comparison an evaluation asks for; which side each response is shown on is drawn at random.

    For a model comparison ``first`` is the evaluated model's response and ``second`` the baseline's. For
    an attention check (``model`` None) ``first`` is the response a careful labeler prefers, or, with
    ``tie``, one of two equally good responses.
    """

    prompt_index: int
    prompt: str
    first: str
    second: str
    model: str | None = None
    baseline: str | None = None
    tie: bool = False


@dataclass
class QueueResult:
    comparisons: int = 0
    attention_checks: int = 0
    assignments: int = 0
    labelers: list[str] | None = None


def queue_comparisons(
    session: Session,
    pairs: Sequence[PairToCompare],
    *,
    batch: str,
    labelers: Sequence[str] | None = None,
    per_item: int = 1,
    seed: int = 0,
) -> QueueResult:
    """Queue blind comparison tasks for evaluation ``batch`` and assign them.

    Sides are drawn per item (seeded), the model names stay in ``ComparisonItem`` where labelers never see
    them, each model comparison goes to ``per_item`` distinct labelers (the least loaded) and each attention
    check to every labeler. The items are queued in a shuffled order, so checks sit among the real work.
    """
    check_name(batch, "evaluation batch")
    _check_whole(per_item, "labelers per item")
    _check_whole(seed, "--seed")
    if session.scalar(select(func.count(ComparisonItem.id)).where(ComparisonItem.batch == batch)):
        raise InstructRLError(f"evaluation batch {batch!r} is already queued in this database")
    chosen = active_labelers(session, labelers)
    check_plan(len(chosen), per_item, 1.0)
    rng = random.Random(seed)
    order = list(pairs)
    rng.shuffle(order)
    prompts: dict[tuple[bool, int], Prompt] = {}
    result = QueueResult(labelers=[x.name for x in chosen])
    model_tasks, check_tasks = [], []
    for pair in order:
        for text in (pair.prompt, pair.first, pair.second):
            check_text(text, "comparison text")
        is_check = pair.model is None
        key = (is_check, pair.prompt_index)
        if key not in prompts:
            prompts[key] = Prompt(text=pair.prompt, tag=batch, category=None, created_at=utcnow())
            session.add(prompts[key])
            session.flush()
        task = Task(kind="comparison", prompt_id=prompts[key].id, source=f"eval:{batch}", created_at=utcnow())
        session.add(task)
        session.flush()
        position = rng.randrange(2)  # the side the first response is shown on
        texts = [pair.first, pair.second] if position == 0 else [pair.second, pair.first]
        session.add_all(Completion(task_id=task.id, position=i, text=t) for i, t in enumerate(texts))
        answer = ("tie" if pair.tie else SIDES[position]) if is_check else None
        session.add(
            ComparisonItem(
                task_id=task.id,
                batch=batch,
                prompt_index=pair.prompt_index,
                model=pair.model,
                baseline=pair.baseline,
                model_position=position,
                check_answer=answer,
            )
        )
        (check_tasks if is_check else model_tasks).append(task.id)
    result.comparisons, result.attention_checks = len(model_tasks), len(check_tasks)
    ids = {x.name: x.id for x in chosen}
    load = pending_load(session)
    plan = plan_assignments(model_tasks, list(ids), load, overlap=per_item, seed=seed)
    plan += [(t, name) for t in check_tasks for name in ids]
    plan.sort(key=lambda p: p[0])  # task order (shuffled above), so checks are spread through each queue
    now = utcnow()
    session.add_all(Assignment(task_id=t, labeler_id=ids[n], status=PENDING, assigned_at=now) for t, n in plan)
    result.assignments = len(plan)
    return result


def submit_comparison(
    session: Session, labeler: Labeler, assignment_id: int, choice: object, labels: Mapping[int, OutputLabel]
) -> Assignment:
    """Store which side is better (or a tie) with a Likert score and flags for each side.

    Kept as a two-output ranking (the preferred side rank 1, a tie both rank 1), so every label of a
    response lives in one table.
    """
    a = own_assignment(session, labeler, assignment_id)
    if a.task.kind != "comparison":
        raise L.LabelError(f"assignment {assignment_id} is a {a.task.kind} task, not a comparison")
    if choice not in CHOICES:
        raise L.LabelError("choose which response is better: left, right, or tie")
    ranks = {"left": (1, 2), "right": (2, 1), "tie": (1, 1)}[choice]  # type: ignore[index]
    rows = []
    for c in a.task.completions:
        where = f"{SIDES[c.position]} response"
        lab = labels.get(c.id)
        if lab is None:
            raise L.LabelError(f"{where}: choose a Likert score ({L.LIKERT_MIN}-{L.LIKERT_MAX})")
        rows.append(
            Rating(
                assignment_id=a.id,
                completion_id=c.id,
                likert=L.check_likert(lab.likert, where),
                flags=L.check_flags(lab.flags, where),
                rank=ranks[c.position],
            )
        )
    _claim(session, a)
    session.add_all(rows)
    return a


def comparison_choice(ranks: Sequence[int]) -> str:
    """left / right / tie from the stored ranks (left first)."""
    return "tie" if ranks[0] == ranks[1] else SIDES[0] if ranks[0] < ranks[1] else SIDES[1]


def comparison_judgments(session: Session, batch: str) -> list[dict[str, Any]]:
    """Every assignment of evaluation ``batch``: what it compared and, once submitted, the labeler's
    choice, Likert scores and flags (each as [left, right]). Raises when nothing was queued under it."""
    check_name(batch, "evaluation batch")
    q = (
        select(Assignment, ComparisonItem)
        .join(ComparisonItem, ComparisonItem.task_id == Assignment.task_id)
        .options(selectinload(Assignment.ratings), selectinload(Assignment.labeler))
        .where(ComparisonItem.batch == batch)
        .order_by(Assignment.task_id, Assignment.id)
    )
    out = []
    positions = dict(
        session.execute(
            select(Completion.id, Completion.position)
            .join(ComparisonItem, ComparisonItem.task_id == Completion.task_id)
            .where(ComparisonItem.batch == batch)
        ).all()
    )
    for a, item in session.execute(q):
        row: dict[str, Any] = {
            "task_id": a.task_id,
            "prompt_index": item.prompt_index,
            "model": item.model,
            "baseline": item.baseline,
            "model_position": item.model_position,
            "check_answer": item.check_answer,
            "labeler": a.labeler.name,
            "status": a.status,
            "choice": None,
            "likert": None,
            "flags": None,
        }
        if a.status == SUBMITTED and len(a.ratings) == 2:
            by_side = sorted(a.ratings, key=lambda r: positions[r.completion_id])
            row["choice"] = comparison_choice([r.rank for r in by_side])
            row["likert"] = [r.likert for r in by_side]
            row["flags"] = [list(r.flags) for r in by_side]
        out.append(row)
    if not out:
        raise InstructRLError(f"no comparisons were queued under evaluation batch {batch!r} in this database")
    return out


# ---------------------------------------------------------------------------- progress, agreement
def progress(session: Session) -> dict[str, Any]:
    """Counts per task kind and per labeler."""
    kinds = {}
    for kind in KINDS:
        tasks = session.scalar(select(func.count(Task.id)).where(Task.kind == kind)) or 0
        unassigned = (
            session.scalar(
                select(func.count(Task.id)).where(Task.kind == kind, Task.id.not_in(select(Assignment.task_id)))
            )
            or 0
        )
        by_status = dict(
            session.execute(
                select(Assignment.status, func.count(Assignment.id))
                .join(Task)
                .where(Task.kind == kind)
                .group_by(Assignment.status)
            ).all()
        )
        kinds[kind] = {
            "tasks": tasks,
            "unassigned": unassigned,
            "pending": by_status.get(PENDING, 0),
            "submitted": by_status.get(SUBMITTED, 0),
        }
    rows = session.execute(
        select(Labeler.name, Labeler.role, Labeler.active, Task.kind, Assignment.status, func.count(Assignment.id))
        .select_from(Labeler)
        .outerjoin(Assignment)
        .outerjoin(Task)
        .group_by(Labeler.name, Labeler.role, Labeler.active, Task.kind, Assignment.status)
        .order_by(Labeler.name)
    ).all()
    people: dict[str, dict[str, Any]] = {}
    for name, role, active, kind, status, n in rows:
        person = people.setdefault(
            name,
            {
                "labeler": name,
                "role": role,
                "active": active,
                **{f"{k}_{s}": 0 for k in KINDS for s in (PENDING, SUBMITTED)},
            },
        )
        if kind and status:
            person[f"{kind}_{status}"] = n
    return {"tasks": kinds, "labelers": list(people.values())}


def ranking_table(session: Session) -> dict[int, dict[str, list[int]]]:
    """{task_id: {labeler: ranks in output order}} for every submitted ranking."""
    rows = session.execute(
        select(Assignment.task_id, Labeler.name, Completion.position, Rating.rank)
        .join(Labeler, Assignment.labeler_id == Labeler.id)
        .join(Rating, Rating.assignment_id == Assignment.id)
        .join(Completion, Rating.completion_id == Completion.id)
        .join(Task, Assignment.task_id == Task.id)
        .where(Assignment.status == SUBMITTED, Task.kind == "ranking")
        .order_by(Assignment.task_id, Labeler.name, Completion.position)
    ).all()
    table: dict[int, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    for task_id, name, _pos, rank in rows:
        table[task_id][name].append(rank)
    return table


def labeler_agreement(session: Session) -> AgreementReport:
    return agreement(ranking_table(session))


# ---------------------------------------------------------------------------- export
def demonstration_records(session: Session, labeler: str | None = None) -> Iterator[dict[str, Any]]:
    """Demonstrations as the SFT stage reads them: {"prompt", "completion", "labeler", ...}."""
    q = (
        select(
            Demonstration.text,
            Prompt.text,
            Labeler.name,
            Prompt.user,
            Prompt.category,
            Task.id,
            Assignment.submitted_at,
        )
        .join(Assignment, Demonstration.assignment_id == Assignment.id)
        .join(Task, Assignment.task_id == Task.id)
        .join(Prompt, Task.prompt_id == Prompt.id)
        .join(Labeler, Assignment.labeler_id == Labeler.id)
        .order_by(Assignment.submitted_at, Assignment.id)
    )
    if labeler:
        q = q.where(Labeler.name == labeler)
    for completion, prompt, name, user, category, task_id, at in session.execute(q):
        yield {
            "prompt": prompt,
            "completion": completion,
            "labeler": name,
            "user": user,
            "category": category,
            "task_id": task_id,
            "submitted_at": at.isoformat() if at else None,
        }


def ranking_records(session: Session, labeler: str | None = None) -> Iterator[dict[str, Any]]:
    """Rankings as the reward-model stage reads them (rank 1 = best, ties share a rank)."""
    q = (
        select(Assignment)
        .options(
            selectinload(Assignment.task).selectinload(Task.prompt),
            selectinload(Assignment.task).selectinload(Task.completions),
            selectinload(Assignment.ratings),
            selectinload(Assignment.labeler),
        )
        .join(Task)
        .join(Labeler, Assignment.labeler_id == Labeler.id)
        .where(Task.kind == "ranking", Assignment.status == SUBMITTED)
        .order_by(Assignment.submitted_at, Assignment.id)
    )
    if labeler:
        q = q.where(Labeler.name == labeler)
    for a in session.scalars(q):
        by_completion = {r.completion_id: r for r in a.ratings}
        comps = a.task.completions
        ratings = [by_completion[c.id] for c in comps]
        yield {
            "prompt": a.task.prompt.text,
            "completions": [c.text for c in comps],
            "ranks": [r.rank for r in ratings],
            "labeler": a.labeler.name,
            "likert": [r.likert for r in ratings],
            "flags": [list(r.flags) for r in ratings],
        }


EXPORT_FILES = {
    "demonstrations": ("demonstrations.jsonl", demonstration_records),
    "rankings": ("rankings.jsonl", ranking_records),
}


def export(
    session: Session,
    out_dir: str | Path,
    *,
    kinds: Sequence[str] = ("demonstrations", "rankings"),
    by_labeler: bool = False,
    labeler: str | None = None,
) -> dict[str, Path]:
    """Write JSONL files into ``out_dir`` (``out_dir/<labeler>/...`` when split); returns {key: path}.

    Keys are the kind (``"rankings"``) or, split by labeler, ``"<labeler>/<kind>"``. A labeler without
    work of a kind gets no file. Files are written to a temporary name and renamed, so a reader never
    sees half a file.
    """
    unknown = [k for k in kinds if not isinstance(k, str) or k not in EXPORT_FILES]
    if unknown:
        raise InstructRLError(f"export kind {unknown[0]!r}: expected one of {', '.join(EXPORT_FILES)}")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InstructRLError(f"export folder {out} is a file: choose a folder (new or existing) with --out")
    if labeler:
        labeler_by_name(session, labeler)
    if by_labeler:
        names = [labeler] if labeler else list(session.scalars(select(Labeler.name).order_by(Labeler.name)))
        targets = [(f"{name}/", name, safe_subpath(out, check_name(name))) for name in names]
    else:
        targets = [("", labeler, out)]
    written: dict[str, Path] = {}
    for prefix, name, folder in targets:
        for kind in kinds:
            filename, records = EXPORT_FILES[kind]
            path = folder / filename
            try:
                folder.mkdir(parents=True, exist_ok=True)
                if _write_jsonl(path, records(session, name)) or not by_labeler:
                    written[prefix + kind] = path
                else:
                    path.unlink()
            except OSError as e:
                raise InstructRLError(
                    f"cannot write the export {path}: {e.strerror or e}; choose a writable folder with --out"
                ) from None
    return written


def _write_jsonl(path: Path, records: Iterator[dict[str, Any]]) -> int:
    tmp = path.with_name(f".{path.name}.tmp")
    n = 0
    with tmp.open("w", encoding="utf-8") as fh:
        for rec in records:
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
            n += 1
    os.replace(tmp, path)
    return n
