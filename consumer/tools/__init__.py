"""Tools around the service: the template preview for template authors (``preview``), publishing
sample events (``producing``) and reading the topics back (``topic_reader``)."""

__all__ = ["preview", "producing", "topic_reader"]
