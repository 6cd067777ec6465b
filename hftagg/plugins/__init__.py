"""Plugin discovery (built-ins, entry points, plugin directories) and the registries they fill."""

from hftagg.plugins.kinds import KernelWarmup
from hftagg.plugins.manager import PluginHost, PluginRecord, load_plugins

__all__ = ["KernelWarmup", "PluginHost", "PluginRecord", "load_plugins"]
