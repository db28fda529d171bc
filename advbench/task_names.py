"""The tasks a victim model can serve, spelled once.

Every registry entry (attack, model, data set) says which of these it serves, so one registry per idea holds
every task's entries and ``advbench list`` groups them by task.
"""

from __future__ import annotations

CLASSIFICATION = "classification"
DETECTION = "detection"
SOD = "salient-object detection"
MULTITASK = "multi-task dense prediction"

#: Every task, in the order listings show them.
TASKS = (CLASSIFICATION, DETECTION, SOD, MULTITASK)
