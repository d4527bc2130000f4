"""Orchestration: one file (``core``), a planned batch on this machine (``local``)."""

from efface.pipeline.core import FileJob, Worker, anonymize_bytes, anonymize_file
from efface.pipeline.jobs import Plan, plan_jobs

__all__ = ["FileJob", "Plan", "Worker", "anonymize_bytes", "anonymize_file", "plan_jobs"]
