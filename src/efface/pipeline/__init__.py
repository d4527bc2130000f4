"""Orchestration: one file (``core``), the parts built from settings (``build``), a planned batch (``jobs``),
where files run (``pool``, ``ray``), and the audited run that records them (``run``)."""

from efface.pipeline.core import FileJob, Policy, anonymize_bytes, anonymize_file
from efface.pipeline.jobs import Leftover, Plan, PlanItem, plan_jobs

__all__ = ["FileJob", "Leftover", "Plan", "PlanItem", "Policy", "anonymize_bytes", "anonymize_file", "plan_jobs"]
