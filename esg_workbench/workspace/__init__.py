"""The workspace database: one DuckDB file (default) or a shared PostgreSQL database."""

from esg_workbench.workspace.database import Workspace, default_workspace_path, open_workspace

__all__ = ["Workspace", "default_workspace_path", "open_workspace"]
