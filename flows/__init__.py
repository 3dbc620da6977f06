"""Prefect flows and the ``depthmine`` CLI: thin orchestration over :mod:`pipeline` and :mod:`training`."""
