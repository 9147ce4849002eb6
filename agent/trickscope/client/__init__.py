"""Read runs back from a trickscope server: metadata, history as DataFrames, health findings.

```python
import trickscope

api = trickscope.Api()  # TRICKSCOPE_URL / TRICKSCOPE_TOKEN, else http://127.0.0.1:8000
runs = api.runs(project="digits", filters={"metric.loss/train": "<0.5"}, sort="-created_at")
table = runs.to_frame()  # one row per run: config.* and latest.* columns
history = runs[0].history(["loss/train", "lr/group0"])  # every point, indexed by step
for finding in runs[0].findings():
    print(finding.severity, finding.title)
```

Standard library HTTP only: no torch, no server-side packages.
"""

from trickscope.client._findings import Finding
from trickscope.client._http import ApiError, ServerUnreachable
from trickscope.client._records import RunList, RunRecord
from trickscope.client._series import SeriesSummary
from trickscope.client.api import Api

__all__ = [
    "Api",
    "ApiError",
    "Finding",
    "RunList",
    "RunRecord",
    "SeriesSummary",
    "ServerUnreachable",
]
