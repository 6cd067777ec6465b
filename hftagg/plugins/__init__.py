"""Plugin discovery (built-ins, entry points, plugin directories) and the registries they fill."""

from hftagg.plugins.manager import PluginHost, PluginRecord, load_plugins

__all__ = ["PluginHost", "PluginRecord", "load_plugins"]
