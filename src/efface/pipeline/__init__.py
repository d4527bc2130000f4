"""Orchestration: one file (``core``), a planned batch on this machine (``local``)."""

from efface.pipeline.core import FileJob, Worker, anonymize_bytes, anonymize_file
from efface.pipeline.jobs import Leftover, Plan, PlanItem, plan_jobs

__all__ = ["FileJob", "Leftover", "Plan", "PlanItem", "Worker", "anonymize_bytes", "anonymize_file", "plan_jobs"]
