"""The application: the ``ordermail`` command line (``cli``), configuration from the environment
(``settings``), building the service's parts from it (``assembly``) and the checks and warnings
at start-up (``startup``)."""

__all__ = ["assembly", "cli", "settings", "startup"]
