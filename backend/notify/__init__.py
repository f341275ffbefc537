"""Alert notifications: ``python -m backend notify``, one process that turns the alert lists the replicas publish
into e-mail, webhook and ntfy messages, once per transition, at least once, durably (docs/operations.md,
"Notifications").

Modules, from the sans-IO core outwards: ``transitions`` (alert lists → opened/resolved events), ``routing``
(users' preferences and quiet hours → deliveries), ``render`` (pt-BR subject and body), ``budget`` (projected bill
against a user's budget), ``outbox`` (the SQLite state and retry schedule), ``egress`` (where a user's URL may
lead), ``channels`` (the senders), ``preferences`` and ``deliveries`` (what users set and see, in the accounts
database), ``notifier`` (the process).
"""
