"""Source connectors behind one small protocol (see base.Connector).

Connectors know nothing of the workspace; sync/ joins the two.
"""

from esg_workbench.connectors.registry import connector_types, create_connector

__all__ = ["connector_types", "create_connector"]
