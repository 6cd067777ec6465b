"""The bus: rings that carry record batches between stages."""

from hftagg.bus.ring import Policy, Reader, Ring

__all__ = ["Policy", "Reader", "Ring"]
