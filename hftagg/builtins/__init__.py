"""Built-in plugins: ordinary pluggy plugins, registered through the same hooks as third-party ones.

Grouped by kind: ``sources``, ``core``, ``delivery`` (plus ``records`` for the schema catalog).
"""

BUILTIN_PLUGINS: tuple[str, ...] = (
    "hftagg.builtins.records",
    "hftagg.builtins.sources.simulator",
    "hftagg.builtins.core.ema",
    "hftagg.builtins.delivery.pynng_transport",
    "hftagg.builtins.delivery.publisher",
)
