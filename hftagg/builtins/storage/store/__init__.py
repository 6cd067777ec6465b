"""The embedded segment store: the segment format (``segment``), the ``store`` sink stage
(``stage``), the folder layout (``layout``) and reading back (``reader``: ``hftagg.read``)."""
