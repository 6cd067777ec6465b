"""``KernelStage``: the base class of every stage whose per-record work is one kernel object.

A kernel (``hftagg.kernels`` and the feature packages) owns per-instrument state and does the
per-record work in compiled code; the stage adapts it to the runtime. Every such stage has the
same lifecycle, written once here:

==================  ========================================================================
``__init__``        parameters validated, then ``self.kernel = make_kernel(params)``: the
                    kernel exists from construction on, so nothing below has to ask whether
                    it does (a stage may be restored before it is opened)
``restore(state)``  (a rebuild or plugin reload hands over the predecessor's ``snapshot()``)
                    ``kernel.restore(state)``, then ``configure_kernel(kernel, params)``: the
                    state may carry the predecessor's live parameters; this stage's win
``open(ctx)``       ``open_buffers(ctx)``: per-batch output buffers for ``ctx.max_batch``
``process(batch)``  the subclass's: one kernel call per batch
``reconfigure(p)``  ``params = p``, then ``configure_kernel(kernel, p)``, from the next batch
``snapshot()``      ``kernel.snapshot()``
``close()``         nothing to release (override to add)
==================  ========================================================================

A subclass implements ``make_kernel`` and ``process``, and ``configure_kernel`` when it has live
parameters.
"""

from __future__ import annotations

from typing import Any

from hftagg.stages.base import Stage, StageContext
from hftagg.stages.params import Params

__all__ = ["KernelStage"]


class KernelStage(Stage):
    """A stage backed by one kernel object: see the module docstring for the lifecycle."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """``Stage``'s arguments (params or keyword parameters, stage_id, topics)."""
        super().__init__(*args, **kwargs)
        self.kernel = self.make_kernel(self.params)

    # ----------------------------------------------------------------- what subclasses provide

    def make_kernel(self, params: Params) -> Any:
        """A new kernel for these parameters (called once, from ``__init__``)."""
        raise NotImplementedError(f"{type(self).__name__} must implement make_kernel()")

    def configure_kernel(self, kernel: Any, params: Params) -> None:
        """Apply ``params``' live parameters to ``kernel``. Default: there are none."""

    def open_buffers(self, ctx: StageContext) -> None:
        """Allocate per-batch buffers for batches of up to ``ctx.max_batch``. Default: none."""

    # ----------------------------------------------------------------- the lifecycle

    def open(self, ctx: StageContext) -> None:
        self.open_buffers(ctx)

    def reconfigure(self, params: Params) -> None:
        self.params = params
        self.configure_kernel(self.kernel, params)

    def snapshot(self) -> Any:
        return self.kernel.snapshot()

    def restore(self, state: Any) -> None:
        self.kernel.restore(state)
        self.configure_kernel(self.kernel, self.params)
