"""Typed stage parameters: frozen models that reject unknown fields, with bounds and defaults.

Each field says whether it can change on a running pipeline (``live``: applied by the stage's
``reconfigure``) or needs the stage rebuilt (``restart``)::

    class EmaParams(Params):
        window: int = live(20, ge=1, description="EMA span in records")
        seed: Literal["first", "sma"] = restart("first", description="warm-up convention")
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["Params", "live", "restart"]


def live(default: Any = ..., **kwargs: Any) -> Any:
    """A parameter that a running stage applies in place through ``reconfigure``."""
    return Field(default, json_schema_extra={"live": True}, **kwargs)


def restart(default: Any = ..., **kwargs: Any) -> Any:
    """A parameter whose change rebuilds the stage (state carried by snapshot/restore)."""
    return Field(default, json_schema_extra={"live": False}, **kwargs)


class Params(BaseModel):
    """Base of every stage's parameter model (and of the config sections): frozen, strict
    types, unknown keys rejected, NaN and infinities refused as "should be a finite number"
    (TOML has ``nan`` and ``inf``; no parameter means them, and a bound such as ``le=3600``
    would otherwise report NaN as "should be <= 3600")."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, allow_inf_nan=False)

    @classmethod
    def is_live(cls, name: str) -> bool:
        """Whether parameter ``name`` can change without rebuilding the stage (default: no)."""
        extra = cls.model_fields[name].json_schema_extra
        return bool(isinstance(extra, dict) and extra.get("live"))

    @classmethod
    def describe(cls) -> list[dict[str, Any]]:
        """One dict per parameter: name, type, default, live, description (for help output)."""
        out = []
        for name, info in cls.model_fields.items():
            out.append(
                {
                    "name": name,
                    "type": getattr(info.annotation, "__name__", str(info.annotation)),
                    "default": None if info.is_required() else info.default,
                    "live": cls.is_live(name),
                    "description": info.description or "",
                }
            )
        return out

    def changed_fields(self, other: Params) -> list[str]:
        """Names of the fields whose values differ between ``self`` and ``other``."""
        return [n for n in type(self).model_fields if getattr(self, n) != getattr(other, n)]
