"""SQLAlchemy 2.0 tables: one row per library file, one per (file, model) vector."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    DateTime,
    Enum,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from memesearch.records import FileState


def utcnow() -> datetime:
    """Timezone-aware now, the only clock the store uses."""
    return datetime.now(UTC)


class Base(DeclarativeBase):
    """Declarative base of every memesearch table."""


class ImageFile(Base):
    """A file of the library as last indexed."""

    __tablename__ = "files"
    # Ids are public (image_id terms, thumbnail URLs): never hand a deleted file's id to another.
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    path: Mapped[str] = mapped_column(String(4096), unique=True)
    size: Mapped[int] = mapped_column(BigInteger)
    mtime_ns: Mapped[int] = mapped_column(BigInteger)
    content_hash: Mapped[str | None] = mapped_column(String(64), index=True)
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    format: Mapped[str | None] = mapped_column(String(16))
    state: Mapped[FileState] = mapped_column(
        Enum(
            FileState, native_enum=False, length=16, values_callable=lambda e: [m.value for m in e]
        )
    )
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )

    vectors: Mapped[list[Vector]] = relationship(
        back_populates="file", cascade="all, delete-orphan", passive_deletes=True
    )


class Vector(Base):
    """The embedding of one file by one model: `dim` little-endian values of type `dtype`.

    New rows are float16 (`vectors.STORED_DTYPE`); stores from before migration 0002 held float32.
    """

    __tablename__ = "vectors"
    __table_args__ = (Index("ix_vectors_model_id_file_id", "model_id", "file_id"),)

    file_id: Mapped[int] = mapped_column(
        ForeignKey("files.id", ondelete="CASCADE"), primary_key=True
    )
    model_id: Mapped[str] = mapped_column(String(512), primary_key=True)
    dim: Mapped[int] = mapped_column(Integer)
    dtype: Mapped[str] = mapped_column(String(16), default="float16")
    vector: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    file: Mapped[ImageFile] = relationship(back_populates="vectors")


class StoreMeta(Base):
    """Small key/value facts about the store, e.g. the write generation."""

    __tablename__ = "store_meta"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
