"""Kafka plumbing: client arguments from settings, topic creation, the embedded broker."""
