"""Search attributes: how releases are found in Temporal visibility and the UI.

Registered by ``prodline dev`` on the embedded server; on a cluster of your own,
``prodline setup`` registers them once per namespace (see README).
"""

from temporalio.common import SearchAttributeKey

APPLICATION = SearchAttributeKey.for_keyword("ProdlineApplication")
SERVICE = SearchAttributeKey.for_keyword("ProdlineService")
VERSION = SearchAttributeKey.for_keyword("ProdlineVersion")
ENVIRONMENT = SearchAttributeKey.for_keyword("ProdlineEnvironment")
STATE = SearchAttributeKey.for_keyword("ProdlineState")

ALL = [APPLICATION, SERVICE, VERSION, ENVIRONMENT, STATE]
