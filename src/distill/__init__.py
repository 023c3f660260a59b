"""The distillation toolkit: what is matched (matches, features), when (schedules), and against what
(teacher sources: the live teacher, or its cached outputs)."""
