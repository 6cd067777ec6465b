"""Replaying the store: the ``store_replay`` source (``stage``), its k-way merge by
``ts_event`` (``merge``) and the filtered reading of one stored topic (``streams``)."""
