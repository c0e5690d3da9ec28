"""ordermail's service: the Kafka consumer that turns each ``OrderCompleted`` event into an
encrypted receipt e-mail and a ``DeliveryOutcome``, grouped by role:

* ``app`` — the ``ordermail`` command, settings, assembling the parts, start-up checks;
* ``kafka`` — the poll loop, offsets, partition handover, redelivery ledger, clients, the
  dead-letter breaker, the outcome publisher;
* ``processing`` — one event's journey (pipeline), consumed records, the error policy, deferral,
  outcome builders, the render pool, and the protocols the pipeline's collaborators follow;
* ``observability`` — tracing, metrics, logs, health probes;
* ``tools`` — developer and operator tools: template preview, sample producing, topic reading.

Dependencies point one way: ``app`` builds the parts and hands them to ``kafka``'s poll loop,
which drives ``processing``; ``processing`` never imports ``kafka`` (its collaborators are
protocols), ``observability`` imports none of them at run time, ``tools`` use ``kafka``'s
clients, and every package may read ``app.settings``. ``schemas``, ``rendering`` and
``delivery`` never import ``consumer``. Importing a subpackage imports none of its modules (the
render workers' fork server must start light), so each package names its modules in
``__all__`` and each module pins its own public names (``tests/unit/test_exported_members.py``).
"""

__all__ = ["app", "kafka", "observability", "processing", "tools"]
