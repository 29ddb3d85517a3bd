"""Workflows: short compositions of teachers, knowledge sources, schedules and students."""
