"""analytics capability: usage and cost over time."""

from chittyos.analytics.usage import (
    Granularity,
    ModelUsage,
    PeriodUsage,
    TokenTotals,
    UsageAnalytics,
    UsageReport,
)

__all__ = ["Granularity", "ModelUsage", "PeriodUsage", "TokenTotals", "UsageAnalytics", "UsageReport"]
