"""Risk-driven monitoring: the monitoring plan (import_monitoring_plan), the MonitoringOrchestrator's
CP-SAT scheduler of on-site and remote visits grouped into trips, the naive baseline it is measured
against, an independent constraint checker, the visits' API and screens, .ics feeds and letters.

Kept apart from the rest of `sdv` (KRIs, risk, SDV plans, source documents): its models are
imported by `sdv.models` so Django and its migrations see them as the sdv app's."""
