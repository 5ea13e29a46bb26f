"""The database tables (SQLAlchemy 2 ORM). The schema itself is created by the Alembic migrations.

A *task* is one unit of labeling work on one prompt: a demonstration to write, K outputs to rate
and rank, or two responses to compare blind (an evaluation; ``ComparisonItem`` records which model
wrote which side, never shown to labelers). An *assignment* gives a task to one labeler; a task given to several labelers is how
inter-labeler agreement is measured (InstructGPT §3.4). A labeler's submitted work hangs off the
assignment: one ``Demonstration`` row, or one ``Rating`` row per output (a comparison is a ranking of
two outputs: the preferred side has rank 1, a tie gives both rank 1).
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import JSON, Boolean, DateTime, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

ROLES = ("labeler", "admin")
KINDS = ("demonstration", "ranking", "comparison")
SIDES = ("left", "right")  # a comparison's two positions; an attention check's answer may also be "tie"
PENDING, SUBMITTED = "pending", "submitted"


def utcnow() -> datetime:
    """Naive UTC (stored the same way by SQLite and PostgreSQL)."""
    return datetime.now(UTC).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass


class Labeler(Base):
    __tablename__ = "labelers"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16), default="labeler")
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)  # sha256 of the access token
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


class WebSession(Base):
    """A signed-in browser: the cookie holds a random key; only its hash is stored."""

    __tablename__ = "web_sessions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    labeler_id: Mapped[int] = mapped_column(ForeignKey("labelers.id", ondelete="CASCADE"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime)
    labeler: Mapped[Labeler] = relationship()


class Prompt(Base):
    __tablename__ = "prompts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    text: Mapped[str] = mapped_column(Text)
    user: Mapped[str | None] = mapped_column(String(128), nullable=True)  # who wrote it (splits by user, §3.2)
    category: Mapped[str | None] = mapped_column(String(64), nullable=True)  # use case (Table 1)
    tag: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)  # import batch
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Task(Base):
    __tablename__ = "tasks"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), index=True)
    prompt_id: Mapped[int] = mapped_column(ForeignKey("prompts.id", ondelete="CASCADE"), index=True)
    source: Mapped[str | None] = mapped_column(String(512), nullable=True)  # checkpoint or file of the outputs
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    prompt: Mapped[Prompt] = relationship()
    completions: Mapped[list[Completion]] = relationship(order_by="Completion.position")


class Completion(Base):
    __tablename__ = "completions"
    __table_args__ = (UniqueConstraint("task_id", "position"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(Text)


class Assignment(Base):
    __tablename__ = "assignments"
    __table_args__ = (
        UniqueConstraint("task_id", "labeler_id"),
        Index("ix_assignments_labeler_status", "labeler_id", "status"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"), index=True)
    labeler_id: Mapped[int] = mapped_column(ForeignKey("labelers.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(16), default=PENDING)
    assigned_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    submitted_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    task: Mapped[Task] = relationship()
    labeler: Mapped[Labeler] = relationship()
    demonstration: Mapped[Demonstration | None] = relationship(uselist=False)
    ratings: Mapped[list[Rating]] = relationship()


class Demonstration(Base):
    __tablename__ = "demonstrations"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    assignment_id: Mapped[int] = mapped_column(ForeignKey("assignments.id", ondelete="CASCADE"), unique=True)
    text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Rating(Base):
    """One output as judged by one labeler: Likert score, Table 3 flags, and its rank (1 = best)."""

    __tablename__ = "ratings"
    __table_args__ = (UniqueConstraint("assignment_id", "completion_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    assignment_id: Mapped[int] = mapped_column(ForeignKey("assignments.id", ondelete="CASCADE"), index=True)
    completion_id: Mapped[int] = mapped_column(ForeignKey("completions.id", ondelete="CASCADE"))
    likert: Mapped[int] = mapped_column(Integer)
    flags: Mapped[list] = mapped_column(JSON, default=list)
    rank: Mapped[int] = mapped_column(Integer)


class ComparisonItem(Base):
    """What a comparison task compares, for the evaluation that queued it (hidden from labelers).

    ``model_position`` is the side (0 = left, 1 = right) holding the evaluated model's response; the
    other side holds the baseline's. An attention check has no model: ``check_answer`` is the side
    (or ``"tie"``) a careful labeler chooses.
    """

    __tablename__ = "comparison_items"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"), unique=True)
    batch: Mapped[str] = mapped_column(String(64), index=True)  # the evaluation it belongs to
    prompt_index: Mapped[int] = mapped_column(Integer)  # the prompt's line in the evaluation's prompt file
    model: Mapped[str | None] = mapped_column(String(128), nullable=True)
    baseline: Mapped[str | None] = mapped_column(String(128), nullable=True)
    model_position: Mapped[int] = mapped_column(Integer)
    check_answer: Mapped[str | None] = mapped_column(String(8), nullable=True)
    task: Mapped[Task] = relationship()
