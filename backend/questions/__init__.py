"""Questions in Portuguese about the user's own data and the grid.

A deterministic, offline, sans-IO parser (:mod:`backend.questions.parser`) turns a pt-BR question into a typed
:class:`~backend.questions.interpretation.Interpretation`; the answering service
(:mod:`backend.questions.service`) runs it through a registry of handlers — the user's own data through
:class:`backend.analytics.service.AnalyticsService` (:mod:`backend.questions.own_data`), the grid through the
stored ONS data (:mod:`backend.questions.grid`), "o que é …" through the knowledge base
(:mod:`backend.questions.knowledge`) — and returns a :class:`~backend.questions.service.Resposta`.
``docs/perguntas.md`` describes what it understands and its limits.
"""
