"""ESG Workbench: pull ESG activity data from company systems into auditable KPIs."""

__version__ = "0.1.0"
