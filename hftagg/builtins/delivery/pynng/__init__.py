"""Delivery over pynng: the publisher stage (``publisher``) and the pynng transport (``transport``)."""
