"""Knowledge sources: turn teachers into training targets."""

from .base import KnowledgeSource
from .cache import offline_knowledge

__all__ = ["KnowledgeSource", "offline_knowledge"]
