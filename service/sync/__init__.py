"""Sync: deliver the transactional outbox to the hospital's FHIR server, exactly once in effect.

``outbox`` holds the SQL of the queue, ``worker`` sends what it claims, ``status`` and ``verify`` let an
operator see and check the result. No Flask here; ``service.api.sync`` is the HTTP face.
"""
