"""The test settings of a project with ``USE_TZ = False``: naive datetimes in ``TIME_ZONE``.

A zone far from UTC (with DST) makes a naive value read as UTC, or an aware one stored as
local time, show up as an hours-long error. Run with ``pytest --ds=tests.settings_naive``.
"""

from tests.settings import *  # noqa: F403

USE_TZ = False
TIME_ZONE = "America/New_York"
